"""quantize_model on the mixture-of-experts checkpoints (tests/data/golden_moe/*-hf, transformers'
save_pretrained layout: one matrix per expert): the experts stacked into llama.cpp's 3-D tensors,
its metadata keys and its per-tensor types for MoE files.

Compared against: the golden GGUF files (written with gguf-py in llama.cpp's converter layout by
make_golden_moe.py): at F32 every tensor's name, shape, type and bytes, and every expert key; and
transformers' logits through our engine on the converted file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from _checkpoints import write_tokenizer

from qwen_cpu import Model, QwenCpuError
from qwen_cpu.quantize import quantize_model, tensor_type

T = gguf.GGMLQuantizationType
GOLDEN = Path(__file__).parent / "data" / "golden_moe"
TOKENS = json.loads((GOLDEN / "manifest.json").read_text())["tokens"]
ERROR_BOUND = {T.F32: 0.0, T.Q8_0: 0.01, T.Q6_K: 0.02, T.Q5_0: 0.05, T.Q4_0: 0.1, T.Q4_K: 0.08}


def checkpoint(tmp_path: Path, model: str) -> Path:
    folder = tmp_path / model
    shutil.copytree(GOLDEN / f"{model}-hf", folder)
    write_tokenizer(folder)
    return folder


def tensors(path: Path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def values(t) -> np.ndarray:
    shape = tuple(int(d) for d in reversed(t.shape))
    if t.tensor_type == T.F32:
        return np.asarray(t.data, np.float32).reshape(shape)
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)


@pytest.mark.parametrize("model", ["qwen2moe-tiny", "qwen3moe-tiny"])
def test_f32_conversion_is_the_converter_layout_and_runs_as_transformers(tmp_path, model):
    out = tmp_path / "f32.gguf"
    quantize_model(checkpoint(tmp_path, model), out, "f32", progress=False)
    ours, want = tensors(out), tensors(GOLDEN / f"{model}.f32.gguf")
    assert set(ours) == set(want)
    for name, t in want.items():
        o = ours[name]
        assert list(o.shape) == list(t.shape) and o.tensor_type == t.tensor_type, name
        assert np.array_equal(np.asarray(o.data), np.asarray(t.data)), name
    r, g = gguf.GGUFReader(out), gguf.GGUFReader(GOLDEN / f"{model}.f32.gguf")
    arch = model.split("-")[0]
    keys = [k for k in g.fields if ".expert" in k]
    assert keys and all(r.fields[k].contents() == g.fields[k].contents() for k in keys)
    assert not [k for k in r.fields if ".expert" in k and k not in keys]  # norm_topk_prob as the arch's default
    assert r.fields[f"{arch}.expert_count"].contents() == 8
    ref = np.load(GOLDEN / f"{model}.f32.npz")["logits"]
    with Model.load(out, n_ctx=128, kv_type="f32") as m:
        assert np.abs(m.logits(TOKENS) - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_k_m"])
def test_quantized_types_follow_llama_cpp_moe_rules(tmp_path, qtype):
    src = checkpoint(tmp_path, "qwen2moe-tiny")
    out = tmp_path / f"{qtype}.gguf"
    quantize_model(src, out, qtype, progress=False)
    got, ref = tensors(out), tensors(GOLDEN / "qwen2moe-tiny.f32.gguf")
    for name, t in got.items():
        shape = tuple(int(d) for d in reversed(t.shape))
        assert t.tensor_type == tensor_type(name, shape, qtype, 2, True, 8), name
        err = np.sqrt(np.mean((values(t) - values(ref[name])) ** 2) / np.mean(values(ref[name]) ** 2))
        assert err <= ERROR_BOUND[T(t.tensor_type)] + 1e-7, (name, err)
    # llama.cpp's rules, by hand for this geometry (8 experts, rows of 64/32/96, 2 layers)
    assert got["blk.0.ffn_gate_inp.weight"].tensor_type == T.F32  # the router is never quantized
    assert got["blk.1.attn_v.weight"].tensor_type == T.Q8_0 and got["blk.0.attn_k.weight"].tensor_type == T.Q8_0
    low = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_k_m": T.Q5_0}[qtype]  # Q4_K's fallback for rows of 64
    assert got["blk.0.ffn_gate_exps.weight"].tensor_type == low
    assert got["blk.0.ffn_gate_inp_shexp.weight"].tensor_type == low  # a one-row FFN gate: quantized
    assert got["blk.1.ffn_down_exps.weight"].tensor_type == {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_k_m": T.Q8_0}[qtype]
    with Model.load(out, n_ctx=64) as m:  # every type of the file runs (quantized shared-expert gate too)
        assert np.isfinite(m.logits(TOKENS[:8])).all()


def test_q4_k_m_more_bits_for_expert_down_projections():
    # rows of 256: ffn_down_exps / ffn_down_shexp Q6_K in the more-bits layers (0, 3, 6, 7 of 8), Q4_K elsewhere
    for layer, want in ((0, 14), (1, 12), (3, 14), (7, 14)):
        for name in ("ffn_down_exps", "ffn_down_shexp"):
            shape = (60, 2048, 1536) if name == "ffn_down_exps" else (2048, 5632)
            assert tensor_type(f"blk.{layer}.{name}.weight", shape, "q4_k_m", 8, True, 60) == want
    assert tensor_type("blk.0.ffn_gate_exps.weight", (60, 1536, 2048), "q4_k_m", 8, True, 60) == 12
    # Qwen1.5-MoE-A2.7B's experts (1408 = 5.5 x 256): down rows fall back, Q6_K -> Q8_0 and Q4_K -> Q5_0
    assert tensor_type("blk.0.ffn_down_exps.weight", (60, 2048, 1408), "q4_k_m", 24, True, 60) == 8
    assert tensor_type("blk.4.ffn_down_exps.weight", (60, 2048, 1408), "q4_k_m", 24, True, 60) == 6
    assert tensor_type("blk.0.attn_v.weight", (256, 2048), "q4_k_m", 8, True, 60) == 14  # not 8 experts: Q6_K
    assert tensor_type("blk.0.ffn_gate_inp.weight", (60, 2048), "q4_0", 8, True, 60) == 0


def test_bad_moe_checkpoints_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    src = checkpoint(tmp_path, "qwen2moe-tiny")
    w = load_file(src / "model.safetensors")
    del w["model.layers.1.mlp.experts.5.up_proj.weight"]
    save_file(w, src / "model.safetensors")
    with pytest.raises(QwenCpuError, match=r"blk\.1\.ffn_up_exps\.weight: experts \[5\]"):
        quantize_model(src, tmp_path / "a.gguf", "q8_0", progress=False)
    src = checkpoint(tmp_path / "b", "qwen2moe-tiny")
    cfg = json.loads((src / "config.json").read_text())
    cfg["mlp_only_layers"] = [1]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QwenCpuError, match="mlp_only_layers"):
        quantize_model(src, tmp_path / "b.gguf", "q8_0", progress=False)


def test_norm_topk_prob_other_than_the_default_is_written(tmp_path):
    src = checkpoint(tmp_path, "qwen2moe-tiny")
    cfg = json.loads((src / "config.json").read_text())
    cfg["norm_topk_prob"] = True
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "n.gguf"
    quantize_model(src, out, "f32", progress=False)
    assert gguf.GGUFReader(out).fields["qwen2moe.expert_weights_norm"].contents() is True
    with Model.load(out, n_ctx=32) as m:
        assert m.config.expert_weights_norm is True


def test_converted_moe_model_chats_and_info_describes_its_experts(tmp_path):
    from click.testing import CliRunner

    from qwen_cpu import cli

    out = tmp_path / "q8.gguf"
    quantize_model(checkpoint(tmp_path, "qwen3moe-tiny"), out, "q8_0", progress=False)
    with Model.load(out, n_ctx=128) as m:  # the tokenizer and chat template come from the conversion
        r = m.chat([{"role": "user", "content": "the the"}], max_tokens=6, temperature=0)
        assert r["usage"]["completion_tokens"] >= 1 and isinstance(r["choices"][0]["message"]["content"], str)
    r = CliRunner().invoke(cli.main, ["info", str(out)])
    assert r.exit_code == 0, r.output
    assert "architecture:      qwen3moe" in r.output
    assert "experts:           8, 2 per token (weights renormalised: yes), expert FFN 32" in r.output
    # per token: all but 6 of 8 experts' share of the expert tensors (3 x 8 x 32 x 64 per layer, 2 layers)
    total = sum(int(np.prod(t.shape)) for t in gguf.GGUFReader(out).tensors)
    assert f"active parameters: {(total - 2 * 3 * 6 * 32 * 64) / 1e6:.1f} M per token" in r.output
