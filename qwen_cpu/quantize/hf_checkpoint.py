"""The Hugging Face checkpoint source: config.json, the safetensors shards (mapped, rows converted on
demand), the tokenizer and the GGUF metadata they imply, for Qwen2ForCausalLM and LlamaForCausalLM."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import QwenCpuError
from ..safetensors_io import SafetensorsFile
from .recipes import LAYER, QuantType
from .source import SourceTensor


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


def hf_config(folder: Path) -> _HFConfig:
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


def hf_tensors(folder: Path, c: _HFConfig) -> tuple[list[SourceTensor], list[SafetensorsFile]]:
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
        t = SourceTensor(name=g, shape=e.shape, src_type=e.dtype,
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


def _ordered(tensors: list[SourceTensor]) -> list[SourceTensor]:
    """token_embd, the blocks in layer order (names sorted within a block), output_norm, output."""
    def key(t: SourceTensor) -> tuple:
        m = LAYER.match(t.name)
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


def add_tokenizer(w: Any, folder: Path, n_vocab: int) -> None:
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


def add_hf_metadata(w: Any, c: _HFConfig, qt: QuantType) -> None:
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
