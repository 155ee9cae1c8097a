"""What the converter reads: one SourceTensor per output tensor, and the GGUF source (requantizing a
GGUF file); the Hugging Face source is hf_checkpoint.py."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..arch import ARCHES
from ..errors import QwenCpuError
from .recipes import BF16, F16, F32, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0


@dataclass
class SourceTensor:
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


def gguf_source(path: Path, closers: list) -> tuple[Any, str, int, list[SourceTensor]]:
    from ..gguf import GGUFFile
    from ..gguf_types import GGML_TYPES

    src = GGUFFile(path)  # parses and validates header, metadata and tensor ranges
    closers.append(src.close)
    arch = src.metadata.get("general.architecture")
    if arch not in ARCHES:
        raise QwenCpuError(f"{path}: architecture {arch!r} is not supported ({', '.join(ARCHES)})")
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

        out.append(SourceTensor(name=name, shape=tuple(info.shape), src_type=tname, read_rows=rows, raw_rows=raw,
                           raw_type=info.ggml_type, nbytes=info.n_bytes))
    return src, arch, n_layer, out


READABLE = {F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}


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
    from .. import _kernels

    return _kernels.dequantize(t, u8.reshape(-1), n_rows * n_per_row).reshape(n_rows, n_per_row)


def copy_gguf_metadata(w: Any, src: Any) -> None:
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
