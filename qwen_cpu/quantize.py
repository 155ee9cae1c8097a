"""Checkpoint -> GGUF: quantize a Hugging Face Qwen2/Llama checkpoint (or requantize a GGUF) into a
GGUF file that llama.cpp and qwen-cpu both load.

    quantize_model("Qwen2.5-0.5B-Instruct/", "qwen2.5-0.5b-q4_k_m.gguf", "q4_k_m")

Types and recipes (the per-tensor rules are llama.cpp's `llama_tensor_get_type`; `n` is the layer
count, "more-bits layers" are i < n/8, i >= 7n/8 and every third layer in between,
(i - n/8) % 3 == 2):

| TYPE   | file_type | 2-D weights          | attn_v / ffn_down          | output (token_embd if tied) |
|--------|-----------|----------------------|----------------------------|-----------------------------|
| f32    | 0         | F32                  | F32                        | F32                         |
| f16    | 1         | F16                  | F16                        | F16                         |
| bf16   | 32        | BF16                 | BF16                       | BF16                        |
| q8_0   | 7         | Q8_0                 | Q8_0                       | Q8_0                        |
| q4_0   | 2         | Q4_0                 | Q4_0                       | Q6_K                        |
| q4_1   | 3         | Q4_1                 | Q4_1                       | Q6_K                        |
| q5_0   | 8         | Q5_0                 | Q5_0                       | Q6_K                        |
| q5_1   | 9         | Q5_1                 | Q5_1                       | Q6_K                        |
| q4_k_m | 15        | Q4_K                 | Q6_K in more-bits layers   | Q6_K                        |
| q5_k_m | 17        | Q5_K                 | Q6_K in more-bits layers   | Q6_K                        |
| q6_k   | 18        | Q6_K                 | Q6_K                       | Q6_K                        |

- 1-D tensors (norms, biases) stay F32; token_embd follows the 2-D column unless the embeddings
  are tied (no output.weight), in which case it is treated as the output.
- Rows whose length is not a multiple of the type's block fall back as llama.cpp does:
  Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 (and a legacy type whose 32 does not divide -> F16);
  the output/tied embedding becomes Q8_0 when its rows are not a multiple of 256. Qwen2.5-0.5B
  (hidden 896 = 3.5 x 256) at q4_k_m therefore gets: token_embd Q8_0, attn_q/k/output and
  ffn_gate/up Q5_0, attn_v Q5_0 (Q8_0 in more-bits layers), ffn_down (rows of 4864 = 19 x 256)
  Q4_K (Q6_K in more-bits layers).
- Requantizing a GGUF applies the same rules to its tensors; a tensor already in its target type
  is copied unchanged, 1-D tensors are copied in their type.

The legacy types and F16/BF16 are byte-identical to gguf-py's quantizers; the K-quants are our own
(qwen_cpu._kernels.quantize), with an error at or below llama.cpp's reference quantizers.

Memory: tensors are read (safetensors: mapped, rows converted on demand), converted and written in
row chunks, one tensor at a time, so peak memory stays near a chunk plus the output buffers of one
chunk, whatever the model size.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .defaults import add_sampling_metadata
from .errors import QwenCpuError
from .progress import Bar
from .safetensors_io import SafetensorsFile

__all__ = ["QUANT_TYPES", "QuantizeResult", "quantize_model", "tensor_type"]

# GGUF tensor type ids (fixed by the file format)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16 = 10, 11, 12, 13, 14, 30
_TYPE_NAMES = {F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1", Q8_0: "Q8_0",
               Q2_K: "Q2_K", Q3_K: "Q3_K", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K", BF16: "BF16"}
# elements, bytes per block
_BLOCKS = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q5_0: (32, 22),
           Q5_1: (32, 24), Q8_0: (32, 34), Q2_K: (256, 84), Q3_K: (256, 110), Q4_K: (256, 144),
           Q5_K: (256, 176), Q6_K: (256, 210)}


@dataclass(frozen=True)
class QuantType:
    name: str
    file_type: int      # general.file_type (llama.cpp's LlamaFileType)
    default: int        # tensor type of the 2-D weights
    k_mix: bool = False  # the _M recipes: Q6_K for attn_v/ffn_down in the more-bits layers


QUANT_TYPES: dict[str, QuantType] = {q.name: q for q in (
    QuantType("f32", 0, F32), QuantType("f16", 1, F16), QuantType("bf16", 32, BF16),
    QuantType("q8_0", 7, Q8_0), QuantType("q4_0", 2, Q4_0), QuantType("q4_1", 3, Q4_1),
    QuantType("q5_0", 8, Q5_0), QuantType("q5_1", 9, Q5_1),
    QuantType("q4_k_m", 15, Q4_K, True), QuantType("q5_k_m", 17, Q5_K, True), QuantType("q6_k", 18, Q6_K),
)}
_FALLBACK = {Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0}
_QUANTIZED = {Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}
_LAYER = re.compile(r"^blk\.(\d+)\.")


def _use_more_bits(i_layer: int, n_layer: int) -> bool:
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def tensor_type(name: str, shape: tuple[int, ...], qtype: str | QuantType, n_layer: int, has_output: bool) -> int:
    """The GGUF type a tensor gets under a TYPE recipe (see the module docstring).

    name: GGUF tensor name ("blk.3.attn_v.weight"); shape: numpy order, rows first.
    """
    q = QUANT_TYPES[qtype] if isinstance(qtype, str) else qtype
    if len(shape) < 2 or not name.endswith(".weight") or name.endswith("_norm.weight"):
        return F32
    if q.default not in _QUANTIZED:
        return q.default
    new = q.default
    n_per_row = shape[-1]
    if name == "output.weight" or (not has_output and name == "token_embd.weight"):
        if n_per_row % _BLOCKS[new][0] != 0:
            new = Q8_0
        elif new != Q8_0:
            new = Q6_K
    elif q.k_mix and (".attn_v.weight" in name or ".ffn_down" in name):
        m = _LAYER.match(name)
        if m and _use_more_bits(int(m.group(1)), n_layer):
            new = Q6_K
    if n_per_row % _BLOCKS[new][0] != 0:
        new = _FALLBACK.get(new, F16)
        if n_per_row % _BLOCKS[new][0] != 0:
            new = F16
    return new


def _type_name(t: int) -> str:
    return _TYPE_NAMES.get(t, f"type {t}")


def _row_bytes(t: int, n_per_row: int) -> int:
    be, bb = _BLOCKS[t]
    return n_per_row // be * bb


# --------------------------------------------------------------------------------------------
# sources


@dataclass
class _Tensor:
    """One output tensor: its GGUF name, numpy shape, and how to read rows of its source."""

    name: str
    shape: tuple[int, ...]
    src_type: str                                       # for the progress line
    read_rows: Callable[[int, int], np.ndarray]         # rows [a, b) as float32 (rows, n_per_row)
    raw_rows: Callable[[int, int], np.ndarray] | None = None  # rows [a, b) as stored bytes (GGUF)
    raw_type: int | None = None                         # GGUF type of raw_rows
    release: Callable[[], None] = lambda: None
    row_align: int = 1                                  # chunks start at multiples of this row count
    out_type: int = F32                                 # chosen by the recipe
    nbytes: int = 0                                     # bytes in the output


_HF_ARCHES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}
_HF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise QwenCpuError(f"{path.parent}: no {path.name} ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QwenCpuError(f"{path}: cannot read {what}: {e}") from None


@dataclass
class _HFConfig:
    arch: str
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool
    rope_scaling: dict | None
    name: str


def _hf_config(folder: Path) -> _HFConfig:
    cfg = _read_json(folder / "config.json", "the model's config")
    archs = cfg.get("architectures") or []
    arch = next((_HF_ARCHES[a] for a in archs if a in _HF_ARCHES), None)
    if arch is None and not archs:
        arch = {"qwen2": "qwen2", "llama": "llama"}.get(cfg.get("model_type", ""))
    if arch is None:
        raise QwenCpuError(f"{folder}: unsupported model (architectures {archs}, model_type "
                           f"{cfg.get('model_type')!r}); supported: {sorted(_HF_ARCHES)}")

    def need(key: str) -> int:
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise QwenCpuError(f"{folder / 'config.json'}: {key} is {v!r}, expected a positive integer")
        return v

    n_embd, n_head = need("hidden_size"), need("num_attention_heads")
    n_head_kv = need("num_key_value_heads") if "num_key_value_heads" in cfg else n_head
    head_dim = need("head_dim") if cfg.get("head_dim") is not None else n_embd // n_head
    explicit_head_dim = cfg.get("head_dim") is not None
    if n_head % n_head_kv != 0 or (not explicit_head_dim and head_dim * n_head != n_embd) or head_dim % 2:
        raise QwenCpuError(f"{folder / 'config.json'}: {n_head} heads of {head_dim}, {n_head_kv} kv heads and "
                           f"hidden size {n_embd} are inconsistent")
    # transformers >= 5 writes rope_parameters {rope_theta, rope_type, factor, ...}; older configs a
    # top-level rope_theta and an optional rope_scaling {type or rope_type, factor, ...}
    rp = cfg.get("rope_parameters")
    if rp is not None and not isinstance(rp, dict):
        raise QwenCpuError(f"{folder / 'config.json'}: rope_parameters {rp!r} is not an object")
    rope_theta = float((rp or {}).get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rs = cfg.get("rope_scaling")
    if rs is None and rp is not None and rp.get("rope_type", "default") != "default":
        rs = rp
    if rs is not None and not isinstance(rs, dict):
        raise QwenCpuError(f"{folder / 'config.json'}: rope_scaling {rs!r} is not an object")
    if rs is not None and (rs.get("type") or rs.get("rope_type")) == "default":
        rs = None
    if rs is not None:
        kind = rs.get("type") or rs.get("rope_type")
        if kind not in ("yarn", "linear"):
            raise QwenCpuError(f"{folder / 'config.json'}: rope_scaling type {kind!r} is not supported "
                               "(supported: yarn, linear)")
    return _HFConfig(
        arch=arch, n_embd=n_embd, n_ff=need("intermediate_size"), n_layer=need("num_hidden_layers"),
        n_head=n_head, n_head_kv=int(n_head_kv), head_dim=int(head_dim), n_vocab=need("vocab_size"),
        n_ctx=int(cfg.get("max_position_embeddings") or 4096), rope_theta=rope_theta,
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)), tied=bool(cfg.get("tie_word_embeddings", False)),
        rope_scaling=rs, name=folder.resolve().name,
    )


def _hf_shards(folder: Path) -> dict[str, SafetensorsFile]:
    """tensor name -> the open shard holding it."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        wm = _read_json(index, "the shard index").get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise QwenCpuError(f"{index}: no weight_map")
        files = sorted(set(wm.values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            raise QwenCpuError(f"{folder}: no *.safetensors weights (and no model.safetensors.index.json)")
    opened = {}
    for f in files:
        p = folder / f
        if not p.exists():
            raise QwenCpuError(f"{folder}: shard {f} named by the index is missing")
        opened[f] = SafetensorsFile(p)
    by_name: dict[str, SafetensorsFile] = {}
    for f, st in opened.items():
        for n in st.tensors:
            if n in by_name:
                raise QwenCpuError(f"{folder}: tensor {n!r} appears in two shards ({by_name[n].path}, {st.path})")
            by_name[n] = st
    return by_name


def _expected_shapes(c: _HFConfig) -> dict[str, tuple[int, ...]]:
    """GGUF name -> numpy shape the config implies (biases are optional)."""
    q, kv = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
    shapes = {"token_embd.weight": (c.n_vocab, c.n_embd), "output_norm.weight": (c.n_embd,)}
    if not c.tied:
        shapes["output.weight"] = (c.n_vocab, c.n_embd)
    for i in range(c.n_layer):
        p = f"blk.{i}."
        shapes.update({
            p + "attn_norm.weight": (c.n_embd,), p + "attn_q.weight": (q, c.n_embd),
            p + "attn_k.weight": (kv, c.n_embd), p + "attn_v.weight": (kv, c.n_embd),
            p + "attn_output.weight": (c.n_embd, q), p + "ffn_norm.weight": (c.n_embd,),
            p + "ffn_gate.weight": (c.n_ff, c.n_embd), p + "ffn_up.weight": (c.n_ff, c.n_embd),
            p + "ffn_down.weight": (c.n_embd, c.n_ff),
        })
    return shapes


def _gguf_name(hf: str) -> str | None:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    m = _HF_LAYER.match(hf)
    if m and m.group(2) in _HF_LAYER_NAMES:
        return f"blk.{int(m.group(1))}.{_HF_LAYER_NAMES[m.group(2)]}"
    return None


def _permute_rows(rows: np.ndarray, head_dim: int) -> np.ndarray:
    """Llama Q/K rows from HF's rotate-half order to GGUF's interleaved pairs, per head.

    Within a head, HF row s*(hd/2) + j becomes row 2j + s (llama.cpp's converter permutation).
    rows: (k * head_dim, n_in) for whole heads.
    """
    n, n_in = rows.shape
    return rows.reshape(n // head_dim, 2, head_dim // 2, n_in).swapaxes(1, 2).reshape(n, n_in)


def _hf_tensors(folder: Path, c: _HFConfig) -> tuple[list[_Tensor], list[SafetensorsFile]]:
    by_name = _hf_shards(folder)
    shards = list({id(s): s for s in by_name.values()}.values())
    expected = _expected_shapes(c)
    found: dict[str, tuple[str, SafetensorsFile]] = {}
    unknown = []
    for hf, st in by_name.items():
        g = _gguf_name(hf)
        if g is None:
            if not hf.endswith("rotary_emb.inv_freq"):
                unknown.append(hf)
            continue
        if g == "output.weight" and c.tied:
            continue  # tied: the embedding is the output
        found[g] = (hf, st)
    if unknown:
        raise QwenCpuError(f"{folder}: tensors this converter does not know: {', '.join(sorted(unknown)[:5])}"
                           + (" ..." if len(unknown) > 5 else ""))
    missing = [n for n in expected if n not in found]
    if missing:
        raise QwenCpuError(f"{folder}: missing tensors for a {c.n_layer}-layer {c.arch} model: "
                           f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    out = []
    for g, (hf, st) in found.items():
        e = st.tensors[hf]
        want = expected.get(g)
        weight_of_bias = g[: -len("bias")] + "weight"
        if want is None and g.endswith(".bias") and weight_of_bias in expected:
            want = (expected[weight_of_bias][0],)  # a bias: as long as its weight has rows
        if want is None:
            raise QwenCpuError(f"{st.path}: tensor {hf!r} does not belong to a {c.n_layer}-layer model "
                               "(num_hidden_layers in config.json)")
        if e.shape != want:
            raise QwenCpuError(f"{st.path}: tensor {hf!r} has shape {e.shape}, but config.json implies {want}")
        permute = c.arch == "llama" and (".attn_q." in g or ".attn_k." in g)
        t = _Tensor(name=g, shape=e.shape, src_type=e.dtype,
                    read_rows=_hf_reader(st, hf, permute and len(e.shape) == 2, c.head_dim),
                    release=(lambda st=st, hf=hf: st.release(hf)))
        if permute:
            if len(e.shape) == 1:  # a bias is permuted like the rows it belongs to
                t.read_rows = (lambda a, b, st=st, hf=hf, n=e.shape[0]:
                               _permute_rows(st.rows(hf, 0, n).reshape(-1, 1), c.head_dim).reshape(-1)[a:b])
            t.row_align = c.head_dim
        out.append(t)
    return _ordered(out), shards


def _hf_reader(st: SafetensorsFile, hf: str, permute: bool, head_dim: int) -> Callable[[int, int], np.ndarray]:
    if permute:
        return lambda a, b: _permute_rows(st.rows(hf, a, b), head_dim)
    return lambda a, b: st.rows(hf, a, b)


def _ordered(tensors: list[_Tensor]) -> list[_Tensor]:
    """token_embd, the blocks in layer order (names sorted within a block), output_norm, output."""
    def key(t: _Tensor) -> tuple:
        m = _LAYER.match(t.name)
        if m:
            return (1, int(m.group(1)), t.name)
        return ({"token_embd.weight": 0, "output_norm.weight": 2, "output.weight": 3}.get(t.name, 4), 0, t.name)
    return sorted(tensors, key=key)


def _token_type(special: bool, text: str) -> int:
    looks_special = (text.startswith("<|") and text.endswith("|>")) or (text.startswith("<｜") and text.endswith("｜>"))
    return 3 if special or looks_special else 4  # CONTROL, USER_DEFINED


def _pre_tokenizer_name(tok: dict, path: Path) -> str:
    """llama.cpp's name for the pre-tokenizer (tokenizer.ggml.pre), from tokenizer.json's structure."""
    pre = tok.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    regexes = [p.get("pattern", {}).get("Regex", "") for p in parts if p.get("type") == "Split"]
    kinds = [p.get("type") for p in parts]
    for rx in regexes:
        if r"\p{N}{1,3}" in rx:
            return "llama-bpe"
        if r"\p{L}+|\p{N}|" in rx:
            return "qwen2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    raise QwenCpuError(f"{path}: pre-tokenizer {json.dumps(pre)[:200]} is not one this converter recognises "
                       "(qwen2, llama-bpe, smollm, gpt-2)")


def _add_tokenizer(w: Any, folder: Path, n_vocab: int) -> None:
    import gguf

    path = folder / "tokenizer.json"
    tok = _read_json(path, "the tokenizer")
    model = tok.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise QwenCpuError(f"{path}: only byte-level BPE tokenizers are supported (model type {model.get('type')!r})")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["id"]: a for a in tok.get("added_tokens", []) if isinstance(a, dict) and "id" in a}
    rev: dict[int, str] = {i: t for t, i in vocab.items()}
    for i, a in added.items():
        rev[i] = a["content"]
    if rev and max(rev) >= n_vocab:
        raise QwenCpuError(f"{path}: token id {max(rev)} does not fit the model's {n_vocab} embedding rows")
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in rev:
            tokens.append(f"[PAD{i}]")
            types.append(5)  # UNUSED
        elif i in added:
            tokens.append(rev[i])
            types.append(_token_type(bool(added[i].get("special")), rev[i]))
        else:
            tokens.append(rev[i])
            types.append(1)  # NORMAL
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer_name(tok, path))
    w.add_token_list(tokens)
    w.add_token_types(types)
    # merges, bos/eos/pad ids, add_*_token and the chat template, as llama.cpp's converter reads them
    sv = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    if not sv.merges:
        raise QwenCpuError(f"{path}: no BPE merges")
    template_file = folder / "chat_template.jinja"
    if sv.chat_template is None and template_file.exists():
        sv.chat_template = template_file.read_text(encoding="utf-8")
    sv.add_to_gguf(w)
    if "bos" not in sv.add_special_token:
        w.add_add_bos_token(False)


def _add_hf_metadata(w: Any, c: _HFConfig, qt: QuantType) -> None:
    w.add_type("model")
    w.add_name(c.name)
    a = c.arch
    w.add_uint32(f"{a}.context_length", c.n_ctx)
    w.add_uint32(f"{a}.embedding_length", c.n_embd)
    w.add_uint32(f"{a}.feed_forward_length", c.n_ff)
    w.add_uint32(f"{a}.block_count", c.n_layer)
    w.add_uint32(f"{a}.attention.head_count", c.n_head)
    w.add_uint32(f"{a}.attention.head_count_kv", c.n_head_kv)
    w.add_float32(f"{a}.rope.freq_base", c.rope_theta)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", c.rms_eps)
    if a == "llama":
        w.add_uint32(f"{a}.vocab_size", c.n_vocab)
        w.add_uint32(f"{a}.rope.dimension_count", c.head_dim)
    if c.head_dim * c.n_head != c.n_embd:
        w.add_uint32(f"{a}.attention.key_length", c.head_dim)
        w.add_uint32(f"{a}.attention.value_length", c.head_dim)
    if c.rope_scaling:
        kind = c.rope_scaling.get("type") or c.rope_scaling.get("rope_type")
        w.add_string(f"{a}.rope.scaling.type", kind)
        w.add_float32(f"{a}.rope.scaling.factor", float(c.rope_scaling.get("factor", 1.0)))
        if kind == "yarn":
            orig = c.rope_scaling.get("original_max_position_embeddings")
            if orig:
                w.add_uint32(f"{a}.rope.scaling.original_context_length", int(orig))
    w.add_file_type(qt.file_type)
    w.add_quantization_version(2)


class _GGUFData:
    """Tensor data of a GGUF file read through a map of our own, so that the pages of rows already
    converted can be dropped (GGUFFile's map would keep the whole source resident as it is read)."""

    def __init__(self, path: Path):
        with open(path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def rows(self, offset: int, row_bytes: int, a: int, b: int) -> np.ndarray:
        """Rows [a, b) of row_bytes each from a tensor at absolute offset: uint8 (b - a, row_bytes), a copy."""
        start = offset + a * row_bytes
        out = np.frombuffer(self._map, np.uint8, (b - a) * row_bytes, start).reshape(b - a, row_bytes).copy()
        if hasattr(mmap, "MADV_DONTNEED"):
            page = start // mmap.PAGESIZE * mmap.PAGESIZE
            try:
                self._map.madvise(mmap.MADV_DONTNEED, page, start + (b - a) * row_bytes - page)
            except (OSError, ValueError):
                pass  # advice only
        return out

    def close(self) -> None:
        self._map.close()


def _gguf_source(path: Path, closers: list) -> tuple[Any, str, int, list[_Tensor]]:
    from .gguf import GGUFFile
    from .gguf_types import GGML_TYPES

    src = GGUFFile(path)  # parses and validates header, metadata and tensor ranges
    closers.append(src.close)
    arch = src.metadata.get("general.architecture")
    if arch not in ("qwen2", "llama"):
        raise QwenCpuError(f"{path}: architecture {arch!r} is not supported (qwen2, llama)")
    data = _GGUFData(path)
    closers.append(data.close)
    n_layer = int(src.metadata.get(f"{arch}.block_count", 0))
    out = []
    for name, info in src.tensors.items():
        tname = GGML_TYPES[info.ggml_type].name if info.ggml_type in GGML_TYPES else str(info.ggml_type)
        n_per_row = info.shape[-1]
        row_bytes = info.row_bytes if len(info.shape) > 1 else info.n_bytes
        if row_bytes is None:
            raise QwenCpuError(f"{path}: tensor {name!r} has type {tname}, whose layout is unknown")

        def raw(a: int, b: int, off: int = info.offset, rb: int = row_bytes, vec: bool = len(info.shape) == 1):
            return data.rows(off, rb, 0, 1).reshape(-1) if vec else data.rows(off, rb, a, b)

        def rows(a: int, b: int, raw=raw, t: int = info.ggml_type, n: int = n_per_row) -> np.ndarray:
            return _dequantize(t, raw(a, b), n)

        out.append(_Tensor(name=name, shape=tuple(info.shape), src_type=tname, read_rows=rows, raw_rows=raw,
                           raw_type=info.ggml_type, nbytes=info.n_bytes))
    return src, arch, n_layer, out


_READABLE = {F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}


def _dequantize(t: int, data: np.ndarray, n_per_row: int) -> np.ndarray:
    """Raw GGUF bytes of type t, uint8 (rows, row_bytes) or (n_bytes,) for a vector -> float32
    (rows, n_per_row) or (n,)."""
    if data.ndim == 1:
        return _dequantize(t, data.reshape(1, -1), n_per_row).reshape(-1)
    n_rows = data.shape[0]
    u8 = np.ascontiguousarray(data)
    if t == F32:
        return u8.view("<f4").astype(np.float32).reshape(n_rows, n_per_row)
    if t == F16:
        return u8.view("<f2").astype(np.float32).reshape(n_rows, n_per_row)
    if t == BF16:
        return (u8.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(n_rows, n_per_row)
    try:
        from . import _kernels
        return _kernels.dequantize(t, u8.reshape(-1), n_rows * n_per_row).reshape(n_rows, n_per_row)
    except (ImportError, AttributeError, ValueError):
        import gguf
        return gguf.quants.dequantize(u8, gguf.GGMLQuantizationType(t)).reshape(n_rows, n_per_row)


# --------------------------------------------------------------------------------------------
# writing


class _Streamed:
    """A tensor for GGUFWriter.write_tensor_data that writes itself chunk by chunk (tofile)."""

    def __init__(self, nbytes: int, chunks: Iterator[np.ndarray]):
        self.nbytes = nbytes
        self._chunks = chunks

    def tofile(self, fout: Any) -> None:
        written = 0
        for c in self._chunks:
            fout.write(memoryview(np.ascontiguousarray(c)).cast("B"))
            written += c.nbytes
        if written != self.nbytes:
            raise QwenCpuError(f"internal error: wrote {written} bytes of a {self.nbytes}-byte tensor")


_CHUNK_ELEMS = 1 << 22  # 4 Mi elements (16 MiB of float32) per conversion step


def _chunks(t: _Tensor, n_threads: int) -> Iterator[np.ndarray]:
    from . import _kernels

    n_rows = int(np.prod(t.shape[:-1])) if len(t.shape) > 1 else 1
    n_per_row = t.shape[-1]
    if len(t.shape) == 1:  # a vector: one "row"
        if t.raw_rows is not None and t.raw_type == t.out_type:
            yield np.ascontiguousarray(t.raw_rows(0, n_per_row)).view(np.uint8)
        else:
            yield _kernels.quantize(t.out_type, t.read_rows(0, n_per_row).reshape(1, -1), n_threads)
        return
    step = max(1, _CHUNK_ELEMS // n_per_row)
    step = max(t.row_align, step // t.row_align * t.row_align)
    for a in range(0, n_rows, step):
        b = min(n_rows, a + step)
        if t.raw_rows is not None and t.raw_type == t.out_type:
            yield np.ascontiguousarray(t.raw_rows(a, b)).view(np.uint8)
        else:
            x = t.read_rows(a, b).reshape(b - a, n_per_row)
            yield _kernels.quantize(t.out_type, x, n_threads)


@dataclass
class QuantizeResult:
    """What quantize_model wrote: the file, its size, tensor count per GGUF type name, seconds."""

    path: Path
    n_bytes: int
    type_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def quantize_model(src: str | os.PathLike, dst: str | os.PathLike, type: str, force: bool = False,
                   progress: bool | None = True, n_threads: int = 0) -> QuantizeResult:
    """Quantize a checkpoint folder or requantize a GGUF file into the GGUF file `dst`.

    src: a Hugging Face folder (config.json, *.safetensors [+ model.safetensors.index.json],
    tokenizer.json, tokenizer_config.json) of Qwen2ForCausalLM or LlamaForCausalLM, or a .gguf file.
    type: one of QUANT_TYPES (f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k_m q5_k_m q6_k).
    force: overwrite an existing dst. progress: a line per tensor on stderr (None: only if stderr is
    a terminal). n_threads: quantization threads (0: one per core).

    The file is written to a temporary name beside dst and renamed when complete: on any error
    (including KeyboardInterrupt or a full disk) no partial file is left. Raises QwenCpuError for
    bad input.
    """
    import gguf

    t_start = time.perf_counter()
    qt = QUANT_TYPES.get(str(type).lower())
    if qt is None:
        raise QwenCpuError(f"unknown quantization type {type!r}; choose one of {', '.join(QUANT_TYPES)}")
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.exists():
        raise QwenCpuError(f"{src_p}: no such file or folder")
    if dst_p.is_dir():
        raise QwenCpuError(f"{dst_p}: is a folder; give the output file's path")
    if dst_p.exists() and not force:
        raise QwenCpuError(f"{dst_p}: already exists (use force to overwrite)")
    if not dst_p.parent.exists():
        raise QwenCpuError(f"{dst_p.parent}: the output folder does not exist")
    if progress is None:
        progress = sys.stderr.isatty()

    closers: list[Callable[[], None]] = []
    try:
        if src_p.is_dir():
            cfg = _hf_config(src_p)
            for f in ("tokenizer.json",):
                if not (src_p / f).exists():
                    raise QwenCpuError(f"{src_p}: no {f} (the tokenizer is written into the GGUF)")
            tensors, shards = _hf_tensors(src_p, cfg)
            closers += [s.close for s in shards]
            arch, n_layer = cfg.arch, cfg.n_layer
            w = gguf.GGUFWriter(None, arch)
            _add_hf_metadata(w, cfg, qt)
            _add_tokenizer(w, src_p, cfg.n_vocab)
            add_sampling_metadata(w, src_p)  # general.sampling.* from generation_config.json
        else:
            gsrc, arch, n_layer, tensors = _gguf_source(src_p, closers)
            w = gguf.GGUFWriter(None, arch)
            _copy_gguf_metadata(w, gsrc)
            w.add_file_type(qt.file_type)
            w.add_quantization_version(2)

        has_output = any(t.name == "output.weight" for t in tensors)
        counts: dict[str, int] = {}
        for t in tensors:
            if len(t.shape) == 1 and t.raw_type is not None:
                t.out_type = t.raw_type  # GGUF vectors are copied as they are
            else:
                t.out_type = tensor_type(t.name, t.shape, qt, n_layer, has_output)
            if t.raw_type is not None and t.out_type != t.raw_type and t.raw_type not in _READABLE:
                raise QwenCpuError(f"{src_p}: tensor {t.name!r} is {t.src_type}, which cannot be requantized "
                                   f"(readable: {', '.join(_TYPE_NAMES[x] for x in sorted(_READABLE))})")
            n_rows = int(np.prod(t.shape[:-1])) if len(t.shape) > 1 else 1
            if t.out_type != t.raw_type:  # converted; else copied with the source's byte count
                t.nbytes = n_rows * _row_bytes(t.out_type, t.shape[-1])
            w.add_tensor_info(t.name, (*t.shape[:-1], t.nbytes // n_rows), np.dtype(np.uint8), t.nbytes,
                              raw_dtype=gguf.GGMLQuantizationType(t.out_type))
            counts[_type_name(t.out_type)] = counts.get(_type_name(t.out_type), 0) + 1
        return _write(w, tensors, dst_p, progress, n_threads, counts, t_start)
    finally:
        for c in closers:
            c()


def _copy_gguf_metadata(w: Any, src: Any) -> None:
    import gguf

    skip = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}
    for key, val in src.metadata.items():
        if key in skip or key.startswith("split."):
            continue
        vt = src.metadata_types[key]
        if isinstance(vt, tuple):
            items = val.tolist() if isinstance(val, np.ndarray) else list(val)  # list of str from a StringArray
            if len(items) == 0:
                continue
            w.add_key_value(key, items, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType(int(vt[1])))
        else:
            v = val.item() if isinstance(val, np.generic) else val
            w.add_key_value(key, v, gguf.GGUFValueType(int(vt)))


def _write(w: Any, tensors: list[_Tensor], dst: Path, progress: bool, n_threads: int,
           counts: dict[str, int], t_start: float) -> QuantizeResult:
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the model private to its writer
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        n = len(tensors)
        bar = Bar(total=sum(t.nbytes for t in tensors), desc=dst.name, unit="B", unit_scale=True,
                  disable=not progress)  # drawn on a terminal only
        for i, t in enumerate(tensors):
            t0 = time.perf_counter()
            w.write_tensor_data(_Streamed(t.nbytes, _chunks(t, n_threads)))
            t.release()
            bar.update(t.nbytes)
            if progress:
                shape = "x".join(str(d) for d in t.shape)
                bar.write(f"[{i + 1:4d}/{n}] {t.name:<28} {shape:>12} {t.src_type:>5} -> {_type_name(t.out_type):<5}"
                          f" {t.nbytes / 2**20:9.2f} MiB {time.perf_counter() - t0:6.2f} s", file=sys.stderr)
        bar.close()
        w.flush()
        os.fsync(w.fout[0].fileno())
        w.close()
        os.replace(tmp, dst)
    except OSError as e:
        _discard(w, tmp)
        raise QwenCpuError(f"{dst}: writing failed: {e.strerror or e}") from e
    except BaseException:
        _discard(w, tmp)
        raise
    size = dst.stat().st_size
    if progress:
        print(f"wrote {dst} ({size / 2**20:.1f} MiB, {time.perf_counter() - t_start:.1f} s)", file=sys.stderr)
    return QuantizeResult(dst, size, counts, time.perf_counter() - t_start)


def _discard(w: Any, tmp: Path) -> None:
    try:
        w.close()
    except Exception:  # noqa: BLE001 - the original error matters, not this one
        pass
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass

