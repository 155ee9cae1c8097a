"""Model hyper-parameters from GGUF metadata (keys named `{arch}.*`, as llama.cpp writes them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from .arch import ARCHES
from .errors import QwenCpuError
from .gguf_types import GGML_TYPES

# Architectures we run (their tensors: arch.py): qwen2 (Qwen2.5 and its fine-tunes and distills),
# qwen3 (dense), llama (SmolLM2, Llama 3.x), and the mixtures of experts qwen2moe (Qwen1.5/Qwen2-MoE:
# qwen2's attention, a shared expert) and qwen3moe (qwen3's attention).
SUPPORTED_ARCHITECTURES = tuple(ARCHES)
MOE_ARCHITECTURES = ("qwen2moe", "qwen3moe")
# Whether the top-k routing weights are renormalised when the file has no expert_weights_norm
# key: llama.cpp's fixed choice per architecture (qwen2moe: no; qwen3moe: yes), which is the
# norm_topk_prob of the released models' config.json.
EXPERT_WEIGHTS_NORM = {"qwen2moe": False, "qwen3moe": True}
ROPE_SCALING_TYPES = ("none", "linear", "yarn")  # rope.scaling.type values we run
MAX_ROPE_SCALE = 1024.0
# KV cache element types (llama.cpp's -ctk/-ctv names) -> ggml type id; the quantized ones store a
# (position, kv head) row as head_dim/32 blocks of 32 values (csrc/ops.h kv_row_bytes).
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "q4_0": 2}
DEFAULT_KV_TYPE = "f16"
KvType = tuple[str, str]  # (K type, V type)


def check_kv_type(kv_type: str | Sequence[str]) -> KvType:
    """(K type, V type) from one name for both ('f16', 'q8_0', ...) or a (k, v) pair of names."""
    names = [kv_type, kv_type] if isinstance(kv_type, str) else kv_type
    if isinstance(names, (list, tuple)) and len(names) == 2 and all(isinstance(n, str) and n in KV_TYPES for n in names):
        return names[0], names[1]
    raise QwenCpuError(f"kv_type must be one of {', '.join(KV_TYPES)} or a (K, V) pair of them, got {kv_type!r}")


def kv_row_bytes(kv_type: str, head_dim: int) -> int:
    """Bytes of one cached (position, kv head) row of head_dim values of a KV cache type."""
    t = GGML_TYPES[KV_TYPES[kv_type]]
    return head_dim // t.block_elems * t.block_bytes


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_kv_head: int
    head_dim: int
    n_vocab: int
    n_ctx_train: int
    rms_eps: float
    rope_freq_base: float
    rope_neox: bool
    rope_freq_scale: float = 1.0  # 1 / scaling factor
    rope_ext_factor: float = 0.0  # YaRN: 1 mixes interpolated and extrapolated frequencies
    rope_attn_factor: float = 1.0
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_n_ctx_orig: int = 0
    # mixture of experts (n_expert 0: a dense FFN of n_ff)
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0  # the shared expert's FFN length, 0: none
    expert_weights_norm: bool = False

    def kernel_config(self, kv_type: KvType, **run: Any) -> Any:
        """The `_kernels.ModelConfig` that `_kernels.Model` takes: these fields (but the file-only
        arch and n_ctx_train), the KV cache types (checked by check_kv_heads) and the run settings
        (n_ctx, n_batch, n_seq, repack, ...), set by name: a name the C++ struct lacks raises
        AttributeError."""
        from . import _kernels

        kc = _kernels.ModelConfig()
        for f in fields(self):
            if f.name not in ("arch", "n_ctx_train"):
                setattr(kc, f.name, getattr(self, f.name))
        kc.kv_k, kc.kv_v = KV_TYPES[kv_type[0]], KV_TYPES[kv_type[1]]
        for name, value in run.items():
            setattr(kc, name, value)
        return kc

    def kv_type_fits(self, name: str) -> bool:
        """Whether a KV cache type's rows hold head_dim values (its blocks divide head_dim)."""
        return self.head_dim % GGML_TYPES[KV_TYPES[name]].block_elems == 0

    def check_kv_heads(self, kv_type: KvType) -> None:
        """Refuse a quantized KV cache type whose blocks do not divide head_dim, naming it."""
        for which, name in zip("KV", kv_type):
            block = GGML_TYPES[KV_TYPES[name]].block_elems
            if not self.kv_type_fits(name):
                raise QwenCpuError(f"KV cache type {name} ({which}) stores blocks of {block} values, but this model's "
                                   f"head_dim {self.head_dim} is not a multiple of {block}; use f16 or f32")

    def kv_cache_bytes(self, n_ctx: int, kv_type: KvType = (DEFAULT_KV_TYPE, DEFAULT_KV_TYPE)) -> int:
        """Bytes of the K and V caches for n_ctx positions with these (K, V) types."""
        return self.n_layer * self.n_kv_head * n_ctx * sum(kv_row_bytes(t, self.head_dim) for t in kv_type)


def _get(meta: Mapping[str, Any], key: str, kind: type, default: Any = None) -> Any:
    if key not in meta:
        if default is None:
            raise QwenCpuError(f"GGUF metadata lacks the required key {key!r}")
        return default
    value = meta[key]
    try:
        if kind is int:
            if isinstance(value, bool) or int(value) != value:
                raise ValueError
            return int(value)
        if kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError
            return value
        return kind(value)
    except (TypeError, ValueError):
        raise QwenCpuError(f"GGUF metadata key {key!r} has an invalid value {value!r}") from None


def config_from_gguf(meta: Mapping[str, Any], n_vocab: int, rope_scaling: str | None = None,
                     rope_scale: float | None = None) -> ModelConfig:
    """Hyper-parameters of a GGUF file (an architecture of arch.py); n_vocab is the token embedding's row count.
    rope_scaling / rope_scale (checked by check_rope_scaling) replace the file's RoPE scaling type
    and factor: a file without YaRN keys runs with YaRN over its training context this way."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise QwenCpuError(
            f"unsupported architecture {arch!r} (general.architecture); qwen-cpu runs {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    p = arch + "."
    n_embd = _get(meta, p + "embedding_length", int)
    n_head = _get(meta, p + "attention.head_count", int)
    n_kv_head = _get(meta, p + "attention.head_count_kv", int, n_head)
    if n_head <= 0 or n_kv_head <= 0 or n_embd <= 0 or n_head % n_kv_head:
        raise QwenCpuError(f"invalid head counts: {n_head} query heads, {n_kv_head} key/value heads, embedding {n_embd}")
    if p + "attention.key_length" not in meta and n_embd % n_head:
        raise QwenCpuError(f"embedding_length {n_embd} is not a multiple of head_count {n_head}")
    head_dim = _get(meta, p + "attention.key_length", int, n_embd // n_head)
    rope_dims = _get(meta, p + "rope.dimension_count", int, head_dim)
    if rope_dims != head_dim:
        raise QwenCpuError(f"partial rotary embeddings ({rope_dims} of {head_dim} dims) are not supported")
    cfg = dict(
        arch=arch,
        n_layer=_get(meta, p + "block_count", int),
        n_embd=n_embd,
        n_ff=_get(meta, p + "feed_forward_length", int),
        n_head=n_head,
        n_kv_head=n_kv_head,
        head_dim=head_dim,
        n_vocab=n_vocab,
        n_ctx_train=_get(meta, p + "context_length", int),
        rms_eps=_get(meta, p + "attention.layer_norm_rms_epsilon", float),
        rope_freq_base=_get(meta, p + "rope.freq_base", float, 10000.0),
        rope_neox=ARCHES[arch].rope_neox,
    )
    if arch in MOE_ARCHITECTURES:
        cfg.update(_moe_config(meta, p, arch))
    scaling = str(meta.get(p + "rope.scaling.type", "none"))
    if scaling not in ROPE_SCALING_TYPES:
        raise QwenCpuError(f"unsupported RoPE scaling type {scaling!r} ({p}rope.scaling.type)")
    factor = _get(meta, p + "rope.scaling.factor", float, 0.0)
    if rope_scaling is not None:  # the caller's choice replaces the file's
        scaling, factor = rope_scaling, rope_scale if rope_scale is not None else factor
    elif rope_scale is not None:
        if scaling == "none":
            raise QwenCpuError("rope_scale needs a RoPE scaling type: the file has none (give rope_scaling "
                               "'yarn' or 'linear')")
        factor = rope_scale
    if scaling != "none" and factor > 0:  # (a file's missing factor: frequencies unscaled, as before)
        cfg["rope_freq_scale"] = 1.0 / factor
    if scaling == "yarn":
        cfg["rope_ext_factor"] = 1.0
        # A file without YaRN keys (turned on by the caller): its training context is the original one,
        # as Qwen2.5's model cards assume (factor 4 over 32768).
        cfg["rope_n_ctx_orig"] = _get(meta, p + "rope.scaling.original_context_length", int, cfg["n_ctx_train"])
        cfg["rope_attn_factor"] = _get(meta, p + "rope.scaling.attn_factor", float, 1.0)
        cfg["rope_beta_fast"] = _get(meta, p + "rope.scaling.yarn_beta_fast", float, 32.0)
        cfg["rope_beta_slow"] = _get(meta, p + "rope.scaling.yarn_beta_slow", float, 1.0)
        if cfg["rope_n_ctx_orig"] <= 0:
            raise QwenCpuError(f"YaRN needs a positive original context, got {cfg['rope_n_ctx_orig']}")
    return ModelConfig(**cfg)


def _moe_config(meta: Mapping[str, Any], p: str, arch: str) -> dict[str, Any]:
    n_expert = _get(meta, p + "expert_count", int)
    n_used = _get(meta, p + "expert_used_count", int)
    if not 0 < n_used <= n_expert:
        raise QwenCpuError(f"{p}expert_used_count {n_used} must be in 1 .. expert_count {n_expert}")
    # without the keys, llama.cpp's defaults: n_ff split over the used experts; a shared expert of n_ff
    n_ff = _get(meta, p + "feed_forward_length", int)
    n_ff_exp = _get(meta, p + "expert_feed_forward_length", int, n_ff // n_used)
    n_ff_shexp = _get(meta, p + "expert_shared_feed_forward_length", int, n_ff) if arch == "qwen2moe" else 0
    if n_ff_exp <= 0 or n_ff_shexp < 0:
        raise QwenCpuError(f"invalid expert feed-forward lengths {n_ff_exp}, shared {n_ff_shexp}")
    norm = meta.get(p + "expert_weights_norm", EXPERT_WEIGHTS_NORM[arch])
    if not isinstance(norm, (bool, int)):
        raise QwenCpuError(f"GGUF metadata key {p}expert_weights_norm has an invalid value {norm!r}")
    return dict(n_expert=n_expert, n_expert_used=n_used, n_ff_exp=n_ff_exp, n_ff_shexp=n_ff_shexp,
                expert_weights_norm=bool(norm))


def check_rope_scaling(rope_scaling: str | None, rope_scale: float | None) -> tuple[str | None, float | None]:
    """The caller's RoPE scaling choice checked: rope_scaling None (the file's), 'none', 'linear' or
    'yarn'; rope_scale None (the file's factor) or a factor in [1, MAX_ROPE_SCALE]."""
    if rope_scaling is not None and rope_scaling not in ROPE_SCALING_TYPES:
        raise QwenCpuError(f"rope_scaling must be one of {', '.join(ROPE_SCALING_TYPES)}, got {rope_scaling!r}")
    if rope_scale is not None:
        if isinstance(rope_scale, bool) or not isinstance(rope_scale, (int, float)) or not math.isfinite(rope_scale) \
                or not 1.0 <= rope_scale <= MAX_ROPE_SCALE:
            raise QwenCpuError(f"rope_scale must be a number in [1, {MAX_ROPE_SCALE:g}], got {rope_scale!r}")
        if rope_scaling == "none":
            raise QwenCpuError("rope_scale has no meaning with rope_scaling 'none'")
        rope_scale = float(rope_scale)
    if rope_scaling in ("linear", "yarn") and rope_scale is None:
        raise QwenCpuError(f"rope_scaling {rope_scaling!r} needs rope_scale (the factor, e.g. 4)")
    return rope_scaling, rope_scale
