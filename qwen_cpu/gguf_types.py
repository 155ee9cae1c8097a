"""GGUF value types and ggml tensor types: ids, names, block geometry, numpy dtypes.

Data tables for qwen_cpu.gguf; no I/O here. Facts follow the GGUF specification and ggml's
block layouts (csrc/blocks.h holds the same sizes with static_asserts for the types we compute).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np

INT64_MAX = 2**63 - 1
MAX_DIMS = 4  # ggml tensors have at most 4 dimensions
DEFAULT_ALIGNMENT = 32  # data-section alignment when general.alignment is absent


class ValueType(IntEnum):
    """Type tag of a metadata value (uint32 in the file)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types -> little-endian numpy dtype. BOOL is one byte that must be 0 or 1.
SCALAR_DTYPES: dict[ValueType, np.dtype] = {
    ValueType.UINT8: np.dtype("<u1"),
    ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("<u1"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}

# Smallest encodings, used to bound untrusted counts by the bytes left in the file before looping.
MIN_STRING_BYTES = 8  # uint64 length + no bytes
MIN_KV_BYTES = MIN_STRING_BYTES + 4 + 1  # key, value type, a one-byte value
MIN_TENSOR_INFO_BYTES = MIN_STRING_BYTES + 4 + 8 + 4 + 8  # name, n_dims, one dim, type, offset


class GGMLType(NamedTuple):
    """A ggml tensor type: `block_elems` values are stored in `block_bytes` bytes.

    Both are None for ids that ggml once used and removed (their layout is not defined any more).
    """

    id: int
    name: str
    block_elems: int | None
    block_bytes: int | None


def _table(*rows: tuple[int, str, int | None, int | None]) -> dict[int, GGMLType]:
    return {r[0]: GGMLType(*r) for r in rows}


GGML_TYPES: dict[int, GGMLType] = _table(
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (4, "Q4_2", None, None),  # removed from ggml
    (5, "Q4_3", None, None),  # removed from ggml
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),  # fp16 d + fp16 s + 32 int8 (gguf-py's table says 40; ggml's struct is 36)
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (31, "Q4_0_4_4", None, None),  # removed from ggml (repacked at load time now)
    (32, "Q4_0_4_8", None, None),
    (33, "Q4_0_8_8", None, None),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (36, "IQ4_NL_4_4", None, None),  # removed from ggml
    (37, "IQ4_NL_4_8", None, None),
    (38, "IQ4_NL_8_8", None, None),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
)

# Types whose tensor() view is typed by element; every other sized type is viewed as raw uint8 rows.
ELEMENT_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f2"),
    24: np.dtype("<i1"),
    25: np.dtype("<i2"),
    26: np.dtype("<i4"),
    27: np.dtype("<i8"),
    28: np.dtype("<f8"),
}


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment
