"""The Hugging Face checkpoint source: config.json, the safetensors shards (mapped, rows converted on
demand), the tokenizer and the GGUF metadata they imply, for the architectures of qwen_cpu/arch.py
(Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM); tensor
names and shapes come from its table (experts: stacked from one matrix per expert)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..arch import ARCHES, Arch, TensorSpec, dims, shape_of
from ..config import EXPERT_WEIGHTS_NORM, MOE_ARCHITECTURES
from ..errors import QwenCpuError
from ..safetensors_io import SafetensorsFile
from .recipes import LAYER, QuantType
from .source import SourceTensor


_HF_ARCHES = {cls: a.name for a in ARCHES.values() for cls in a.hf_classes}
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_HF_EXPERT = re.compile(r"^model\.layers\.(\d+)\.(mlp\.experts\.)(\d+)(\..+)$")  # one expert's matrix


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
    n_kv_head: int
    head_dim: int
    n_vocab: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool
    rope_scaling: dict | None
    name: str
    explicit_head_dim: bool = False  # config.json names head_dim (llama.cpp then writes attention.key_length)
    # mixture of experts (qwen2moe, qwen3moe); n_expert 0: a dense FFN
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    norm_topk: bool | None = None  # norm_topk_prob when config.json differs from the architecture's default

    @property
    def schema(self) -> Arch:
        return ARCHES[self.arch]


def hf_config(folder: Path) -> _HFConfig:
    cfg = _read_json(folder / "config.json", "the model's config")
    archs = cfg.get("architectures") or []
    arch = next((_HF_ARCHES[a] for a in archs if a in _HF_ARCHES), None)
    if arch is None and not archs:
        arch = cfg.get("model_type") if cfg.get("model_type") in ARCHES else None
    if arch is None:
        raise QwenCpuError(f"{folder}: unsupported model (architectures {archs}, model_type "
                           f"{cfg.get('model_type')!r}); supported: {sorted(_HF_ARCHES)}")

    def need(key: str) -> int:
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise QwenCpuError(f"{folder / 'config.json'}: {key} is {v!r}, expected a positive integer")
        return v

    n_embd, n_head = need("hidden_size"), need("num_attention_heads")
    n_kv_head = need("num_key_value_heads") if "num_key_value_heads" in cfg else n_head
    head_dim = need("head_dim") if cfg.get("head_dim") is not None else n_embd // n_head
    explicit_head_dim = cfg.get("head_dim") is not None
    if n_head % n_kv_head != 0 or (not explicit_head_dim and head_dim * n_head != n_embd) or head_dim % 2:
        raise QwenCpuError(f"{folder / 'config.json'}: {n_head} heads of {head_dim}, {n_kv_head} kv heads and "
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
        has_freqs = any(t.gguf == "rope_freqs.weight" for t in ARCHES[arch].tensors)
        kinds = ("yarn", "linear", "llama3") if has_freqs else ("yarn", "linear")
        if kind not in kinds:
            raise QwenCpuError(f"{folder / 'config.json'}: rope_scaling type {kind!r} is not supported "
                               f"for {arch} (supported: {', '.join(kinds)})")
    moe = {}
    if arch in MOE_ARCHITECTURES:
        moe = _moe_hparams(folder, cfg, arch, need)
    return _HFConfig(
        arch=arch, n_embd=n_embd, n_ff=need("intermediate_size"), n_layer=need("num_hidden_layers"),
        n_head=n_head, n_kv_head=int(n_kv_head), head_dim=int(head_dim), n_vocab=need("vocab_size"),
        n_ctx=int(cfg.get("max_position_embeddings") or 4096), rope_theta=rope_theta,
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)), tied=bool(cfg.get("tie_word_embeddings", False)),
        rope_scaling=rs, name=folder.resolve().name, explicit_head_dim=explicit_head_dim, **moe,
    )


def _moe_hparams(folder: Path, cfg: dict, arch: str, need: Callable[[str], int]) -> dict[str, Any]:
    """The experts' hyper-parameters of a Qwen2Moe/Qwen3Moe config.json."""
    where = folder / "config.json"
    if cfg.get("decoder_sparse_step", 1) != 1 or cfg.get("mlp_only_layers"):
        raise QwenCpuError(f"{where}: layers with a dense FFN (decoder_sparse_step "
                           f"{cfg.get('decoder_sparse_step')}, mlp_only_layers {cfg.get('mlp_only_layers')}) "
                           "are not supported: every layer must be a mixture of experts")
    # (released configs name num_experts; transformers 5 writes Qwen3Moe's as num_local_experts)
    n_expert = need("num_local_experts" if "num_local_experts" in cfg else "num_experts")
    n_used = need("num_experts_per_tok")
    if n_used > n_expert:
        raise QwenCpuError(f"{where}: num_experts_per_tok {n_used} exceeds num_experts {n_expert}")
    norm = cfg.get("norm_topk_prob", False)
    return dict(n_expert=n_expert, n_expert_used=n_used, n_ff_exp=need("moe_intermediate_size"),
                n_ff_shexp=need("shared_expert_intermediate_size") if arch == "qwen2moe" else 0,
                norm_topk=None if bool(norm) == EXPERT_WEIGHTS_NORM[arch] else bool(norm))


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


def _gguf_name(hf: str, schema: Arch) -> tuple[str, TensorSpec] | None:
    """(GGUF name, spec) of an HF checkpoint tensor name, or None if the table lacks it."""
    m = _HF_LAYER.match(hf)
    for t in schema.tensors:
        if t.hf is None:
            continue
        if t.per_layer and m and m.group(2) == t.hf:
            return f"blk.{int(m.group(1))}.{t.gguf}", t
        if not t.per_layer and hf == t.hf:
            return t.gguf, t
    return None


def llama3_rope_factors(rs: dict, rope_theta: float, head_dim: int) -> np.ndarray:
    """rope_freqs (head_dim/2) float32 of Llama 3.1+ rope scaling, as llama.cpp's converter writes
    it: per frequency, 1 above the high-frequency band's wavelength limit, `factor` below the
    low-frequency one, and in between the inverse of the smooth mix HF's llama3 rope applies."""
    factor = float(rs.get("factor", 8.0))
    low, high = float(rs.get("low_freq_factor", 1.0)), float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * rope_theta ** (i / head_dim)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, np.float32)


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
    schema, d = c.schema, dims(c)
    found: dict[str, tuple[str, SafetensorsFile, TensorSpec]] = {}
    unknown = []
    experts: dict[str, tuple[TensorSpec, dict[int, tuple[str, SafetensorsFile]]]] = {}
    for hf, st in by_name.items():
        m = _HF_EXPERT.match(hf)
        spec = m and next((t for t in schema.tensors if t.hf == f"{m.group(2)}{{e}}{m.group(4)}"), None)
        if spec:  # stacked into the 3-D tensor below
            experts.setdefault(f"blk.{int(m.group(1))}.{spec.gguf}", (spec, {}))[1][int(m.group(3))] = (hf, st)
            continue
        g = _gguf_name(hf, schema)
        if g is None:
            if not hf.endswith("rotary_emb.inv_freq"):
                unknown.append(hf)
            continue
        if g[0] == "output.weight" and c.tied:
            continue  # tied: the embedding is the output
        found[g[0]] = (hf, st, g[1])
    if unknown:
        raise QwenCpuError(f"{folder}: tensors this converter does not know for {c.arch}: "
                           f"{', '.join(sorted(unknown)[:5])}" + (" ..." if len(unknown) > 5 else ""))
    wanted = dict(schema.gguf_names(c.n_layer))
    stacked = [_stacked_experts(g, spec, parts, c, d, g in wanted) for g, (spec, parts) in experts.items()]
    missing = [n for n, t in wanted.items() if n not in found and n not in experts and t.hf is not None
               and not (t.optional and (n != "output.weight" or c.tied))]
    if missing:
        raise QwenCpuError(f"{folder}: missing tensors for a {c.n_layer}-layer {c.arch} model: "
                           f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    out = []
    for g, (hf, st, spec) in found.items():
        e = st.tensors[hf]
        if g not in wanted:
            raise QwenCpuError(f"{st.path}: tensor {hf!r} does not belong to a {c.n_layer}-layer model "
                               "(num_hidden_layers in config.json)")
        want = shape_of(spec, d)
        if e.shape != want:
            raise QwenCpuError(f"{st.path}: tensor {hf!r} has shape {e.shape}, but config.json implies {want}")
        permute = not schema.rope_neox and (".attn_q." in g or ".attn_k." in g)
        t = SourceTensor(name=g, shape=e.shape, src_type=e.dtype,
                    read_rows=_hf_reader(st, hf, permute and len(e.shape) == 2, c.head_dim),
                    release=(lambda st=st, hf=hf: st.release(hf)))
        if permute:
            if len(e.shape) == 1:  # a bias is permuted like the rows it belongs to
                t.read_rows = (lambda a, b, st=st, hf=hf, n=e.shape[0]:
                               _permute_rows(st.rows(hf, 0, n).reshape(-1, 1), c.head_dim).reshape(-1)[a:b])
            t.row_align = c.head_dim
        out.append(t)
    out += stacked
    rs = c.rope_scaling or {}
    if (rs.get("type") or rs.get("rope_type")) == "llama3":
        factors = llama3_rope_factors(rs, c.rope_theta, c.head_dim)
        out.append(SourceTensor(name="rope_freqs.weight", shape=factors.shape, src_type="F32",
                                read_rows=lambda a, b, f=factors: f[a:b]))
    return _ordered(out), shards


def _stacked_experts(g: str, spec: TensorSpec, parts: dict[int, tuple[str, SafetensorsFile]], c: _HFConfig,
                     d: dict[str, int], wanted: bool) -> SourceTensor:
    """One 3-D GGUF tensor (n_expert, rows, cols) from the checkpoint's per-expert matrices, expert e's
    rows e*rows .. as llama.cpp's converter stacks them (torch.stack over the expert index)."""
    shape = shape_of(spec, d)
    some = next(iter(parts.values()))
    if not wanted:
        raise QwenCpuError(f"{some[1].path}: tensor {some[0]!r} does not belong to a {c.n_layer}-layer model "
                           "(num_hidden_layers in config.json)")
    if sorted(parts) != list(range(shape[0])):
        lacking = sorted(set(range(shape[0])) - set(parts))
        raise QwenCpuError(f"{Path(some[1].path).parent}: {g}: experts {lacking[:5] or sorted(parts)[-1:]} of "
                           f"{shape[0]} (num_experts) missing or extra in the checkpoint")
    for hf, st in parts.values():
        if st.tensors[hf].shape != shape[1:]:
            raise QwenCpuError(f"{st.path}: tensor {hf!r} has shape {st.tensors[hf].shape}, but config.json "
                               f"implies {shape[1:]}")
    rows = shape[1]

    def read(a: int, b: int) -> np.ndarray:
        out = []
        for e in range(a // rows, (b - 1) // rows + 1):
            hf, st = parts[e]
            out.append(st.rows(hf, max(a, e * rows) - e * rows, min(b, (e + 1) * rows) - e * rows))
        return np.concatenate(out) if len(out) > 1 else out[0]

    def release() -> None:
        for hf, st in parts.values():
            st.release(hf)

    return SourceTensor(name=g, shape=shape, src_type=st.tensors[hf].dtype, read_rows=read, release=release)


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
        return ({"rope_freqs.weight": -1, "token_embd.weight": 0, "output_norm.weight": 2,
                 "output.weight": 3}.get(t.name, 4), 0, t.name)
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
    w.add_uint32(f"{a}.attention.head_count_kv", c.n_kv_head)
    w.add_float32(f"{a}.rope.freq_base", c.rope_theta)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", c.rms_eps)
    if a == "llama":
        w.add_uint32(f"{a}.vocab_size", c.n_vocab)
        w.add_uint32(f"{a}.rope.dimension_count", c.head_dim)
    if c.explicit_head_dim or c.head_dim * c.n_head != c.n_embd:  # (llama.cpp: whenever config.json has head_dim)
        w.add_uint32(f"{a}.attention.key_length", c.head_dim)
        w.add_uint32(f"{a}.attention.value_length", c.head_dim)
    kind = c.rope_scaling and (c.rope_scaling.get("type") or c.rope_scaling.get("rope_type"))
    if kind in ("linear", "yarn"):  # (llama3: the rope_freqs tensor, no keys)
        w.add_string(f"{a}.rope.scaling.type", kind)
        w.add_float32(f"{a}.rope.scaling.factor", float(c.rope_scaling.get("factor", 1.0)))
        if kind == "yarn":
            orig = c.rope_scaling.get("original_max_position_embeddings")
            if orig:
                w.add_uint32(f"{a}.rope.scaling.original_context_length", int(orig))
    if c.n_expert:  # the keys llama.cpp's converter writes for Qwen2Moe / Qwen3Moe
        w.add_uint32(f"{a}.expert_count", c.n_expert)
        w.add_uint32(f"{a}.expert_used_count", c.n_expert_used)
        w.add_uint32(f"{a}.expert_feed_forward_length", c.n_ff_exp)
        if c.n_ff_shexp:
            w.add_uint32(f"{a}.expert_shared_feed_forward_length", c.n_ff_shexp)
        if c.norm_topk is not None:  # ours only: llama.cpp fixes the choice per architecture
            w.add_bool(f"{a}.expert_weights_norm", c.norm_topk)
    w.add_file_type(qt.file_type)
    w.add_quantization_version(2)
