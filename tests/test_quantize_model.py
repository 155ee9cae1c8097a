"""quantize_model: tiny synthetic HF checkpoints (and GGUFs) -> GGUF, read back with gguf-py.

Compared against: gguf-py's GGUFReader (keys, names, types), gguf.quants.dequantize against the
checkpoint's own values (per-type error bounds below), gguf.quants.quantize (byte-identical tensors
for the legacy types), and hand-written expectations of llama.cpp's recipe for the test geometry.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from _checkpoints import make_checkpoint
from _helpers import rel_rmse

from qwen_cpu import QwenCpuError, _kernels
from qwen_cpu.quantize import QUANT_TYPES, quantize_model, tensor_type
from qwen_cpu.safetensors_io import SafetensorsFile, write_safetensors

T = gguf.GGMLQuantizationType
REPO = Path(__file__).resolve().parent.parent

# relative RMSE bound of a dequantized tensor against the checkpoint (Gaussian weights)
ERROR_BOUND = {T.F32: 0.0, T.F16: 1e-3, T.BF16: 0.0, T.Q8_0: 0.01, T.Q6_K: 0.02, T.Q5_0: 0.05, T.Q5_1: 0.05,
               T.Q5_K: 0.04, T.Q4_0: 0.1, T.Q4_1: 0.1, T.Q4_K: 0.08}
HF_NAMES = {"attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
            "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
            "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
            "ffn_down.weight": "mlp.down_proj.weight", "attn_norm.weight": "input_layernorm.weight",
            "ffn_norm.weight": "post_attention_layernorm.weight", "attn_q.bias": "self_attn.q_proj.bias",
            "attn_k.bias": "self_attn.k_proj.bias", "attn_v.bias": "self_attn.v_proj.bias"}


def hf_name(name: str) -> str:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    _, i, rest = name.split(".", 2)
    return f"model.layers.{i}.{HF_NAMES[rest]}"


def field(r: gguf.GGUFReader, key: str):
    return r.fields[key].contents()


def tensors_of(r: gguf.GGUFReader) -> dict:
    return {t.name: t for t in r.tensors}


def dequant(t) -> np.ndarray:
    """A GGUFReader tensor as float32 in numpy order (rows, n_per_row)."""
    shape = tuple(int(d) for d in reversed(t.shape))
    if t.tensor_type == T.F32:
        return np.asarray(t.data, np.float32).reshape(shape)
    if t.tensor_type == T.F16:
        return np.asarray(t.data).astype(np.float32).reshape(shape)
    if t.tensor_type == T.BF16:
        return (np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)




@pytest.fixture(scope="module")
def qwen_ckpt(tmp_path_factory) -> tuple[Path, dict]:
    """Qwen2, 8 layers, hidden 128 (not a multiple of 256: fallbacks), ffn 256, tied, bf16."""
    d = tmp_path_factory.mktemp("qwen") / "tiny-qwen"
    return d, make_checkpoint(d)


# llama.cpp's recipe for this geometry, written out by hand: more-bits layers of 8 are 0, 3, 6, 7
MORE_BITS = {0, 3, 6, 7}


def expected_type(qtype: str, name: str) -> T:
    if not name.endswith(".weight") or name.endswith("_norm.weight"):
        return T.F32
    q = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1,
         "q5_0": T.Q5_0, "q5_1": T.Q5_1}.get(qtype)
    if name == "token_embd.weight":  # tied embedding = output; rows of 128: Q8_0 unless not quantized
        return q if q in (T.F32, T.F16, T.BF16) else T.Q8_0
    if q is not None:
        return q
    layer = int(name.split(".")[1])
    if name.endswith("ffn_down.weight"):  # rows of 256
        if qtype == "q6_k" or layer in MORE_BITS:
            return T.Q6_K
        return {"q4_k_m": T.Q4_K, "q5_k_m": T.Q5_K}[qtype]
    if name.endswith("attn_v.weight") and (qtype == "q6_k" or layer in MORE_BITS):
        return T.Q8_0  # Q6_K on rows of 128 falls back to Q8_0
    return {"q4_k_m": T.Q5_0, "q5_k_m": T.Q5_1, "q6_k": T.Q8_0}[qtype]  # Q4_K/Q5_K/Q6_K fallbacks


@pytest.mark.parametrize("qtype", list(QUANT_TYPES))
def test_each_type_reads_back_with_recipe_types_and_values(qwen_ckpt, tmp_path, qtype):
    src, weights = qwen_ckpt
    out = tmp_path / f"m-{qtype}.gguf"
    res = quantize_model(src, out, qtype, progress=False)
    assert res.path == out and out.stat().st_size == res.n_bytes
    assert not [p for p in tmp_path.iterdir() if p.name != out.name]  # no temp file left
    r = gguf.GGUFReader(out)
    assert field(r, "general.architecture") == "qwen2"
    assert field(r, "general.file_type") == QUANT_TYPES[qtype].file_type
    assert field(r, "general.quantization_version") == 2
    for key, want in [("qwen2.block_count", 8), ("qwen2.embedding_length", 128), ("qwen2.feed_forward_length", 256),
                      ("qwen2.attention.head_count", 4), ("qwen2.attention.head_count_kv", 2),
                      ("qwen2.context_length", 4096), ("qwen2.rope.freq_base", 1e6)]:
        assert field(r, key) == pytest.approx(want), key
    assert field(r, "qwen2.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    ts = tensors_of(r)
    expected_names = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}" for i in range(8) for n in HF_NAMES}
    assert set(ts) == expected_names  # tied: no output.weight
    for name, t in ts.items():
        assert t.tensor_type == expected_type(qtype, name), name
        x = weights[hf_name(name)]
        y = dequant(t)
        assert y.shape == x.shape, name
        assert rel_rmse(y, x) <= ERROR_BOUND[t.tensor_type], (name, t.tensor_type.name)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q5_1", "f16"])
def test_legacy_types_byte_identical_to_gguf_py(qwen_ckpt, tmp_path, qtype):
    src, weights = qwen_ckpt
    out = tmp_path / "m.gguf"
    quantize_model(src, out, qtype, progress=False)
    ts = tensors_of(gguf.GGUFReader(out))
    for name in ("blk.2.attn_q.weight", "blk.5.ffn_down.weight", "blk.7.attn_v.weight"):
        t = ts[name]
        ref = np.ascontiguousarray(gguf.quants.quantize(weights[hf_name(name)], t.tensor_type)).view(np.uint8)
        np.testing.assert_array_equal(np.asarray(t.data).view(np.uint8).reshape(-1), ref.reshape(-1), name)


def test_tokenizer_metadata(qwen_ckpt, tmp_path):
    src, _ = qwen_ckpt
    out = tmp_path / "m.gguf"
    quantize_model(src, out, "q8_0", progress=False)
    r = gguf.GGUFReader(out)
    tok = json.loads((src / "tokenizer.json").read_text())
    n_real = len(tok["model"]["vocab"]) + len(tok["added_tokens"])  # 259 + 4 = 263 ids in use
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 320  # padded to the embedding rows
    assert field(r, "tokenizer.ggml.model") == "gpt2"
    assert field(r, "tokenizer.ggml.pre") == "qwen2"
    assert tokens[:3] == ["Ā", "ā", "Ă"] and tokens[ord("!")] == "!" and tokens[256] == "Ġt"  # GPT-2 byte chars
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
    assert types[ids["<|im_end|>"]] == gguf.TokenType.CONTROL
    assert types[ids["<tool_call>"]] == gguf.TokenType.USER_DEFINED  # added, not special
    assert types[0] == gguf.TokenType.NORMAL
    assert tokens[n_real] == f"[PAD{n_real}]" and types[n_real] == gguf.TokenType.UNUSED
    assert field(r, "tokenizer.ggml.merges") == ["Ġ t", "h e", "Ġt he"]
    assert field(r, "tokenizer.ggml.eos_token_id") == ids["<|im_end|>"]
    assert field(r, "tokenizer.ggml.padding_token_id") == ids["<|endoftext|>"]
    assert field(r, "tokenizer.ggml.add_bos_token") is False
    assert "<|im_start|>" in field(r, "tokenizer.chat_template")


def qwen25_tokenizer_json() -> Path:
    return REPO / "tests" / "data" / "qwen2.5-tokenizer.json"


def test_real_qwen25_tokenizer(tmp_path):
    """The real Qwen2.5 vocabulary: 151,665 ids padded to 151,936, pre-tokenizer qwen2."""
    from qwen_cpu.quantize.hf_checkpoint import add_tokenizer

    folder = tmp_path / "tok"
    folder.mkdir()
    shutil.copy(qwen25_tokenizer_json(), folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": "{{ x }}"}))
    (folder / "config.json").write_text(json.dumps({"bos_token_id": 151643, "eos_token_id": 151645}))
    w = gguf.GGUFWriter(tmp_path / "t.gguf", "qwen2")
    add_tokenizer(w, folder, 151936)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    # read with the project's GGUF reader: gguf-py's GGUFReader takes ~10 s over 300k strings
    from qwen_cpu.gguf import GGUFFile

    with GGUFFile(tmp_path / "t.gguf") as f:
        meta = dict(f.metadata)
    types = np.asarray(meta["tokenizer.ggml.token_type"])
    assert len(types) == len(meta["tokenizer.ggml.tokens"]) == 151936
    assert meta["tokenizer.ggml.pre"] == "qwen2"
    assert len(meta["tokenizer.ggml.merges"]) == 151387
    assert meta["tokenizer.ggml.tokens"][151643] == "<|endoftext|>"
    assert meta["tokenizer.ggml.tokens"][151935] == "[PAD151935]"
    assert types[151643] == types[151644] == types[151645] == gguf.TokenType.CONTROL
    assert types[151657] == types[151658] == gguf.TokenType.USER_DEFINED  # <tool_call> </tool_call>
    assert (types[151665:] == gguf.TokenType.UNUSED).all() and (types[:151643] == gguf.TokenType.NORMAL).all()
    assert meta["tokenizer.ggml.bos_token_id"] == 151643
    assert meta["tokenizer.ggml.eos_token_id"] == 151645


def llama_hf_to_gguf_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Expected GGUF row order: within each head, HF row s*hd/2 + j goes to row 2j + s."""
    hd = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for s in range(2):
            for j in range(hd // 2):
                out[h * hd + 2 * j + s] = w[h * hd + s * hd // 2 + j]
    return out


def test_llama_untied_sharded_permuted(tmp_path):
    src = tmp_path / "tiny-llama"
    weights = make_checkpoint(src, arch="LlamaForCausalLM", hidden=256, ffn=512, n_layer=2, n_head=4, n_kv=2,
                              vocab=300, tied=False, shards=3, bf16=False)
    out = tmp_path / "llama.gguf"
    quantize_model(src, out, "f32", progress=False)
    r = gguf.GGUFReader(out)
    assert field(r, "general.architecture") == "llama"
    assert field(r, "llama.rope.dimension_count") == 64
    assert field(r, "llama.vocab_size") == 300
    ts = tensors_of(r)
    assert "output.weight" in ts and "blk.0.attn_q.bias" not in ts
    np.testing.assert_array_equal(dequant(ts["blk.1.attn_q.weight"]),
                                  llama_hf_to_gguf_rows(weights["model.layers.1.self_attn.q_proj.weight"], 4))
    np.testing.assert_array_equal(dequant(ts["blk.1.attn_k.weight"]),
                                  llama_hf_to_gguf_rows(weights["model.layers.1.self_attn.k_proj.weight"], 2))
    np.testing.assert_array_equal(dequant(ts["blk.1.attn_v.weight"]), weights["model.layers.1.self_attn.v_proj.weight"])
    # the untied output of 256-element rows gets Q6_K in the K recipes; the embedding follows the default
    out2 = tmp_path / "llama-q4km.gguf"
    quantize_model(src, out2, "q4_k_m", progress=False)
    ts = tensors_of(gguf.GGUFReader(out2))
    assert ts["output.weight"].tensor_type == T.Q6_K
    assert ts["token_embd.weight"].tensor_type == T.Q4_K
    assert ts["blk.1.attn_v.weight"].tensor_type == T.Q6_K  # of 2 layers, layer 1 (>= 7n/8) gets more bits
    assert ts["blk.0.attn_v.weight"].tensor_type == T.Q4_K
    assert ts["blk.1.attn_q.weight"].tensor_type == T.Q4_K


def test_rope_scaling_yarn_keys(tmp_path):
    src = tmp_path / "yarn"
    make_checkpoint(src, n_layer=1, rope_scaling={"type": "yarn", "factor": 4.0,
                                                  "original_max_position_embeddings": 32768})
    out = tmp_path / "y.gguf"
    quantize_model(src, out, "q8_0", progress=False)
    r = gguf.GGUFReader(out)
    assert field(r, "qwen2.rope.scaling.type") == "yarn"
    assert field(r, "qwen2.rope.scaling.factor") == 4.0
    assert field(r, "qwen2.rope.scaling.original_context_length") == 32768


def test_transformers5_rope_parameters(tmp_path):
    """transformers >= 5 configs: rope_theta and the scaling inside rope_parameters."""
    src = tmp_path / "tf5"
    make_checkpoint(src, n_layer=1)
    cfg = json.loads((src / "config.json").read_text())
    del cfg["rope_theta"]
    cfg["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "default"}
    (src / "config.json").write_text(json.dumps(cfg))
    quantize_model(src, tmp_path / "a.gguf", "q8_0", progress=False)
    r = gguf.GGUFReader(tmp_path / "a.gguf")
    assert field(r, "qwen2.rope.freq_base") == 5e5 and "qwen2.rope.scaling.type" not in r.fields
    cfg["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "yarn", "factor": 2.0,
                              "original_max_position_embeddings": 2048}
    (src / "config.json").write_text(json.dumps(cfg))
    quantize_model(src, tmp_path / "b.gguf", "q8_0", progress=False)
    r = gguf.GGUFReader(tmp_path / "b.gguf")
    assert field(r, "qwen2.rope.scaling.type") == "yarn" and field(r, "qwen2.rope.scaling.factor") == 2.0
    assert field(r, "qwen2.rope.scaling.original_context_length") == 2048
    cfg["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QwenCpuError, match="rope_scaling type 'llama3' is not supported"):
        quantize_model(src, tmp_path / "c.gguf", "q8_0", progress=False)


def test_requantize_gguf(qwen_ckpt, tmp_path):
    src, weights = qwen_ckpt
    f32 = tmp_path / "f32.gguf"
    quantize_model(src, f32, "f32", progress=False)
    # from an F32 GGUF: the same bytes as straight from the checkpoint
    direct, requant = tmp_path / "direct.gguf", tmp_path / "requant.gguf"
    quantize_model(src, direct, "q4_k_m", progress=False)
    quantize_model(f32, requant, "q4_k_m", progress=False)
    a, b = gguf.GGUFReader(direct), gguf.GGUFReader(requant)
    ta, tb = tensors_of(a), tensors_of(b)
    assert set(ta) == set(tb)
    for name in ta:
        assert ta[name].tensor_type == tb[name].tensor_type, name
        np.testing.assert_array_equal(np.asarray(ta[name].data).view(np.uint8), np.asarray(tb[name].data).view(np.uint8))
    assert field(b, "general.file_type") == 15
    assert field(b, "tokenizer.ggml.tokens") == field(a, "tokenizer.ggml.tokens")
    assert field(b, "tokenizer.chat_template") == field(a, "tokenizer.chat_template")
    # from a quantized GGUF (Q8_0 -> Q4_0): dequantized, requantized, close to the original weights
    q8, q4 = tmp_path / "q8.gguf", tmp_path / "q4.gguf"
    quantize_model(src, q8, "q8_0", progress=False)
    quantize_model(q8, q4, "q4_0", progress=False)
    r = gguf.GGUFReader(q4)
    assert field(r, "general.file_type") == 2
    for name, t in tensors_of(r).items():
        assert t.tensor_type == expected_type("q4_0", name), name
        assert rel_rmse(dequant(t), weights[hf_name(name)]) <= ERROR_BOUND[t.tensor_type] * 1.1, name


def test_existing_output_refused_unless_forced(qwen_ckpt, tmp_path):
    src, _ = qwen_ckpt
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(QwenCpuError, match="already exists"):
        quantize_model(src, out, "q8_0", progress=False)
    assert out.read_bytes() == b"keep me"
    quantize_model(src, out, "q8_0", force=True, progress=False)
    assert out.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize("exc, raised", [(KeyboardInterrupt, KeyboardInterrupt),
                                         (OSError(errno.ENOSPC, "No space left on device"), QwenCpuError)])
def test_no_partial_file_on_error(qwen_ckpt, tmp_path, monkeypatch, exc, raised):
    src, _ = qwen_ckpt
    real = _kernels.quantize
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 20:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(_kernels, "quantize", failing)
    with pytest.raises(raised):
        quantize_model(src, tmp_path / "m.gguf", "q4_k_m", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_progress_lines(qwen_ckpt, tmp_path, capsys):
    src, _ = qwen_ckpt
    quantize_model(src, tmp_path / "m.gguf", "q8_0", progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("[   1/98] token_embd.weight") and "BF16 -> Q8_0" in err[0]
    assert len(err) == 99 and err[-1].startswith("wrote ")
    quantize_model(src, tmp_path / "m2.gguf", "q8_0", progress=False)
    assert capsys.readouterr().err == ""


def test_recipe_function_table():
    """tensor_type against llama.cpp's rules on Qwen2.5-0.5B's geometry (24 layers, hidden 896)."""
    more = {i for i in range(24) if i < 3 or i >= 21 or (i - 3) % 3 == 2}
    for i in range(24):
        v = tensor_type(f"blk.{i}.attn_v.weight", (128, 896), "q4_k_m", 24, False)
        assert v == (T.Q8_0 if i in more else T.Q5_0)
        d = tensor_type(f"blk.{i}.ffn_down.weight", (896, 4864), "q4_k_m", 24, False)
        assert d == (T.Q6_K if i in more else T.Q4_K)
        assert tensor_type(f"blk.{i}.ffn_down.weight", (896, 4864), "q5_k_m", 24, False) == (
            T.Q6_K if i in more else T.Q5_K)
    assert tensor_type("token_embd.weight", (151936, 896), "q4_k_m", 24, False) == T.Q8_0
    assert tensor_type("token_embd.weight", (151936, 1536), "q4_k_m", 28, False) == T.Q6_K
    assert tensor_type("token_embd.weight", (151936, 1536), "q4_k_m", 28, True) == T.Q4_K
    assert tensor_type("output.weight", (151936, 1536), "q4_0", 28, True) == T.Q6_K
    assert tensor_type("output.weight", (151936, 1536), "q8_0", 28, True) == T.Q8_0
    assert tensor_type("blk.0.attn_q.weight", (896, 896), "q5_k_m", 24, False) == T.Q5_1
    assert tensor_type("blk.0.attn_q.weight", (896, 896), "q6_k", 24, False) == T.Q8_0
    assert tensor_type("blk.0.attn_q.weight", (896, 896), "f16", 24, False) == T.F16
    assert tensor_type("blk.0.attn_q.bias", (896,), "q4_k_m", 24, False) == T.F32
    assert tensor_type("blk.0.attn_norm.weight", (896,), "f16", 24, False) == T.F32


# --- bad input --------------------------------------------------------------------------------


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("missing, message", [("config.json", "no config.json"),
                                              ("model.safetensors", "no \\*.safetensors"),
                                              ("tokenizer.json", "no tokenizer.json")])
def test_incomplete_folder(qwen_ckpt, tmp_path, missing, message):
    d = copy_ckpt(qwen_ckpt[0], tmp_path / "ck")
    (d / missing).unlink()
    with pytest.raises(QwenCpuError, match=message):
        quantize_model(d, tmp_path / "m.gguf", "q8_0", progress=False)
    assert not (tmp_path / "m.gguf").exists()


def edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_unsupported_architecture(qwen_ckpt, tmp_path):
    d = copy_ckpt(qwen_ckpt[0], tmp_path / "ck")
    edit_config(d, architectures=["MistralForCausalLM"], model_type="mistral")
    with pytest.raises(QwenCpuError, match="unsupported model.*MistralForCausalLM"):
        quantize_model(d, tmp_path / "m.gguf", "q8_0", progress=False)


def test_shape_contradicting_config(qwen_ckpt, tmp_path):
    d = copy_ckpt(qwen_ckpt[0], tmp_path / "ck")
    edit_config(d, intermediate_size=320)
    with pytest.raises(QwenCpuError, match=r"mlp\.gate_proj\.weight.*shape \(256, 128\).*\(320, 128\)"):
        quantize_model(d, tmp_path / "m.gguf", "q8_0", progress=False)
    edit_config(d, intermediate_size=256, num_hidden_layers=9)
    with pytest.raises(QwenCpuError, match="missing tensors.*blk.8"):
        quantize_model(d, tmp_path / "m.gguf", "q8_0", progress=False)
    edit_config(d, num_hidden_layers=7)
    with pytest.raises(QwenCpuError, match=r"model\.layers\.7\..*does not belong to a 7-layer model"):
        quantize_model(d, tmp_path / "m.gguf", "q8_0", progress=False)
    edit_config(d, num_hidden_layers=8, num_attention_heads=5)
    with pytest.raises(QwenCpuError, match="inconsistent"):
        quantize_model(d, tmp_path / "m.gguf", "q8_0", progress=False)


def test_truncated_shard(qwen_ckpt, tmp_path):
    d = copy_ckpt(qwen_ckpt[0], tmp_path / "ck")
    p = d / "model.safetensors"
    os.truncate(p, p.stat().st_size - 100)
    with pytest.raises(QwenCpuError, match="model.safetensors.*past the end.*truncated"):
        quantize_model(d, tmp_path / "m.gguf", "q8_0", progress=False)
    assert not (tmp_path / "m.gguf").exists()


def test_unknown_type_and_missing_source(qwen_ckpt, tmp_path):
    with pytest.raises(QwenCpuError, match="unknown quantization type 'q3_k_xl'"):
        quantize_model(qwen_ckpt[0], tmp_path / "m.gguf", "q3_k_xl")
    with pytest.raises(QwenCpuError, match="no such file"):
        quantize_model(tmp_path / "nothing", tmp_path / "m.gguf", "q8_0")


def raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + data)
    return path


@pytest.mark.parametrize("header, data, message", [
    ({"w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}, bytes(16), "'w'.*dtype 'I64'"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "'w'.*needs 12 bytes"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
      "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24), "'b'.*overlaps tensor 'a'"),
    ({"w": {"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]}}, bytes(2), "'w'.*shape"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), "'w'.*data_offsets"),
])
def test_malformed_safetensors(tmp_path, header, data, message):
    p = raw_safetensors(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(QwenCpuError, match="bad.safetensors.*" + message):
        SafetensorsFile(p)


def test_safetensors_header_length_and_json(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    with pytest.raises(QwenCpuError, match="header length 1000000 does not fit"):
        SafetensorsFile(p)
    p.write_bytes((3).to_bytes(8, "little") + b"{x}")
    with pytest.raises(QwenCpuError, match="does not parse"):
        SafetensorsFile(p)


def test_safetensors_round_trip_rows(tmp_path):
    """Our writer + reader: bf16 rounded to nearest even, f16 and f32 exact, row slices."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((7, 5)).astype(np.float32)
    b = rng.standard_normal(9).astype(np.float16)
    write_safetensors(tmp_path / "t.safetensors", {"a": a, "b": b, "c": a}, bf16=("c",))
    with SafetensorsFile(tmp_path / "t.safetensors") as st:
        np.testing.assert_array_equal(st.rows("a", 2, 5), a[2:5])
        np.testing.assert_array_equal(st.rows("b", 0, 9), b.astype(np.float32))
        c_bits = np.asarray(gguf.quants.quantize(a, T.BF16)).view(np.uint16)
        np.testing.assert_array_equal(st.rows("c", 0, 7), (c_bits.astype(np.uint32) << 16).view(np.float32))
        assert st.tensors["c"].dtype == "BF16"
