"""The model schema, once per architecture: every tensor of its GGUF file with its Hugging Face
checkpoint name, its shape in the hyper-parameters and whether it may be absent. The loader
(model.py), its validation and the quantizer's HF map (quantize/hf_checkpoint.py) all read this
table; the C++ forward pass knows the same tensors by GGUF name (csrc/model.cpp kTensorSlots,
`_kernels.tensor_slots()`; tests/test_arch.py checks the two agree).

Shapes are numpy order (rows first), in the names of `dims()`. Per-layer tensors are named after
"blk.N." (GGUF) and "model.layers.N." (HF). A 3-D shape (e.g. experts, rows, cols) is stored as
rows = the product of all but the last dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class TensorSpec:
    gguf: str                 # GGUF name (per-layer ones after "blk.N.")
    hf: str | None            # HF checkpoint name (per-layer ones after "model.layers.N."); None: computed by the converter
    shape: tuple[str, ...]    # numpy order, names of dims()
    optional: bool = False    # a file of this architecture may lack it
    per_layer: bool = True


@dataclass(frozen=True)
class Arch:
    name: str                 # general.architecture
    hf_classes: tuple[str, ...]  # config.json "architectures"
    tensors: tuple[TensorSpec, ...]
    # RoPE pairs dims (i, i + head_dim/2) (HF's rotate-half, llama.cpp's NEOX); else (2i, 2i+1), over
    # Q/K rows that llama.cpp's converter permuted from HF's order (quantize/hf_checkpoint.py does too)
    rope_neox: bool

    def spec(self, gguf_name: str) -> TensorSpec | None:
        """The spec of a full GGUF tensor name ("blk.3.attn_q.weight"), or None if not in this table."""
        per_layer, suffix = False, gguf_name
        if gguf_name.startswith("blk."):
            parts = gguf_name.split(".", 2)
            if len(parts) < 3 or not parts[1].isdigit():
                return None
            per_layer, suffix = True, parts[2]
        return next((t for t in self.tensors if t.gguf == suffix and t.per_layer == per_layer), None)

    def gguf_names(self, n_layer: int) -> Iterator[tuple[str, TensorSpec]]:
        """(full GGUF name, spec) of every tensor a model of n_layer blocks may have: the global
        ones, then the blocks in order."""
        for t in self.tensors:
            if not t.per_layer:
                yield t.gguf, t
        for i in range(n_layer):
            for t in self.tensors:
                if t.per_layer:
                    yield f"blk.{i}.{t.gguf}", t


def dims(c: Any) -> dict[str, int]:
    """The dimension names of the shapes, from a config with n_embd, n_ff, n_vocab, n_head,
    n_kv_head and head_dim (config.ModelConfig or the quantizer's HF config)."""
    return {"n_embd": c.n_embd, "n_ff": c.n_ff, "n_vocab": c.n_vocab, "head_dim": c.head_dim,
            "rope_pairs": c.head_dim // 2, "q_dim": c.n_head * c.head_dim, "kv_dim": c.n_kv_head * c.head_dim,
            "one": 1, "n_expert": getattr(c, "n_expert", 0), "n_ff_exp": getattr(c, "n_ff_exp", 0),
            "n_ff_shexp": getattr(c, "n_ff_shexp", 0)}


def shape_of(spec: TensorSpec, d: dict[str, int]) -> tuple[int, ...]:
    """A spec's numpy shape under the dims d."""
    return tuple(d[name] for name in spec.shape)


def _block(*extra: TensorSpec) -> tuple[TensorSpec, ...]:
    """The decoder block of qwen2/llama (Q/K/V biases optional), with extra tensors after Q/K/V."""
    return (
        TensorSpec("attn_norm.weight", "input_layernorm.weight", ("n_embd",)),
        TensorSpec("attn_q.weight", "self_attn.q_proj.weight", ("q_dim", "n_embd")),
        TensorSpec("attn_k.weight", "self_attn.k_proj.weight", ("kv_dim", "n_embd")),
        TensorSpec("attn_v.weight", "self_attn.v_proj.weight", ("kv_dim", "n_embd")),
        TensorSpec("attn_q.bias", "self_attn.q_proj.bias", ("q_dim",), optional=True),
        TensorSpec("attn_k.bias", "self_attn.k_proj.bias", ("kv_dim",), optional=True),
        TensorSpec("attn_v.bias", "self_attn.v_proj.bias", ("kv_dim",), optional=True),
        *extra,
        TensorSpec("attn_output.weight", "self_attn.o_proj.weight", ("n_embd", "q_dim")),
        TensorSpec("ffn_norm.weight", "post_attention_layernorm.weight", ("n_embd",)),
        TensorSpec("ffn_gate.weight", "mlp.gate_proj.weight", ("n_ff", "n_embd")),
        TensorSpec("ffn_up.weight", "mlp.up_proj.weight", ("n_ff", "n_embd")),
        TensorSpec("ffn_down.weight", "mlp.down_proj.weight", ("n_embd", "n_ff")),
    )


_GLOBAL = (
    TensorSpec("token_embd.weight", "model.embed_tokens.weight", ("n_vocab", "n_embd"), per_layer=False),
    TensorSpec("output_norm.weight", "model.norm.weight", ("n_embd",), per_layer=False),
    # absent when the embeddings are tied (the token embeddings are the output matrix)
    TensorSpec("output.weight", "lm_head.weight", ("n_vocab", "n_embd"), optional=True, per_layer=False),
)

# Llama 3.1+ rope scaling: each pair's frequency divided by its factor (the converter computes them
# from config.json's rope_scaling, quantize/hf_checkpoint.py llama3_rope_factors)
_ROPE_FREQS = TensorSpec("rope_freqs.weight", None, ("rope_pairs",), optional=True, per_layer=False)

_QK_NORM = (  # qwen3: RMSNorm over each query / key head before RoPE
    TensorSpec("attn_q_norm.weight", "self_attn.q_norm.weight", ("head_dim",)),
    TensorSpec("attn_k_norm.weight", "self_attn.k_norm.weight", ("head_dim",)),
)

# A mixture-of-experts FFN instead of the dense one: the router, then n_expert experts stored as
# 3-D tensors; HF checkpoints hold one matrix per expert ("{e}": the expert's index), which the
# quantizer stacks as llama.cpp's converter does (quantize/hf_checkpoint.py).
_DENSE_FFN = ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")
_EXPERTS = (
    TensorSpec("ffn_gate_inp.weight", "mlp.gate.weight", ("n_expert", "n_embd")),
    TensorSpec("ffn_gate_exps.weight", "mlp.experts.{e}.gate_proj.weight", ("n_expert", "n_ff_exp", "n_embd")),
    TensorSpec("ffn_up_exps.weight", "mlp.experts.{e}.up_proj.weight", ("n_expert", "n_ff_exp", "n_embd")),
    TensorSpec("ffn_down_exps.weight", "mlp.experts.{e}.down_proj.weight", ("n_expert", "n_embd", "n_ff_exp")),
)
_SHARED_EXPERT = (  # qwen2moe: one more expert every token uses, scaled by sigmoid(gate_inp_shexp . x)
    TensorSpec("ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight", ("one", "n_embd")),
    TensorSpec("ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight", ("n_ff_shexp", "n_embd")),
    TensorSpec("ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight", ("n_ff_shexp", "n_embd")),
    TensorSpec("ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight", ("n_embd", "n_ff_shexp")),
)


def _moe_block(*extra: TensorSpec, ffn: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    return tuple(t for t in _block(*extra) if t.gguf not in _DENSE_FFN) + ffn


ARCHES: dict[str, Arch] = {a.name: a for a in (
    Arch("qwen2", ("Qwen2ForCausalLM",), _GLOBAL + _block(), rope_neox=True),
    Arch("llama", ("LlamaForCausalLM",), _GLOBAL + (_ROPE_FREQS,) + _block(), rope_neox=False),
    Arch("qwen3", ("Qwen3ForCausalLM",), _GLOBAL + _block(*_QK_NORM), rope_neox=True),
    Arch("qwen2moe", ("Qwen2MoeForCausalLM",), _GLOBAL + _moe_block(ffn=_EXPERTS + _SHARED_EXPERT), rope_neox=True),
    Arch("qwen3moe", ("Qwen3MoeForCausalLM",), _GLOBAL + _moe_block(*_QK_NORM, ffn=_EXPERTS), rope_neox=True),
)}
