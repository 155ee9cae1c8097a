"""A memory-mapped, validating GGUF (v2/v3, little-endian) reader.

    with GGUFFile("model.gguf") as f:
        f.metadata["qwen2.block_count"]      # 28
        f.tensors["blk.0.attn_q.weight"]     # TensorInfo(shape=(3584, 3584), type_name='Q4_K', ...)
        w = f.tensor("blk.0.attn_q.weight")  # uint8 (3584, 2016): raw Q4_K rows, a view into the map

The file is mapped read-only and never copied: tensor data stays in the page cache until a kernel
touches it. Everything read from the file is checked before it is trusted (counts and lengths against
the bytes left, types against the known tables, offsets against alignment and the file size); any
problem raises GGUFError naming the field and its byte offset. Arrays of arrays are rejected.

Layout (all little-endian): magic "GGUF", uint32 version, uint64 tensor_count, uint64 kv_count,
kv_count x (string key, uint32 value type, value), tensor_count x (string name, uint32 n_dims,
n_dims x uint64 dim (fastest-varying first), uint32 ggml type, uint64 offset relative to the data
section), padding to `alignment`, then the data section. A string is a uint64 length + UTF-8 bytes.
"""

from __future__ import annotations

import array
import mmap
import os
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GGUFError
from .gguf_types import (
    DEFAULT_ALIGNMENT,
    ELEMENT_DTYPES,
    GGML_TYPES,
    INT64_MAX,
    MAX_DIMS,
    MIN_KV_BYTES,
    MIN_STRING_BYTES,
    MIN_TENSOR_INFO_BYTES,
    SCALAR_DTYPES,
    ValueType,
    align_up,
    is_power_of_two,
)

__all__ = ["GGUFFile", "TensorInfo", "StringArray", "ValueType", "GGUFError"]

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALAR_STRUCTS = {t: struct.Struct("<" + c) for t, c in zip(SCALAR_DTYPES, "BbHhIifBQqd")}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's description from the header.

    `shape` is in numpy order (GGUF dims reversed: rows first, the contiguous dimension last).
    `offset` is absolute in the file. `n_bytes` is None for removed ggml types of unknown layout.
    """

    name: str
    ggml_type: int
    type_name: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int | None
    offset: int

    @property
    def row_bytes(self) -> int | None:
        """Bytes of one row (the last numpy dimension), or None if the type's layout is unknown."""
        t = GGML_TYPES[self.ggml_type]
        if t.block_bytes is None:
            return None
        return self.shape[-1] // t.block_elems * t.block_bytes


class StringArray(Sequence):
    """A metadata array of strings, validated when the file was opened and decoded on access.

    Indexing, slicing and iteration give str (a slice gives a list); == compares with a list or
    tuple of str; joined() gives the raw UTF-8 bytes. It holds one int64 per string, not the
    strings (a 152k-token vocabulary: 1.2 MB instead of ~10 MB of str objects). Its view into the
    map keeps the map alive, so it stays readable after GGUFFile.close() like the numeric views.
    """

    __slots__ = ("_map", "_view", "_offsets")

    def __init__(self, map_: mmap.mmap, view: np.ndarray, offsets: np.ndarray):
        self._map = map_        # sliced for speed (bytes, then decode)
        self._view = view       # uint8 view of the array's bytes: pins the map (close() then defers)
        self._offsets = offsets  # int64 (n + 1,): each string's length field in the file, then the end

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _get(self, i: int) -> str:
        return self._map[int(self._offsets[i]) + 8:int(self._offsets[i + 1])].decode("utf-8")

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"string array index {i} out of range ({n} strings)")
        return self._get(j)

    def __iter__(self):
        m, offsets = self._map, self._offsets.tolist()
        return (m[a + 8:b].decode("utf-8") for a, b in zip(offsets, offsets[1:]))

    def joined(self) -> tuple[bytes, np.ndarray]:
        """The strings' UTF-8 bytes back to back, and int64 (n + 1,) offsets of each in them."""
        m, offsets = self._map, self._offsets.tolist()
        blob = b"".join([m[a + 8:b] for a, b in zip(offsets, offsets[1:])])
        starts = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.diff(self._offsets) - 8, out=starts[1:])
        return blob, starts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (StringArray, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # compares by value, like list

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        return f"StringArray([{head}{', ...' if len(self) > 3 else ''}], {len(self)} strings)"


class _Cursor:
    """Bounds-checked sequential reads from the map; every failure names the field and offset."""

    def __init__(self, buf: mmap.mmap, size: int, path: str):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def error(self, field: str, offset: int, problem: str) -> GGUFError:
        return GGUFError(f"{self.path}: {field} at offset {offset}: {problem}")

    def left(self) -> int:
        return self.size - self.pos

    def need(self, n: int, field: str) -> None:
        if n > self.size - self.pos:
            raise self.error(
                field, self.pos, f"needs {n} bytes but only {self.left()} remain: "
                "it runs past the end of the file (truncated?)")

    def unpack(self, st: struct.Struct, field: str) -> Any:
        self.need(st.size, field)
        (v,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def u32(self, field: str) -> int:
        return self.unpack(_U32, field)

    def u64(self, field: str) -> int:
        return self.unpack(_U64, field)

    def string(self, field: str) -> str:
        n = self.u64(field + " length")
        self.need(n, field)
        start, self.pos = self.pos, self.pos + n
        try:
            return self.buf[start:self.pos].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(field, start + e.start, f"invalid UTF-8 ({e.reason})") from None

    def count(self, n: int, min_bytes: int, field: str, offset: int) -> None:
        """Reject a count of items (each at least `min_bytes` long) that cannot fit in what is left."""
        if n > self.left() // min_bytes:
            raise self.error(field, offset, f"count {n} exceeds the {self.left() // min_bytes} "
                             f"items of >= {min_bytes} bytes that fit in the {self.left()} bytes "
                             "left: it runs past the end of the file (truncated or corrupt)")

    def value_type(self, field: str) -> ValueType:
        off = self.pos
        t = self.u32(field)
        try:
            return ValueType(t)
        except ValueError:
            raise self.error(field, off, f"unknown value type {t}") from None

    def scalar(self, vtype: ValueType, field: str) -> Any:
        off = self.pos
        v = self.unpack(_SCALAR_STRUCTS[vtype], field)
        if vtype == ValueType.BOOL:
            if v > 1:
                raise self.error(field, off, f"bool value {v} is neither 0 nor 1")
            return bool(v)
        return v

    def string_array(self, n: int, field: str, view: np.ndarray) -> StringArray:
        """n strings, each checked here (length within the file, valid UTF-8) but kept only as its
        offset: tokenizer vocabularies hold ~150k of them, ~10 MB as Python str objects."""
        buf, size, pos, unpack = self.buf, self.size, self.pos, _U64.unpack_from
        starts = array.array("q")  # offset of each string's length field, then the end
        append = starts.append
        i, start = 0, pos
        try:
            for i in range(n):
                if pos + 8 > size:
                    self.pos = pos
                    self.need(8, f"{field}[{i}] length")
                (k,) = unpack(buf, pos)
                append(pos)
                start = pos + 8
                pos = start + k
                if pos > size:
                    self.pos = start
                    self.need(k, f"{field}[{i}]")
                buf[start:pos].decode("utf-8")  # validation only; the str is dropped
        except UnicodeDecodeError as e:
            raise self.error(f"{field}[{i}]", start + e.start,
                             f"invalid UTF-8 ({e.reason})") from None
        append(pos)
        base, self.pos = self.pos, pos
        return StringArray(buf, view[base:pos], np.frombuffer(starts, dtype=np.int64))

    def array(self, field: str, view: np.ndarray) -> tuple[Any, ValueType]:
        """An array value: numbers as a zero-copy numpy view, strings as a StringArray."""
        etype = self.value_type(field + " element type")
        if etype == ValueType.ARRAY:
            raise self.error(field, self.pos - 4, "nested array (array of arrays) is not supported")
        count_off = self.pos
        n = self.u64(field + " count")
        if etype == ValueType.STRING:
            self.count(n, MIN_STRING_BYTES, field, count_off)
            return self.string_array(n, field, view), etype
        dtype = SCALAR_DTYPES[etype]
        self.count(n, dtype.itemsize, field, count_off)
        start, self.pos = self.pos, self.pos + n * dtype.itemsize
        arr = view[start:self.pos].view(dtype)
        if etype == ValueType.BOOL:
            bad = np.flatnonzero(arr > 1)
            if bad.size:
                raise self.error(f"{field}[{bad[0]}]", start + int(bad[0]),
                                 f"bool value {arr[bad[0]]} is neither 0 nor 1")
            arr = arr.view(np.bool_)
        return arr, etype


class GGUFFile:
    """An open, validated GGUF file.

    Attributes:
        path, file_size, version (2 or 3), alignment (bytes), data_offset (absolute start of the
        data section), metadata (key -> int | float | bool | str | StringArray | numpy 1-D array view),
        metadata_types (key -> ValueType, or (ValueType.ARRAY, element ValueType) for arrays),
        tensors (name -> TensorInfo, in file order).

    metadata_only=True validates the header, metadata and tensor infos but not that the tensor data
    is present (for header-only files); tensor() still checks the bounds of what it maps.
    close() drops the map; views already handed out (tensors, metadata arrays) keep it alive.
    """

    def __init__(self, path: str | os.PathLike, metadata_only: bool = False):
        self.path = os.fspath(path)
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, ValueType | tuple[ValueType, ValueType]] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.alignment = DEFAULT_ALIGNMENT
        self._map: mmap.mmap | None = None
        self._view: np.ndarray | None = None  # uint8 (file_size,) over the whole map
        # O_NONBLOCK: open() of a FIFO with no writer would otherwise wait forever; only regular
        # files are read (no effect on them).
        with os.fdopen(os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise GGUFError(f"{self.path}: not a regular file")
            self.file_size = st.st_size
            if self.file_size < 4:
                raise GGUFError(f"{self.path}: magic at offset 0: the file has only "
                                f"{self.file_size} bytes: truncated, not a GGUF file")
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._view = np.frombuffer(self._map, dtype=np.uint8)
        try:
            cur = _Cursor(self._map, self.file_size, self.path)
            self._read_header(cur)
            self._read_metadata(cur)
            self._read_tensor_infos(cur)
            self._check_tensor_ranges(cur, require_data=not metadata_only)
        except BaseException:
            self.close()
            raise

    # --- parsing --------------------------------------------------------------------------

    def _read_header(self, cur: _Cursor) -> None:
        magic = bytes(self._map[0:4])
        if magic != MAGIC:
            raise cur.error("magic", 0, f"bad magic {magic!r} (expected {MAGIC!r}): not a GGUF file")
        cur.pos = 4
        self.version = cur.u32("version")
        if self.version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(self.version.to_bytes(4, "little"), "big")
            why = ("a big-endian GGUF file, which is not supported" if swapped in SUPPORTED_VERSIONS
                   else "unsupported version (this reader reads versions 2 and 3)")
            raise cur.error("version", 4, f"version {self.version}: {why}")
        self._n_tensors = cur.u64("tensor_count")
        self._n_kv = cur.u64("kv_count")
        cur.count(self._n_kv, MIN_KV_BYTES, "kv_count", 16)
        left_for_tensors = cur.left() - self._n_kv * MIN_KV_BYTES
        if self._n_tensors > left_for_tensors // MIN_TENSOR_INFO_BYTES:
            raise cur.error("tensor_count", 8, f"count {self._n_tensors} tensor infos (>= "
                            f"{MIN_TENSOR_INFO_BYTES} bytes each) cannot fit in the "
                            f"{left_for_tensors} bytes left after {self._n_kv} key/value pairs: "
                            "it runs past the end of the file (truncated or corrupt)")

    def _read_metadata(self, cur: _Cursor) -> None:
        for i in range(self._n_kv):
            key_off = cur.pos
            key = cur.string(f"kv[{i}] key")
            if not key:
                raise cur.error(f"kv[{i}] key", key_off, "empty key")
            if key in self.metadata:
                raise cur.error(f"kv[{i}] key", key_off, f"duplicate key {key!r}")
            field = f"kv[{i}] {key!r}"
            vtype = cur.value_type(field + " value type")
            value_off = cur.pos
            if vtype == ValueType.STRING:
                value, vt = cur.string(field), vtype
            elif vtype == ValueType.ARRAY:
                value, etype = cur.array(field, self._view)
                vt = (ValueType.ARRAY, etype)
            else:
                value, vt = cur.scalar(vtype, field), vtype
            if key == "general.alignment":
                if vtype != ValueType.UINT32:
                    raise cur.error(field, value_off - 4,
                                    f"general.alignment has type {vtype.name}, must be UINT32")
                if not is_power_of_two(value):
                    raise cur.error(field, value_off,
                                    f"general.alignment {value} is not a power of two")
                self.alignment = value
            self.metadata[key] = value
            self.metadata_types[key] = vt

    def _read_tensor_infos(self, cur: _Cursor) -> None:
        self._offset_fields: dict[str, int] = {}  # name -> offset of its data-offset field
        pending = [self._read_tensor_info(cur, i) for i in range(self._n_tensors)]
        # The data section starts after the infos, padded to the alignment.
        self.data_offset = align_up(cur.pos, self.alignment)
        for name, gtype, shape, n_elements, n_bytes, rel in pending:
            self.tensors[name] = TensorInfo(name, gtype.id, gtype.name, shape, n_elements, n_bytes,
                                            self.data_offset + rel)

    def _read_tensor_info(self, cur: _Cursor, i: int) -> tuple:
        """(name, GGMLType, numpy shape, n_elements, n_bytes, data offset relative to the section)"""
        name_off = cur.pos
        name = cur.string(f"tensor[{i}] name")
        if not name:
            raise cur.error(f"tensor[{i}] name", name_off, "empty tensor name")
        if name in self._offset_fields:
            raise cur.error(f"tensor[{i}] name", name_off, f"duplicate tensor name {name!r}")
        field = f"tensor[{i}] {name!r}"
        n_dims_off = cur.pos
        n_dims = cur.u32(field + " n_dims")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.error(field + " n_dims", n_dims_off, f"n_dims {n_dims} is not in 1..{MAX_DIMS}")
        dims_off = cur.pos
        cur.need(8 * n_dims, field + " dims")
        dims = struct.unpack_from(f"<{n_dims}Q", self._map, dims_off)  # fastest-varying first
        cur.pos += 8 * n_dims
        n_elements = 1
        for d, dim in enumerate(dims):
            if dim == 0:
                raise cur.error(f"{field} dims[{d}]", dims_off + 8 * d, "dimension is zero")
            n_elements *= dim
            if n_elements > INT64_MAX:
                raise cur.error(f"{field} dims[{d}]", dims_off + 8 * d,
                                f"dims {list(dims)} overflow int64 (element count > 2^63-1)")
        type_off = cur.pos
        type_id = cur.u32(field + " type")
        gtype = GGML_TYPES.get(type_id)
        if gtype is None:
            raise cur.error(field + " type", type_off, f"unknown tensor type {type_id}")
        n_bytes = None
        if gtype.block_elems is not None:
            if dims[0] % gtype.block_elems:
                raise cur.error(f"{field} dims[0]", dims_off, f"row length {dims[0]} is not a "
                                f"multiple of the {gtype.name} block size {gtype.block_elems}")
            n_bytes = n_elements // gtype.block_elems * gtype.block_bytes
        offset_off = cur.pos
        rel = cur.u64(field + " data offset")
        if rel % self.alignment:
            raise cur.error(field + " data offset", offset_off,
                            f"data offset {rel} is not aligned to {self.alignment} bytes")
        self._offset_fields[name] = offset_off
        return name, gtype, tuple(reversed(dims)), n_elements, n_bytes, rel

    def _check_tensor_ranges(self, cur: _Cursor, require_data: bool) -> None:
        """Tensor data must not overlap and, unless metadata-only, must lie within the file."""
        ordered = sorted((t for t in self.tensors.values() if t.n_bytes is not None),
                         key=lambda t: t.offset)
        prev: TensorInfo | None = None
        for t in ordered:
            if prev is not None and prev.offset + prev.n_bytes > t.offset:
                raise cur.error(f"tensor {t.name!r} data offset", self._offset_fields[t.name],
                                f"data [{t.offset}, {t.offset + t.n_bytes}) overlaps tensor "
                                f"{prev.name!r} at [{prev.offset}, {prev.offset + prev.n_bytes})")
            prev = t
        if not require_data:
            return
        for t in ordered:  # file order: the first tensor past the end is named
            if t.offset + t.n_bytes > self.file_size:
                raise cur.error(f"tensor {t.name!r} data offset", self._offset_fields[t.name],
                                self._past_end(t))

    def _past_end(self, t: TensorInfo) -> str:
        return (f"the file is truncated: tensor {t.name!r} data [{t.offset}, "
                f"{t.offset + t.n_bytes}) ({t.n_bytes} bytes) lies past the end of the file "
                f"({self.file_size} bytes)")

    # --- access ---------------------------------------------------------------------------

    def tensor(self, name: str) -> np.ndarray:
        """A read-only, zero-copy view of a tensor's data in the map.

        F32/F16 (and I8..I64, F64): an array of that dtype with shape `TensorInfo.shape`.
        BF16 and block-quantized types: uint8 of shape (*shape[:-1], row_bytes), the raw rows.
        """
        if self._view is None:
            raise GGUFError(f"{self.path}: the file is closed")
        info = self.tensors.get(name)
        if info is None:
            raise GGUFError(f"{self.path}: no tensor named {name!r}")
        if info.n_bytes is None:
            raise GGUFError(f"{self.path}: tensor {name!r} has type {info.type_name} "
                            f"({info.ggml_type}), which ggml removed; its block layout is unknown, "
                            "so it cannot be mapped")
        if info.offset + info.n_bytes > self.file_size:
            raise GGUFError(f"{self.path}: tensor {name!r} data offset at offset "
                            f"{self._offset_fields[name]}: {self._past_end(info)}")
        raw = self._view[info.offset:info.offset + info.n_bytes]
        dtype = ELEMENT_DTYPES.get(info.ggml_type)
        if dtype is not None:
            return raw.view(dtype).reshape(info.shape)
        return raw.reshape(*info.shape[:-1], info.row_bytes)

    def release_metadata_pages(self) -> None:
        """Drop the pages of the header, metadata and tensor infos from this process's resident
        memory (the first data_offset bytes; a 152k-token vocabulary makes them about 5 MiB).
        They are clean pages of the file: reading the metadata again faults them back in from the
        page cache, so nothing is lost. Called once the vocabulary has been read."""
        if self._map is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        end = min(self.data_offset, len(self._map)) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > 0:
            self._map.madvise(mmap.MADV_DONTNEED, 0, end)

    def close(self) -> None:
        """Drop the map. It is unmapped now, or when the last view handed out is released."""
        self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # views (metadata arrays, tensors) still export it; freed with them
            self._map = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({self.path!r}, version={self.version}, {len(self.metadata)} keys, "
                f"{len(self.tensors)} tensors)")
