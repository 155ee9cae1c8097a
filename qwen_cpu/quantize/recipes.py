"""Quantization recipes: which GGUF type each tensor of a model gets under `qwen-cpu quantize --type TYPE`.

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
- Mixtures of experts (qwen2moe, qwen3moe), as llama.cpp: the router (ffn_gate_inp) stays F32; the
  3-D expert tensors follow the 2-D rules per row (ffn_down_exps like ffn_down, by its layer), as do
  the shared expert's tensors, its one-row gate ffn_gate_inp_shexp included; with exactly 8 experts
  attn_k and attn_v become Q8_0 in every quantized recipe.
- Requantizing a GGUF applies the same rules to its tensors; a tensor already in its target type
  is copied unchanged, 1-D tensors are copied in their type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..gguf_types import GGML_TYPES

# GGUF tensor type ids (fixed by the file format; names and block sizes: gguf_types.GGML_TYPES)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16 = 10, 11, 12, 13, 14, 30


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
LAYER = re.compile(r"^blk\.(\d+)\.")



def block_elems(t: int) -> int:
    """Values per block of type t."""
    return GGML_TYPES[t].block_elems


def _use_more_bits(i_layer: int, n_layer: int) -> bool:
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def tensor_type(name: str, shape: tuple[int, ...], qtype: str | QuantType, n_layer: int, has_output: bool,
                n_expert: int = 0) -> int:
    """The GGUF type a tensor gets under a TYPE recipe (see the module docstring).

    name: GGUF tensor name ("blk.3.attn_v.weight"); shape: numpy order, rows first; n_expert: the
    model's expert count (0: dense).
    """
    q = QUANT_TYPES[qtype] if isinstance(qtype, str) else qtype
    if len(shape) < 2 or not name.endswith(".weight") or name.endswith("_norm.weight"):
        return F32
    if name.endswith(".ffn_gate_inp.weight"):  # the router is never quantized
        return F32
    if q.default not in _QUANTIZED:
        return q.default
    new = q.default
    if n_expert == 8 and (name.endswith(".attn_k.weight") or name.endswith(".attn_v.weight")):
        new = Q8_0
    n_per_row = shape[-1]
    if name == "output.weight" or (not has_output and name == "token_embd.weight"):
        if n_per_row % block_elems(new) != 0:
            new = Q8_0
        elif new != Q8_0:
            new = Q6_K
    elif q.k_mix and new != Q8_0 and (".attn_v.weight" in name or ".ffn_down" in name):
        m = LAYER.match(name)
        if m and _use_more_bits(int(m.group(1)), n_layer):
            new = Q6_K
    if n_per_row % block_elems(new) != 0:
        new = _FALLBACK.get(new, F16)
        if n_per_row % block_elems(new) != 0:
            new = F16
    return new


def type_name(t: int) -> str:
    return GGML_TYPES[t].name if t in GGML_TYPES else f"type {t}"


def row_bytes(t: int, n_per_row: int) -> int:
    """Bytes of a row of n_per_row values of type t (a multiple of its block)."""
    g = GGML_TYPES[t]
    return n_per_row // g.block_elems * g.block_bytes
