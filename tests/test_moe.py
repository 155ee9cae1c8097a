"""The mixture-of-experts models (qwen2moe, qwen3moe) against HF transformers (golden logits in
tests/data/golden_moe, made by tests/data/make_golden_moe.py), on every kernel path; decode, batched
decode and prefill agreeing; bad files refused by name.

Tolerances are relative (max |ours - reference| / max |reference|), as in test_model.py:
- F32 files: 1e-5 with an f32 KV cache, 1e-3 with the default f16 one (measured 3e-7 / 5e-4).
- Q8_0/Q4_0/Q4_K files against transformers run on the dequantized weights: 3e-2 on 95% of the
  tokens and >= 90% top-1 agreement. Unlike a dense model, a few tokens may differ more: our 8-bit
  activation noise can swap two experts whose router scores are nearly tied, which is a discrete
  change (measured: median 1.0e-2 .. 1.5e-2, 1 to 3 of the 80 tokens above 3e-2).
"""

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from qwen_cpu import Model
from qwen_cpu.errors import QwenCpuError

GOLDEN = Path(__file__).parent / "data" / "golden_moe"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
TOKENS = MANIFEST["tokens"]
FILES = MANIFEST["files"]
FLOAT_FILES = [f for f, e in FILES.items() if e["type"] == "F32"]
QUANT_FILES = [f for f, e in FILES.items() if e["type"] != "F32"]


def reference(name: str) -> np.ndarray:
    return np.load(GOLDEN / name.replace(".gguf", ".npz"))["logits"]


def token_errors(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(ours - ref).max(axis=1) / np.abs(ref).max()


@pytest.mark.parametrize("name", FLOAT_FILES)
def test_float_files_match_transformers(isa, name):
    ref = reference(name)
    with Model.load(GOLDEN / name, n_ctx=128, n_threads=2, kv_type="f32") as m:
        assert token_errors(m.logits(TOKENS), ref).max() < 1e-5
    with Model.load(GOLDEN / name, n_ctx=128, n_threads=2) as m:
        assert token_errors(m.logits(TOKENS), ref).max() < 1e-3


@pytest.mark.parametrize("name", QUANT_FILES)
def test_quantized_files_match_transformers_on_dequantized_weights(isa, name):
    ref = reference(name)
    with Model.load(GOLDEN / name, n_ctx=128, n_threads=2) as m:
        ours = m.logits(TOKENS)
    assert np.quantile(token_errors(ours, ref), 0.95) < 3e-2
    assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("name", ["qwen2moe-tiny.f32.gguf", "qwen3moe-tiny.q8_0.gguf", "qwen2moe-h256.q4_0.gguf",
                                  "qwen2moe-h256.q4_k.gguf"])
def test_decode_steps_equal_one_prefill(isa, name):
    """One token at a time (the decode group of its k experts, repacked matrices where the path has
    them) against the whole sequence at once (tokens grouped by expert, stored rows)."""
    with Model.load(GOLDEN / name, n_ctx=128, n_threads=2, kv_type="f32") as m:
        full = m.logits(TOKENS)
        m.reset()
        steps = [m.prefill(TOKENS[:29])] + [m.decode_step(t) for t in TOKENS[29:]]
    ref = full[28:]
    errors = token_errors(np.stack(steps), ref)
    if name.endswith("f32.gguf"):
        assert errors.max() < 1e-5
    else:  # decode kernels quantize activations their own way: as a quantized file against HF
        assert np.quantile(errors, 0.95) < 3e-2


def test_qwen3moe_s_quantized_kv_cache_rotates_by_32():
    """qwen3moe-tiny's head_dim 32 (32 times an odd number, which llama.cpp leaves plain): rows
    rotated by 32-wide Hadamard chunks (csrc/hadamard.h); a q8_0 cache stays within q8_0's error of
    the f16 cache (measured: mean KL 1.4e-4, 98.8% top-1; plain rows 5.4e-4), and decode steps read
    what prefill stored."""
    from qwen_cpu.sampler import log_softmax

    name = "qwen3moe-tiny.f32.gguf"
    with Model.load(GOLDEN / name, n_ctx=128, n_threads=2) as m:
        ref = log_softmax(m.logits(TOKENS))
    with Model.load(GOLDEN / name, n_ctx=128, n_threads=2, kv_type="q8_0") as m:
        assert m.kv_rotation == (32, 32)
        full = m.logits(TOKENS)
        m.reset()
        steps = [m.prefill(TOKENS[:29])] + [m.decode_step(t) for t in TOKENS[29:]]
    ours = log_softmax(full)
    assert (np.exp(ref) * (ref - ours)).sum(-1).mean() < 4e-4
    assert np.mean(ours.argmax(-1) == ref.argmax(-1)) >= 0.9
    assert token_errors(np.stack(steps), full[28:]).max() < 1e-4


def test_batched_decode_gives_each_sequence_its_own_tokens():
    """Several sequences' decode steps in one pass (the experts' rows grouped across them, each row
    computed alone) give the logits each gives by itself."""
    name = "qwen2moe-h256.q4_0.gguf"
    prompts = [TOKENS[:7], TOKENS[10:19], TOKENS[30:35]]
    with Model.load(GOLDEN / name, n_ctx=64, n_threads=2) as m:
        alone = []
        for p in prompts:
            m.reset()
            m.prefill(p[:-1])
            alone.append(m.decode_step(p[-1]))
    with Model.load(GOLDEN / name, n_ctx=64, n_threads=2, n_seq=3) as m:
        net = m._engine._net if hasattr(m, "_engine") else m._net
        for s, p in enumerate(prompts):
            pos = np.arange(len(p) - 1, dtype=np.int32)
            net.forward_batch(np.array(p[:-1], np.int32), pos, np.full(len(pos), s, np.int32), np.array([], np.int64))
        last = np.array([p[-1] for p in prompts], np.int32)
        pos = np.array([len(p) - 1 for p in prompts], np.int32)
        logits, _ = net.forward_batch(last, pos, np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int64))
    assert np.abs(logits - np.stack(alone)).max() == 0


def _add_tensor(w: gguf.GGUFWriter, t) -> None:
    quantized = t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type if quantized else None)


def _copy_with(src: Path, dst: Path, *, drop: str | None = None, set_uint: dict | None = None) -> Path:
    """A copy of a golden file without tensor `drop` or with some uint32 metadata replaced."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = (set_uint or {}).get(key, field.contents())
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            continue
        w.add_key_value(key, value, vtype)
    for t in r.tensors:
        if t.name == drop:
            continue
        _add_tensor(w, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_bad_moe_files_are_refused_by_name(tmp_path):
    src = GOLDEN / "qwen2moe-tiny.q8_0.gguf"
    bad = _copy_with(src, tmp_path / "a.gguf", drop="blk.1.ffn_up_exps.weight")
    with pytest.raises(QwenCpuError, match="blk.1.ffn_up_exps.weight"):
        Model.load(bad, n_ctx=32)
    bad = _copy_with(src, tmp_path / "b.gguf", set_uint={"qwen2moe.expert_used_count": 9})
    with pytest.raises(QwenCpuError, match="expert_used_count 9"):
        Model.load(bad, n_ctx=32)
    bad = _copy_with(src, tmp_path / "c.gguf", set_uint={"qwen2moe.expert_count": 6})
    with pytest.raises(QwenCpuError, match="ffn_gate_inp.weight"):
        Model.load(bad, n_ctx=32)
    bad = _copy_with(src, tmp_path / "d.gguf", drop="blk.0.ffn_gate_inp_shexp.weight")
    with pytest.raises(QwenCpuError, match="blk.0.ffn_gate_inp_shexp.weight"):
        Model.load(bad, n_ctx=32)
    good = _copy_with(src, tmp_path / "e.gguf")  # the copy itself loads and runs as the original
    with Model.load(good, n_ctx=32) as a, Model.load(src, n_ctx=32) as b:
        assert np.array_equal(a.logits(TOKENS[:5]), b.logits(TOKENS[:5]))


def test_expert_weights_norm_key_is_honoured(tmp_path):
    """qwen2moe files route without renormalising (llama.cpp's choice for the architecture); a file
    whose expert_weights_norm key says so renormalises, which changes the logits."""
    src = GOLDEN / "qwen2moe-tiny.f32.gguf"
    r = gguf.GGUFReader(src)
    dst = tmp_path / "norm.gguf"
    w = gguf.GGUFWriter(dst, "qwen2moe")
    for key, field in r.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            w.add_key_value(key, field.contents(), field.types[0])
    w.add_bool("qwen2moe.expert_weights_norm", True)
    for t in r.tensors:
        _add_tensor(w, t)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with Model.load(src, n_ctx=32) as a, Model.load(dst, n_ctx=32) as b:
        assert a.config.expert_weights_norm is False and b.config.expert_weights_norm is True
        assert np.abs(a.logits(TOKENS[:5]) - b.logits(TOKENS[:5])).max() > 1e-2
    shutil.rmtree(tmp_path, ignore_errors=True)
