#!/usr/bin/env python3
"""Build the tiny random-weight GGUF checkpoints and their HF-transformers golden outputs.

Run once by hand (needs torch + transformers); the outputs under tests/data/golden/ are committed
so the test suite needs neither. Everything is seeded: re-running rewrites byte-identical files
(given the same numpy / gguf / quantizer versions).

    python3 tests/data/make_golden.py            # build everything, then self-check
    python3 tests/data/make_golden.py --check    # only re-read and check the committed files

Pipeline for every model (see tests/data/golden/README.md for the manifest format):
  1. random float32 weights from numpy (seeded), in HF naming (`model.layers.N.self_attn.q_proj`, ...)
  2. one GGUF per weight type, written with gguf-py's GGUFWriter, in llama.cpp naming (`blk.N.attn_q`)
  3. the GGUF is read back with GGUFReader, every tensor converted to float32 (dequantized where
     quantized, llama Q/K rows un-permuted) and loaded into the HF model; transformers then runs the
     token sequence in float64 (the stored reference) and in float32 (only its deviation is recorded).
     For an F32 file the read-back weights are bit-identical to the original ones (asserted), so its
     reference is the original float model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
N_TOKENS = 80
TOKEN_SEED = 1234

# Model configurations. Names use llama.cpp's hyper-parameter vocabulary.
# Every weight row length is a multiple of 32 (Q8_0/Q4_0 block); the h256 model has every row length a
# multiple of 256 (Q4_K super-block). The h256 model has a single layer to keep its F32 file small.
# Its Q4_0 and Q8_0 files have every row length a multiple of 128 and every row count a multiple
# of 4: on the kernel paths that repack those types at load (csrc/repack.h) all their matrices are
# repacked (the tiny models' 64-wide rows never are).
MODELS = {
    "qwen2-tiny-tied": dict(
        arch="qwen2", n_vocab=512, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=160,
        rope_theta=1.0e6, rms_eps=1e-6, n_ctx=256, tied=True, seed=101,
        types=["F32", "F16", "Q8_0", "Q4_0"],
    ),
    "qwen2-tiny-untied": dict(
        arch="qwen2", n_vocab=512, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=160,
        rope_theta=1.0e6, rms_eps=1e-6, n_ctx=256, tied=False, seed=102,
        types=["F32", "Q8_0"],
    ),
    "llama-tiny-tied": dict(
        arch="llama", n_vocab=512, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=160,
        rope_theta=1.0e4, rms_eps=1e-5, n_ctx=256, tied=True, seed=103,
        types=["F32"],
    ),
    "qwen2-h256-tied": dict(
        arch="qwen2", n_vocab=512, n_embd=256, n_layer=1, n_head=4, n_head_kv=2, n_ff=512,
        rope_theta=1.0e6, rms_eps=1e-6, n_ctx=256, tied=True, seed=104,
        types=["F32", "Q4_K", "Q4_0", "Q8_0"],
    ),
    # YaRN (Qwen2.5's long-context recipe: factor 4 over the original context) with a small original
    # context, so that the 80 test tokens reach 2.5x beyond it. rope_theta 100 spreads the ramp
    # between extrapolated and interpolated frequencies over several of the 8 rotating pairs.
    "qwen2-tiny-yarn": dict(
        arch="qwen2", n_vocab=512, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=160,
        rope_theta=100.0, rms_eps=1e-6, n_ctx=128, tied=True, seed=105,
        yarn=dict(factor=4.0, original_context_length=32),
        types=["F32"],
    ),
}

# general.file_type written for each weight type (llama.cpp's LlamaFileType numbering). For Q4_K every
# 2-D tensor is Q4_K, which is closest to MOSTLY_Q4_K_S.
FILE_TYPE = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "Q4_K": gguf.LlamaFileType.MOSTLY_Q4_K_S,
}

def _git_head() -> str:
    import subprocess  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip() or "unknown"


# Who produced the 2-D tensors of each weight type (recorded in the manifest).
QUANTIZER = {
    "F32": lambda: "none (float32 as generated)",
    "F16": lambda: "numpy astype(float16) (round to nearest even)",
    "Q8_0": lambda: "gguf.quants.quantize (gguf-py)",
    "Q4_0": lambda: "gguf.quants.quantize (gguf-py)",
    "Q4_K": lambda: f"qwen_cpu._kernels.quantize(GGMLQuantizationType.Q4_K, x) at git {_git_head()} (gguf-py has no Q4_K quantizer)",
}

POOLING = (
    "embedding = h.mean(axis=0) / ||h.mean(axis=0)||_2, where h (n_tokens, n_embd) is the output of the "
    "final RMSNorm (output_norm, i.e. the input of the LM head) at every position of the 80-token sequence"
)


def head_dim(cfg: dict) -> int:
    return cfg["n_embd"] // cfg["n_head"]


# ---------------------------------------------------------------------------------------------------
# 1. random weights (HF names, float32)
# ---------------------------------------------------------------------------------------------------

def random_weights(cfg: dict) -> dict[str, np.ndarray]:
    """Seeded float32 weights in HF naming: linear weights (out, in), vectors (n,).

    Scales are chosen so activations stay O(1) through the layers and logits have a standard deviation
    of about 2 (HF's default init, std 0.02, would give logits ~0 and a meaningless comparison):
    linear ~ N(0, 1/in), embedding ~ N(0, (2/sqrt(n_embd))^2), norm weights ~ 1 + N(0, 0.1^2),
    q/k/v biases ~ N(0, 0.3^2) (qwen2 only; llama has none).
    """
    rng = np.random.default_rng(cfg["seed"])
    n_embd, n_ff, hd = cfg["n_embd"], cfg["n_ff"], head_dim(cfg)
    q_dim, kv_dim = cfg["n_head"] * hd, cfg["n_head_kv"] * hd

    def linear(n_out: int, n_in: int) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def bias(n: int) -> np.ndarray:
        return (0.3 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight":
         (rng.standard_normal((cfg["n_vocab"], n_embd)) * (2.0 / np.sqrt(n_embd))).astype(np.float32)}
    for i in range(cfg["n_layer"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(n_embd)
        w[p + "self_attn.q_proj.weight"] = linear(q_dim, n_embd)
        w[p + "self_attn.k_proj.weight"] = linear(kv_dim, n_embd)
        w[p + "self_attn.v_proj.weight"] = linear(kv_dim, n_embd)
        if cfg["arch"] == "qwen2":
            w[p + "self_attn.q_proj.bias"] = bias(q_dim)
            w[p + "self_attn.k_proj.bias"] = bias(kv_dim)
            w[p + "self_attn.v_proj.bias"] = bias(kv_dim)
        w[p + "self_attn.o_proj.weight"] = linear(n_embd, q_dim)
        w[p + "post_attention_layernorm.weight"] = norm(n_embd)
        w[p + "mlp.gate_proj.weight"] = linear(n_ff, n_embd)
        w[p + "mlp.up_proj.weight"] = linear(n_ff, n_embd)
        w[p + "mlp.down_proj.weight"] = linear(n_embd, n_ff)
    w["model.norm.weight"] = norm(n_embd)
    if not cfg["tied"]:
        w["lm_head.weight"] = (rng.standard_normal((cfg["n_vocab"], n_embd)) / np.sqrt(n_embd)).astype(np.float32)
    return w


# ---------------------------------------------------------------------------------------------------
# 2. HF names <-> GGUF names, llama Q/K row permutation
# ---------------------------------------------------------------------------------------------------

_LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_MAP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def hf_to_gguf_name(name: str) -> str:
    if name in _GLOBAL_MAP:
        return _GLOBAL_MAP[name]
    parts = name.split(".", 3)  # model, layers, N, rest
    assert parts[0] == "model" and parts[1] == "layers", name
    return f"blk.{parts[2]}.{_LAYER_MAP[parts[3]]}"


def gguf_to_hf_name(name: str) -> str:
    inv_global = {v: k for k, v in _GLOBAL_MAP.items()}
    if name in inv_global:
        return inv_global[name]
    _, layer, rest = name.split(".", 2)
    inv_layer = {v: k for k, v in _LAYER_MAP.items()}
    return f"model.layers.{layer}.{inv_layer[rest]}"


def rope_rows_to_interleaved(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF llama Q/K rows (per head: first half / second half of head_dim rotate together) -> GGUF llama
    rows (per head: rotating pairs are adjacent rows 2j, 2j+1). Row 2j of a head takes HF row j, row
    2j+1 takes HF row j + head_dim/2. This is the permutation llama.cpp's converter applies (with
    n_head_kv heads for K). Works for weights (rows, cols) and biases (rows,)."""
    rows = w.shape[0]
    hd = rows // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_rows_to_halves(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of rope_rows_to_interleaved."""
    rows = w.shape[0]
    hd = rows // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_rope_permutation(n_head: int = 3, hd: int = 8, theta: float = 1e4) -> None:
    """Self-test of the permutation's meaning: rotating-pairs RoPE (GGUF llama) applied to permuted
    rows must equal the permuted result of rotate-half RoPE (HF) on the original rows."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n_head * hd,))  # one position's query, all heads
    pos = 7
    ang = pos * theta ** (-np.arange(0, hd, 2) / hd)  # (hd/2,)
    cos, sin = np.cos(ang), np.sin(ang)
    # HF rotate-half: pair (j, j + hd/2)
    qh = q.reshape(n_head, hd)
    x1, x2 = qh[:, : hd // 2], qh[:, hd // 2:]
    hf = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=1).reshape(-1)
    # GGUF llama: pair (2j, 2j+1)
    qi = rope_rows_to_interleaved(q, n_head).reshape(n_head, hd // 2, 2)
    a, b = qi[..., 0], qi[..., 1]
    gg = np.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(-1)
    assert np.allclose(gg, rope_rows_to_interleaved(hf, n_head), atol=1e-12)
    assert np.array_equal(rope_rows_to_halves(rope_rows_to_interleaved(q, n_head), n_head), q)


def llama_permute_heads(cfg: dict, gguf_name: str) -> int | None:
    """Number of heads to permute over for this tensor, or None when it is not permuted."""
    if cfg["arch"] != "llama":
        return None
    if ".attn_q." in gguf_name:
        return cfg["n_head"]
    if ".attn_k." in gguf_name:
        return cfg["n_head_kv"]
    return None


# ---------------------------------------------------------------------------------------------------
# 2b. writing GGUF
# ---------------------------------------------------------------------------------------------------

def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Q4_K bytes (rows, cols/256*144) with the project's C++ quantizer (gguf-py has no Q4_K quantizer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for the in-place build
    try:
        from qwen_cpu import _kernels  # noqa: PLC0415  (built with .ci/build-dev)
    except ImportError as e:
        raise RuntimeError(f"qwen_cpu._kernels is not importable ({e}): cannot write Q4_K") from e
    if not hasattr(_kernels, "quantize"):
        raise RuntimeError("qwen_cpu._kernels.quantize is not built yet: cannot write Q4_K")
    out = np.asarray(_kernels.quantize(int(QT.Q4_K), np.ascontiguousarray(x, dtype=np.float32)))
    assert out.dtype == np.uint8 and out.shape == (x.shape[0], x.shape[1] // 256 * 144), out.shape
    # Sanity of the quantizer under test: gguf-py must decode its output to within plain 4-bit error.
    err = np.sqrt(np.mean((gguf.quants.dequantize(out, QT.Q4_K) - x) ** 2) / np.mean(x ** 2))
    assert err < 0.12, f"Q4_K relative RMS error {err:.3f}"
    return out


def encode_tensor(x: np.ndarray, wtype: str) -> tuple[np.ndarray, QT]:
    """Encode one float32 tensor for a file of weight type `wtype`.

    1-D tensors (norm weights, biases) always stay F32, as in llama.cpp's files. Returns the array
    to hand to GGUFWriter (uint8 bytes (rows, bytes_per_row) when quantized) and its GGML type."""
    if x.ndim == 1 or wtype == "F32":
        return x.astype(np.float32), QT.F32
    if wtype == "F16":
        return x.astype(np.float16), QT.F16
    if wtype in ("Q8_0", "Q4_0"):
        qt = QT[wtype]
        return gguf.quants.quantize(x.astype(np.float32), qt), qt
    if wtype == "Q4_K":
        return quantize_q4_k(x), QT.Q4_K
    raise ValueError(wtype)


def write_gguf(path: Path, name: str, cfg: dict, weights: dict[str, np.ndarray], wtype: str) -> dict[str, str]:
    """Write one GGUF file; returns {gguf tensor name: GGML type name} in file order."""
    arch = cfg["arch"]
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"{name}-{wtype.lower()}")
    w.add_description("random-weight test checkpoint made by qwen-cpu tests/data/make_golden.py; no tokenizer")
    w.add_uint32(f"{arch}.vocab_size", cfg["n_vocab"])
    w.add_uint32(f"{arch}.context_length", cfg["n_ctx"])
    w.add_uint32(f"{arch}.embedding_length", cfg["n_embd"])
    w.add_uint32(f"{arch}.feed_forward_length", cfg["n_ff"])
    w.add_uint32(f"{arch}.block_count", cfg["n_layer"])
    w.add_uint32(f"{arch}.attention.head_count", cfg["n_head"])
    w.add_uint32(f"{arch}.attention.head_count_kv", cfg["n_head_kv"])
    w.add_float32(f"{arch}.rope.freq_base", cfg["rope_theta"])
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg["rms_eps"])
    if arch == "llama":
        w.add_uint32(f"{arch}.rope.dimension_count", head_dim(cfg))
    if "yarn" in cfg:  # as llama.cpp's converter writes a config.json rope_scaling of type yarn
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(cfg["yarn"]["factor"])
        w.add_rope_scaling_orig_ctx_len(cfg["yarn"]["original_context_length"])
    w.add_uint32("general.file_type", int(FILE_TYPE[wtype]))
    w.add_uint32("general.quantization_version", gguf.GGML_QUANT_VERSION)

    types = {}
    for hf_name, x in weights.items():
        gname = hf_to_gguf_name(hf_name)
        heads = llama_permute_heads(cfg, gname)
        if heads is not None:
            x = rope_rows_to_interleaved(x, heads)
        data, qt = encode_tensor(x, wtype)
        w.add_tensor(gname, data, raw_dtype=qt if qt not in (QT.F32, QT.F16) else None)
        types[gname] = qt.name
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


def read_back(path: Path, cfg: dict) -> dict[str, np.ndarray]:
    """Read a GGUF file and return float32 HF-named weights (dequantized, llama Q/K un-permuted)."""
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        x = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        heads = llama_permute_heads(cfg, t.name)
        if heads is not None:
            x = rope_rows_to_halves(x, heads)
        out[gguf_to_hf_name(t.name)] = x
    return out


# ---------------------------------------------------------------------------------------------------
# 3. transformers reference
# ---------------------------------------------------------------------------------------------------

def build_hf_model(cfg: dict, weights: dict[str, np.ndarray]):
    import torch  # noqa: PLC0415
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415

    common = dict(
        vocab_size=cfg["n_vocab"], hidden_size=cfg["n_embd"], num_hidden_layers=cfg["n_layer"],
        num_attention_heads=cfg["n_head"], num_key_value_heads=cfg["n_head_kv"],
        intermediate_size=cfg["n_ff"], rms_norm_eps=cfg["rms_eps"],
        rope_theta=cfg["rope_theta"], rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]},
        max_position_embeddings=cfg["n_ctx"], tie_word_embeddings=cfg["tied"], hidden_act="silu",
        attn_implementation="eager",
    )
    if "yarn" in cfg:
        common["rope_parameters"] = {"rope_type": "yarn", "rope_theta": cfg["rope_theta"],
                                     "factor": cfg["yarn"]["factor"],
                                     "original_max_position_embeddings": cfg["yarn"]["original_context_length"]}
    if cfg["arch"] == "qwen2":
        hf_cfg = Qwen2Config(**common)
        model = Qwen2ForCausalLM(hf_cfg)
    else:
        hf_cfg = LlamaConfig(**common, head_dim=head_dim(cfg), attention_bias=False, mlp_bias=False)
        model = LlamaForCausalLM(hf_cfg)
    assert hf_cfg.rope_parameters["rope_theta"] == cfg["rope_theta"], hf_cfg.rope_parameters
    assert hf_cfg.rope_parameters["rope_type"] == ("yarn" if "yarn" in cfg else "default"), hf_cfg.rope_parameters
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= ({"lm_head.weight"} if cfg["tied"] else set()), missing
    if cfg["tied"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
    model.eval()
    return model


def run_reference(cfg: dict, weights: dict[str, np.ndarray], tokens: np.ndarray) -> dict:
    """Run transformers on `tokens` (n,) in float64 and float32.

    Returns float64-run logits (n, n_vocab), final-norm hidden states (n, n_embd) and the pooled
    embedding (n_embd,), all as float32, plus the max |float32 run - float64 run| of the logits."""
    import torch  # noqa: PLC0415

    model = build_hf_model(cfg, weights)
    ids = torch.from_numpy(tokens.astype(np.int64))[None, :]
    res = {}
    with torch.no_grad():
        for dtype in (torch.float64, torch.float32):
            m = model.to(dtype)
            h = m.model(input_ids=ids, use_cache=False).last_hidden_state[0]  # after output_norm
            logits = m(input_ids=ids, use_cache=False).logits[0]
            torch.testing.assert_close(m.lm_head(h), logits, rtol=0, atol=0)
            res[dtype] = (h.double().numpy(), logits.double().numpy())
    h64, l64 = res[torch.float64]
    pooled = h64.mean(axis=0)
    return dict(
        logits=l64.astype(np.float32),
        hidden=h64.astype(np.float32),
        embedding=(pooled / np.linalg.norm(pooled)).astype(np.float32),
        f32_run_max_abs_diff=float(np.abs(res[torch.float32][1] - l64).max()),
    )


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / max |ref| (the issue's relative-error measure)."""
    return float(np.abs(a.astype(np.float64) - ref).max() / np.abs(ref).max())


# ---------------------------------------------------------------------------------------------------
# 4. self-check (gguf + numpy only)
# ---------------------------------------------------------------------------------------------------

def expected_tensors(cfg: dict) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> numpy shape (rows, cols) / (n,) for a model config."""
    n_embd, n_ff, hd = cfg["n_embd"], cfg["n_ff"], head_dim(cfg)
    q_dim, kv_dim = cfg["n_head"] * hd, cfg["n_head_kv"] * hd
    t = {"token_embd.weight": (cfg["n_vocab"], n_embd)}
    for i in range(cfg["n_layer"]):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = (n_embd,)
        t[b + "attn_q.weight"] = (q_dim, n_embd)
        t[b + "attn_k.weight"] = (kv_dim, n_embd)
        t[b + "attn_v.weight"] = (kv_dim, n_embd)
        if cfg["arch"] == "qwen2":
            t[b + "attn_q.bias"] = (q_dim,)
            t[b + "attn_k.bias"] = (kv_dim,)
            t[b + "attn_v.bias"] = (kv_dim,)
        t[b + "attn_output.weight"] = (n_embd, q_dim)
        t[b + "ffn_norm.weight"] = (n_embd,)
        t[b + "ffn_gate.weight"] = (n_ff, n_embd)
        t[b + "ffn_up.weight"] = (n_ff, n_embd)
        t[b + "ffn_down.weight"] = (n_embd, n_ff)
    t["output_norm.weight"] = (n_embd,)
    if not cfg["tied"]:
        t["output.weight"] = (cfg["n_vocab"], n_embd)
    return t


def yarn_frequencies(cfg: dict) -> tuple[np.ndarray, float]:
    """Radians per position of each rotating pair (head_dim/2,) and the cos/sin magnitude, from the
    YaRN paper (arXiv 2309.00071, section 3.2-3.3) with its defaults alpha = 1, beta = 32: pair i of
    wavelength lambda_i makes r = L / lambda_i turns over the original context L; r > beta keeps its
    frequency, r < alpha is divided by the factor s, ramps linearly in between (the ramp's ends
    rounded outwards to whole pairs, as transformers and llama.cpp do); magnitude sqrt(1/t) =
    0.1 ln(s) + 1 on both q and k. Without YaRN: the plain frequencies and 1."""
    hd = head_dim(cfg)
    theta = cfg["rope_theta"] ** (-np.arange(0, hd, 2) / hd)
    if "yarn" not in cfg:
        return theta, 1.0
    s, L = cfg["yarn"]["factor"], cfg["yarn"]["original_context_length"]

    def pair_at(turns: float) -> float:  # the (fractional) pair index that makes `turns` turns over L
        return hd * np.log(L / (turns * 2 * np.pi)) / (2 * np.log(cfg["rope_theta"]))

    lo, hi = max(np.floor(pair_at(32.0)), 0.0), min(np.ceil(pair_at(1.0)), hd - 1.0)
    ramp = np.clip((np.arange(hd // 2) - lo) / max(hi - lo, 1e-3), 0.0, 1.0)  # 0: keep, 1: interpolate
    return theta * (1 - ramp) + theta / s * ramp, 0.1 * np.log(s) + 1.0


def numpy_forward(path: Path, cfg: dict, tokens: np.ndarray) -> np.ndarray:
    """Independent float64 forward pass straight from a GGUF file, with llama.cpp's conventions:
    qwen2 rotates pairs (j, j + head_dim/2) of the GGUF rows (NEOX style), llama rotates adjacent pairs
    (2j, 2j + 1) of the (permuted) GGUF rows. Returns logits (n_tokens, n_vocab). It cross-checks the
    files against the transformers references, in particular the llama permutation's direction."""
    r = gguf.GGUFReader(path)
    W = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64) for t in r.tensors}
    n, hd, nh, nkv = len(tokens), cfg["head_dim"], cfg["n_head"], cfg["n_head_kv"]

    def rms(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg["rms_eps"]) * w

    theta, mscale = yarn_frequencies(cfg)
    ang = np.arange(n)[:, None] * theta  # (n, hd/2)
    cos, sin = np.cos(ang)[:, None, :] * mscale, np.sin(ang)[:, None, :] * mscale

    def rope(x: np.ndarray) -> np.ndarray:  # x (n, heads, hd)
        if cfg["arch"] == "llama":
            a, b = x[..., 0::2], x[..., 1::2]
            return np.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(x.shape)
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    def lin(x: np.ndarray, name: str) -> np.ndarray:
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    x = W["token_embd.weight"][tokens]  # (n, n_embd)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["n_layer"]):
        b = f"blk.{i}."
        h = rms(x, W[b + "attn_norm.weight"])
        q = rope(lin(h, b + "attn_q").reshape(n, nh, hd))
        k = rope(lin(h, b + "attn_k").reshape(n, nkv, hd))
        v = lin(h, b + "attn_v").reshape(n, nkv, hd)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)  # query head j uses kv head j // (nh/nkv)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + lin(np.einsum("hqk,khd->qhd", p, v).reshape(n, nh * hd), b + "attn_output")
        h = rms(x, W[b + "ffn_norm.weight"])
        g = lin(h, b + "ffn_gate")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, b + "ffn_up"), b + "ffn_down")
    out = W.get("output.weight", W["token_embd.weight"])
    return rms(x, W["output_norm.weight"]) @ out.T


def field_value(r: gguf.GGUFReader, key: str):
    f = r.get_field(key)
    assert f is not None, f"missing key {key}"
    return f.contents()


def self_check(golden: Path) -> None:
    manifest = json.loads((golden / "manifest.json").read_text())
    tokens = np.asarray(manifest["tokens"])
    assert tokens.shape == (manifest["n_tokens"],)
    total = 0
    print(f"{'file':34s} {'bytes':>9s} {'tensors':>7s}  types")
    for fname, entry in manifest["files"].items():
        cfg = manifest["models"][entry["model"]]
        arch = cfg["arch"]
        path = golden / fname
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{fname}: sha256 mismatch"
        r = gguf.GGUFReader(path)
        assert field_value(r, "general.architecture") == arch
        for key, want in [
            ("context_length", cfg["n_ctx"]), ("embedding_length", cfg["n_embd"]),
            ("feed_forward_length", cfg["n_ff"]), ("block_count", cfg["n_layer"]),
            ("attention.head_count", cfg["n_head"]), ("attention.head_count_kv", cfg["n_head_kv"]),
            ("vocab_size", cfg["n_vocab"]),
        ]:
            assert field_value(r, f"{arch}.{key}") == want, (fname, key)
        assert np.isclose(field_value(r, f"{arch}.rope.freq_base"), cfg["rope_theta"], rtol=1e-7)
        assert np.isclose(field_value(r, f"{arch}.attention.layer_norm_rms_epsilon"), cfg["rms_eps"], rtol=1e-6)
        if arch == "llama":
            assert field_value(r, f"{arch}.rope.dimension_count") == cfg["head_dim"]
        if "yarn" in cfg:
            assert field_value(r, f"{arch}.rope.scaling.type") == "yarn"
            assert field_value(r, f"{arch}.rope.scaling.factor") == cfg["yarn"]["factor"]
            assert field_value(r, f"{arch}.rope.scaling.original_context_length") == cfg["yarn"]["original_context_length"]
        assert field_value(r, "general.file_type") == entry["file_type"]
        assert not any(k.startswith("tokenizer.") for k in r.fields), "tokenizer keys must be absent"

        want_shapes = expected_tensors(cfg)
        got = {t.name: t for t in r.tensors}
        assert set(got) == set(want_shapes), (fname, set(got) ^ set(want_shapes))
        for name, shape in want_shapes.items():
            t = got[name]
            # GGUF stores ne (fastest dimension first): the reverse of the numpy shape.
            assert tuple(int(d) for d in t.shape) == tuple(reversed(shape)), (fname, name, t.shape)
            want_type = "F32" if len(shape) == 1 else entry["weight_type"]
            assert t.tensor_type.name == want_type == entry["tensor_types"][name], (fname, name, t.tensor_type)
            x = gguf.quants.dequantize(t.data, t.tensor_type)
            assert x.shape == shape and np.isfinite(x).all(), (fname, name)

        ref = np.load(golden / entry["reference"])
        assert ref["logits"].shape == (manifest["n_tokens"], cfg["n_vocab"]) and ref["logits"].dtype == np.float32
        assert ref["hidden"].shape == (manifest["n_tokens"], cfg["n_embd"])
        assert ref["embedding"].shape == (cfg["n_embd"],)
        assert abs(float(np.linalg.norm(ref["embedding"])) - 1.0) < 1e-5
        err = rel_err(numpy_forward(path, cfg, tokens), ref["logits"].astype(np.float64))
        assert err < 1e-5, f"{fname}: numpy forward vs reference rel err {err:.2e}"
        size = path.stat().st_size
        total += size
        types = sorted(set(entry["tensor_types"].values()))
        print(f"{fname:34s} {size:9d} {len(r.tensors):7d}  {','.join(types):9s} numpy-fwd rel err {err:.1e}")
    npz_total = sum(p.stat().st_size for p in golden.glob("*.npz"))
    print(f"GGUF total {total} bytes, reference npz total {npz_total} bytes: self-check OK")


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------

def build(golden: Path, skip_missing_q4k: bool, only: list[str] | None = None) -> None:
    """Write every model's files, or with `only` those models' files, the other entries of the
    existing manifest kept as they are."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    check_rope_permutation()
    golden.mkdir(parents=True, exist_ok=True)
    tokens = np.random.default_rng(TOKEN_SEED).integers(0, 512, size=N_TOKENS).astype(np.int32)
    manifest = {
        "format_version": 1,
        "n_tokens": N_TOKENS,
        "tokens": [int(t) for t in tokens],
        "pooling": POOLING,
        "versions": {
            "torch": torch.__version__, "transformers": transformers.__version__,
            "gguf": _gguf_version(), "numpy": np.__version__,
        },
        "models": {},
        "files": {},
    }
    if only:
        old = json.loads((golden / "manifest.json").read_text())
        assert old["tokens"] == manifest["tokens"], "the token sequence changed"
        manifest["versions"] = old["versions"]  # (the files kept were made with these)
        if manifest["versions"]["transformers"] != transformers.__version__:
            print(f"note: the kept files were made with transformers {old['versions']['transformers']}, "
                  f"the new ones with {transformers.__version__}", file=sys.stderr)
        manifest["models"] = {k: v for k, v in old["models"].items() if k not in only}
        manifest["files"] = {k: v for k, v in old["files"].items() if v["model"] not in only}
    for name, cfg in MODELS.items():
        if only and name not in only:
            continue
        meta = {k: v for k, v in cfg.items() if k != "types"}
        meta["head_dim"] = head_dim(cfg)
        meta["attention_bias"] = cfg["arch"] == "qwen2"
        manifest["models"][name] = meta
        weights = random_weights(cfg)
        float_ref = None
        for wtype in cfg["types"]:
            fname = f"{name}.{wtype.lower()}.gguf"
            try:
                types = write_gguf(golden / fname, name, cfg, weights, wtype)
            except RuntimeError as e:
                if wtype == "Q4_K" and skip_missing_q4k:
                    print(f"SKIPPED {fname}: {e}", file=sys.stderr)
                    (golden / fname).unlink(missing_ok=True)
                    continue
                raise
            back = read_back(golden / fname, cfg)
            assert set(back) == set(weights)
            if wtype == "F32":
                for k in weights:
                    assert np.array_equal(back[k], weights[k]), f"{fname}: {k} did not round-trip"
            ref = run_reference(cfg, back, tokens)
            ref_name = f"{name}.{wtype.lower()}.npz"
            np.savez(golden / ref_name, logits=ref["logits"], hidden=ref["hidden"], embedding=ref["embedding"])
            kind = {"F32": "float", "F16": "f16_rounded"}.get(wtype, "dequantized")
            entry = {
                "model": name,
                "arch": cfg["arch"],
                "weight_type": wtype,
                "file_type": int(FILE_TYPE[wtype]),
                "reference": ref_name,
                "reference_kind": kind,
                "float_reference": f"{name}.f32.npz",
                "max_abs_logit": float(np.abs(ref["logits"]).max()),
                "f32_run_max_abs_diff": ref["f32_run_max_abs_diff"],
                "quantizer": QUANTIZER[wtype](),
                "tensor_types": types,
                "sha256": hashlib.sha256((golden / fname).read_bytes()).hexdigest(),
            }
            if wtype == "F32":
                float_ref = ref
            else:
                assert float_ref is not None, "F32 must come first"
                entry["reference_vs_float_rel_err"] = rel_err(ref["logits"], float_ref["logits"])
            manifest["files"][fname] = entry
            print(f"{fname}: reference={kind} max|logit|={entry['max_abs_logit']:.3f} "
                  f"f32-run diff={entry['f32_run_max_abs_diff']:.2e}"
                  + (f" vs float rel={entry['reference_vs_float_rel_err']:.2e}"
                     if "reference_vs_float_rel_err" in entry else ""))
    (golden / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _gguf_version() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version("gguf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=GOLDEN_DIR, help="output folder (default: tests/data/golden)")
    ap.add_argument("--check", action="store_true", help="only self-check the existing files")
    ap.add_argument("--skip-missing-q4k", action="store_true",
                    help="leave the Q4_K file out when qwen_cpu._kernels.quantize is not built")
    ap.add_argument("--only", nargs="+", choices=sorted(MODELS), help="rebuild only these models' files")
    args = ap.parse_args()
    if not args.check:
        build(args.out, args.skip_missing_q4k, args.only)
    self_check(args.out)


if __name__ == "__main__":
    main()
