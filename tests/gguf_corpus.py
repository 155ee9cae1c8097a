"""A corpus of malformed GGUF files for the reader's tests.

A valid file is written with gguf-py's GGUFWriter; the byte offset of every field is located with
gguf-py's GGUFReader (independent of qwen_cpu.gguf); each case then patches or cuts those bytes.
Every case carries a regex that the GGUFError message must match, and whether the problem lies in
the header (so metadata-only mode must reject it too) or only in the tensor data.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

ALIGNMENT = 64  # not the default 32, so the tests see that general.alignment is honoured

# Scalars written to the valid file: key -> (value, GGUF value type).
SCALARS = {
    "test.u8": (7, VT.UINT8),
    "test.i8": (-3, VT.INT8),
    "test.u16": (65535, VT.UINT16),
    "test.i16": (-32768, VT.INT16),
    "test.u32": (4000000000, VT.UINT32),
    "test.i32": (-2000000000, VT.INT32),
    "test.f32": (1.5, VT.FLOAT32),
    "test.bool": (True, VT.BOOL),
    "test.str": ("h\u00e9llo \u4e16\u754c", VT.STRING),
    "test.u64": (2**64 - 1, VT.UINT64),
    "test.i64": (-(2**63), VT.INT64),
    "test.f64": (-2.25e-300, VT.FLOAT64),
    "test.dupa": (1, VT.UINT32),  # same length as test.dupb: renaming one duplicates the other
    "test.dupb": (2, VT.UINT32),
}
# Arrays: key -> (values, element type).
ARRAYS = {
    "test.arr_i32": ([1, -2, 3], VT.INT32),
    "test.arr_u64": ([0, 2**64 - 1], VT.UINT64),
    "test.arr_f32": ([0.5, -1.0, 3.25], VT.FLOAT32),
    "test.arr_bool": ([True, False, True], VT.BOOL),
    "test.arr_str": (["a", "bc", "d\u00e9fg", ""], VT.STRING),
}


def valid_tensors() -> dict[str, tuple[np.ndarray, QT]]:
    """name -> (data as written, ggml type). Quantized data is raw uint8 rows (rows, row_bytes).

    Names have equal length so that renaming one duplicates another. `x` feeds the quantizers.
    """
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    return {
        "t.f32": (rng.standard_normal((3, 64)).astype(np.float32), QT.F32),
        "t.f16": (rng.standard_normal((2, 3, 32)).astype(np.float16), QT.F16),
        "t.q80": (gguf.quants.quantize(x[:, :64], QT.Q8_0), QT.Q8_0),
        # gguf-py has no Q4_K quantizer; the reader does not interpret blocks, so any bytes do.
        "t.q4k": (rng.integers(0, 256, (4, 144), dtype=np.uint8), QT.Q4_K),
        "t.b16": (gguf.quants.quantize(x[:2, :8], QT.BF16), QT.BF16),
    }


def write_valid(path: Path) -> None:
    """A small valid GGUF v3 file holding every value type and five tensor types."""
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_custom_alignment(ALIGNMENT)
    for key, (val, vt) in SCALARS.items():
        w.add_key_value(key, val, vt)
    for key, (vals, et) in ARRAYS.items():
        w.add_key_value(key, vals, VT.ARRAY, sub_type=et)
    for name, (data, qt) in valid_tensors().items():
        w.add_tensor(name, data, raw_dtype=qt if qt not in (QT.F32, QT.F16) else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@dataclass
class Layout:
    """Byte offsets in the valid file. kv[key] / ti[name]: list of the offsets of the field's parts
    (kv: key length, key bytes, value type, value parts...; ti: name length, name bytes, n_dims,
    dims, type, data offset)."""

    kv: dict[str, list[int]]
    ti: dict[str, list[int]]
    ti_end: int
    data_offset: int
    tensor_data: dict[str, tuple[int, int]]  # name -> (absolute start, n_bytes)
    size: int


def layout(path: Path) -> Layout:
    r = gguf.GGUFReader(path)

    def part_offsets(field) -> list[int]:
        offs, o = [], field.offset
        for p in field.parts:
            offs.append(o)
            o += p.nbytes
        return offs

    kv = {f.name: part_offsets(f) for f in r.fields.values() if not f.name.startswith("GGUF.")}
    ti = {t.name: part_offsets(t.field) for t in r.tensors}
    last = r.tensors[-1].field
    ti_end = last.offset + sum(p.nbytes for p in last.parts)
    data = {t.name: (int(t.data_offset), int(t.n_bytes)) for t in r.tensors}
    return Layout(kv, ti, ti_end, int(r.data_offset), data, Path(path).stat().st_size)


@dataclass
class Case:
    name: str
    data: bytes
    match: str  # regex the GGUFError message must match
    in_header: bool = True  # metadata-only mode must reject it too


def _patch(base: bytes, offset: int, new: bytes) -> bytes:
    return base[:offset] + new + base[offset + len(new):]


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


def _u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def malformed_cases(valid: Path, n_random_cuts: int = 24, seed: int = 0) -> list[Case]:
    """The corpus (>= 40 cases) built from the valid file at `valid`."""
    base = valid.read_bytes()
    L = layout(valid)
    kv, ti = L.kv, L.ti
    cases: list[Case] = []

    def add(name: str, offset: int, new: bytes, match: str, in_header: bool = True) -> None:
        cases.append(Case(name, _patch(base, offset, new), match, in_header))

    # Header.
    add("bad_magic", 0, b"GGML", r"bad magic")
    add("lowercase_magic", 0, b"gguf", r"magic at offset 0")
    add("version_0", 4, _u32(0), r"version at offset 4: version 0: unsupported")
    add("version_1", 4, _u32(1), r"version 1: unsupported")
    add("version_4", 4, _u32(4), r"version 4: unsupported")
    add("version_byteswapped", 4, struct.pack(">I", 3), r"big-endian")
    add("tensor_count_u64_max", 8, _u64(2**64 - 1), r"tensor_count at offset 8: count")
    add("tensor_count_2e32", 8, _u64(2**32), r"tensor_count .*past the end")
    add("kv_count_u64_max", 16, _u64(2**64 - 1), r"kv_count at offset 16: count")
    add("kv_count_2e40", 16, _u64(2**40), r"kv_count .*past the end")
    cases.append(Case("empty_file", b"", r"only 0 bytes: truncated"))
    cases.append(Case("three_bytes", base[:3], r"only 3 bytes: truncated"))

    # Keys.
    k = kv["test.u8"]
    add("key_length_huge", k[0], _u64(2**63), rf"key at offset {k[1]}: needs \d+ bytes.*past the end")
    add("key_length_one_past_end", k[0], _u64(L.size - k[1] + 1), r"key at offset \d+: .*past the end")
    add("empty_key", k[0], _u64(0), rf"key at offset {k[0]}: empty key")
    add("invalid_utf8_key", k[1] + 2, b"\xff", rf"key at offset {k[1] + 2}: invalid UTF-8")
    add("duplicate_key", kv["test.dupb"][1], b"test.dupa", r"duplicate key 'test.dupa'")

    # Value types and values.
    add("unknown_value_type_13", k[2], _u32(13), rf"value type at offset {k[2]}: unknown value type 13")
    add("unknown_value_type_u32_max", k[2], _u32(2**32 - 1), r"unknown value type 4294967295")
    s = kv["test.str"]
    add("string_length_huge", s[3], _u64(2**62), r"'test.str' at offset \d+: needs .*past the end")
    add("string_length_one_past_end", s[3], _u64(L.size - s[4] + 1), r"'test.str'.*past the end")
    add("invalid_utf8_string", s[4], b"\xc3\x28", rf"'test.str' at offset {s[4]}: invalid UTF-8")
    add("utf8_surrogate_string", s[4], b"\xed\xa0\x80", rf"at offset {s[4]}: invalid UTF-8")
    add("bool_value_2", kv["test.bool"][3], b"\x02", r"'test.bool' at offset \d+: bool value 2")
    a = kv["test.arr_i32"]  # key len, key, type, element type, count, elements...
    add("array_count_huge", a[4], _u64(2**61), rf"'test.arr_i32' at offset {a[4]}: count \d+ exceeds")
    add("array_count_one_past_end", a[4], _u64((L.size - a[5]) // 4 + 1), r"'test.arr_i32'.*count")
    add("unknown_array_element_type", a[3], _u32(99), rf"element type at offset {a[3]}: unknown value type 99")
    add("nested_array", a[3], _u32(int(VT.ARRAY)), r"'test.arr_i32' at offset \d+: nested array")
    b = kv["test.arr_bool"]
    add("bool_array_value_2", b[5] + 1, b"\x07", rf"'test.arr_bool'\[1\] at offset {b[5] + 1}: bool value 7")
    st = kv["test.arr_str"]  # ..., count, len0, bytes0, len1, bytes1, ...
    add("string_array_count_huge", st[4], _u64(2**63), r"'test.arr_str' at offset \d+: count \d+ exceeds")
    add("string_array_element_length_huge", st[7], _u64(2**40), r"'test.arr_str'\[1\] at offset \d+: .*past the end")
    add("invalid_utf8_string_array", st[10] + 1, b"\x80", rf"'test.arr_str'\[2\] at offset {st[10] + 1}: invalid UTF-8")

    # general.alignment (key len, key, type, value).
    al = kv["general.alignment"]
    add("alignment_not_power_of_two", al[3], _u32(48), r"general.alignment 48 is not a power of two")
    add("alignment_zero", al[3], _u32(0), r"general.alignment 0 is not a power of two")
    add("alignment_int32", al[2], _u32(int(VT.INT32)), rf"at offset {al[2]}: general.alignment has type INT32, must be UINT32")
    add("alignment_float32", al[2], _u32(int(VT.FLOAT32)), r"general.alignment has type FLOAT32")

    # Tensor infos (name len, name, n_dims, dims, type, offset).
    f32, f16, q80 = ti["t.f32"], ti["t.f16"], ti["t.q80"]
    add("duplicate_tensor_name", f16[1], b"t.f32", r"duplicate tensor name 't.f32'")
    add("empty_tensor_name", f32[0], _u64(0), rf"tensor\[0\] name at offset {f32[0]}: empty tensor name")
    add("invalid_utf8_tensor_name", f16[1] + 1, b"\xfe", rf"tensor\[1\] name at offset {f16[1] + 1}: invalid UTF-8")
    add("tensor_name_length_huge", f16[0], _u64(2**63 + 5), r"tensor\[1\] name at offset \d+: needs .*past the end")
    add("n_dims_0", f32[2], _u32(0), rf"n_dims at offset {f32[2]}: n_dims 0 is not in 1..4")
    add("n_dims_5", f32[2], _u32(5), r"n_dims 5 is not in 1..4")
    add("n_dims_u32_max", f32[2], _u32(2**32 - 1), r"n_dims 4294967295")
    add("dim_zero", f16[3] + 8, _u64(0), rf"'t.f16' dims\[1\] at offset {f16[3] + 8}: dimension is zero")
    add("dims_product_overflow", f16[3], _u64(2**32) + _u64(2**30) + _u64(2), r"'t.f16' dims\[2\] at offset \d+: .*overflow int64")
    add("dim_2e63", f32[3], _u64(2**63), r"'t.f32' dims\[0\] .*overflow int64")
    add("dim_u64_max", f32[3] + 8, _u64(2**64 - 1), r"'t.f32' dims\[1\] .*overflow")
    add("unknown_tensor_type_99", f32[4], _u32(99), rf"type at offset {f32[4]}: unknown tensor type 99")
    add("unknown_tensor_type_u32_max", f32[4], _u32(2**32 - 1), r"unknown tensor type 4294967295")
    add("row_not_multiple_of_block", q80[3], _u64(48), r"'t.q80' dims\[0\] at offset \d+: row length 48 is not a multiple of the Q8_0 block size 32")
    rel_f16 = L.tensor_data["t.f16"][0] - L.data_offset
    add("offset_misaligned_by_1", f16[5], _u64(rel_f16 + 1), rf"'t.f16' data offset at offset {f16[5]}: .*not aligned to 64")
    add("offset_aligned_32_not_64", f16[5], _u64(rel_f16 + 32), r"not aligned to 64 bytes")
    add("tensors_overlap", f16[5], _u64(0), r"'t.f16' data offset .*overlaps tensor 't.f32'")
    add("offset_past_end", f16[5], _u64(2**40), r"truncated: tensor 't.f16' data .*past the end", in_header=False)
    add("offset_u64_max_aligned", f16[5], _u64(2**64 - 64), r"truncated: tensor 't.f16'", in_header=False)
    end = max(start + n for start, n in L.tensor_data.values())  # the writer pads after it
    cases.append(Case("last_tensor_byte_missing", base[:end - 1], r"truncated: tensor 't.b16'",
                      in_header=False))

    # Truncation at every section boundary, then at seeded random points.
    cuts = {2, 4, 6, 8, 12, 16, 20, 24}
    for offs in kv.values():
        cuts.update(offs)
    for offs in ti.values():
        cuts.update(offs)
    cuts.update({L.ti_end, L.data_offset - 1, L.data_offset})
    for start, n in L.tensor_data.values():
        cuts.update({start + 1, start + n // 2})
    rng = random.Random(seed)
    random_cuts = sorted(rng.sample(range(1, L.size), n_random_cuts))
    for origin, points in (("boundary", sorted(cuts)), ("random", random_cuts)):
        for cut in points:
            cases.append(Case(f"truncated_{origin}_{cut}", base[:cut], r"truncated|past the end",
                              in_header=cut < L.ti_end))
    return cases


def write_corpus(directory: Path) -> list[tuple[Case, Path]]:
    """Write the valid file and every malformed case into `directory`; returns (case, path) pairs."""
    directory.mkdir(parents=True, exist_ok=True)
    valid = directory / "valid.gguf"
    write_valid(valid)
    out = []
    for case in malformed_cases(valid):
        p = directory / f"{case.name}.gguf"
        p.write_bytes(case.data)
        out.append((case, p))
    return out
