"""A validating safetensors reader that streams rows as float32, and a small writer.

Layout of a .safetensors file: uint64 little-endian N, then N bytes of JSON mapping each tensor
name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the byte after the
JSON; an optional "__metadata__" entry holds strings), then the data, row-major, little-endian.

safetensors' own numpy loader cannot return bfloat16, and loading whole tensors would hold a model
in memory; this reader maps the file and converts only the rows asked for. Every field is checked
before use (header length against the file size, dtypes, shapes against byte counts, offsets in
order, inside the data and non-overlapping): a malformed file raises QwenCpuError naming the file
and the tensor.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import QwenCpuError

__all__ = ["SafetensorsFile", "TensorEntry", "write_safetensors"]

# dtype name -> bytes per element; the float types a checkpoint's weights come in
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2}
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str              # "F32", "F16" or "BF16"
    shape: tuple[int, ...]  # numpy order
    begin: int              # absolute byte offset of the data in the file
    n_bytes: int


class SafetensorsFile:
    """An open, validated .safetensors file: `tensors` (name -> TensorEntry, in offset order)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._map: mmap.mmap | None = None
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise self._error(f"only {size} bytes: too short for the 8-byte header length (truncated?)")
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > _MAX_HEADER or 8 + n > size:
                raise self._error(f"header length {n} does not fit in the file of {size} bytes (truncated or "
                                  "not a safetensors file)")
            raw = fh.read(n)
            try:
                header = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise self._error(f"the JSON header does not parse: {e}") from None
            if not isinstance(header, dict):
                raise self._error("the JSON header is not an object")
            data_start = 8 + n
            self.tensors = self._validate(header, data_start, size)
            if size > data_start:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def _error(self, what: str, tensor: str | None = None) -> QwenCpuError:
        where = f"{self.path}" + (f", tensor {tensor!r}" if tensor else "")
        return QwenCpuError(f"{where}: {what}")

    def _validate(self, header: dict, data_start: int, size: int) -> dict[str, TensorEntry]:
        entries = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict):
                raise self._error("entry is not an object", name)
            dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
            if dtype not in DTYPE_SIZES:
                raise self._error(f"dtype {dtype!r} is not supported (expected one of {sorted(DTYPE_SIZES)})", name)
            if (not isinstance(shape, list) or len(shape) > 8
                    or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
                raise self._error(f"shape {shape!r} is not a list of non-negative integers", name)
            if (not isinstance(offs, list) or len(offs) != 2
                    or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)
                    or offs[0] > offs[1]):
                raise self._error(f"data_offsets {offs!r} is not an ordered pair of non-negative integers", name)
            n_elem = int(np.prod(shape, dtype=np.int64)) if shape else 1
            n_bytes = n_elem * DTYPE_SIZES[dtype]
            if offs[1] - offs[0] != n_bytes:
                raise self._error(f"shape {tuple(shape)} of {dtype} needs {n_bytes} bytes but data_offsets "
                                  f"{offs} span {offs[1] - offs[0]}", name)
            if data_start + offs[1] > size:
                raise self._error(f"data [{data_start + offs[0]}, {data_start + offs[1]}) lies past the end of the "
                                  f"file ({size} bytes): the file is truncated", name)
            entries.append(TensorEntry(name, dtype, tuple(shape), data_start + offs[0], n_bytes))
        entries.sort(key=lambda e: (e.begin, e.begin + e.n_bytes))
        for prev, cur in zip(entries, entries[1:]):
            if cur.begin < prev.begin + prev.n_bytes:
                raise self._error(f"data overlaps tensor {prev.name!r}", cur.name)
        return {e.name: e for e in entries}

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a tensor as a new float32 array (rows, *shape[1:]); 1-D: elements."""
        e = self.tensors[name]
        row_elems = int(np.prod(e.shape[1:], dtype=np.int64)) if len(e.shape) > 1 else 1
        item = DTYPE_SIZES[e.dtype]
        count = (stop - start) * row_elems
        if count == 0:
            return np.zeros((0, *e.shape[1:]), np.float32)
        assert self._map is not None
        offset = e.begin + start * row_elems * item
        if e.dtype == "F32":
            out = np.frombuffer(self._map, np.dtype("<f4"), count, offset).astype(np.float32)
        elif e.dtype == "F16":
            out = np.frombuffer(self._map, np.dtype("<f2"), count, offset).astype(np.float32)
        else:  # bfloat16: the high half of a float32
            bits = np.frombuffer(self._map, np.dtype("<u2"), count, offset)
            out = (bits.astype(np.uint32) << 16).view(np.float32)
            del bits
        self._drop(offset, count * item)  # the rows are copied out: their mapped pages can go
        return out.reshape((stop - start, *e.shape[1:]) if len(e.shape) > 1 else (count,))

    def _drop(self, offset: int, n_bytes: int) -> None:
        """Drop mapped pages of [offset, offset + n_bytes) from this process's resident set (they stay
        in the page cache), so streaming a model keeps resident memory near one chunk."""
        if self._map is None or n_bytes <= 0 or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = offset // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            self._map.madvise(mmap.MADV_DONTNEED, start, offset + n_bytes - start)
        except (OSError, ValueError):
            pass  # advice only

    def release(self, name: str) -> None:
        """Done with a tensor: drop all of its mapped pages."""
        e = self.tensors[name]
        self._drop(e.begin, e.n_bytes)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # an array still views the map; it is freed with that array
            self._map = None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      bf16: tuple[str, ...] | bool = False, metadata: Mapping[str, str] | None = None) -> None:
    """Write float arrays to a .safetensors file (float32 and float16 as they are).

    bf16: names (or True for all) to store as bfloat16, rounded to nearest even from float32.
    """
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs = []
    pos = 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        as_bf16 = bf16 is True or (not isinstance(bf16, bool) and name in bf16)
        if as_bf16:
            bits = arr.astype(np.float32).view(np.uint32).astype(np.uint64)
            blob = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
            dtype = "BF16"
        elif arr.dtype == np.float16:
            blob, dtype = arr.astype("<f2").tobytes(), "F16"
        else:
            blob, dtype = arr.astype("<f4").tobytes(), "F32"
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [pos, pos + len(blob)]}
        blobs.append(blob)
        pos += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        for b in blobs:
            fh.write(b)
