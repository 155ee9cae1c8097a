"""Tests of qwen_cpu.gguf, the validating mmap GGUF reader.

References: gguf-py (GGUFWriter writes the valid files, GGUFReader reads them independently; its
GGML_QUANT_SIZES table is checked against ours), the values the tests wrote themselves, the facts
published with the header fixture (tests/data/README.md), and digests of its vocabulary and merges
computed from the project's Qwen2.5 tokenizer.json (another parse of the same header, itself checked
against Qwen's published BPE ranks). All comparisons are exact (bytes, ints, bit-equal floats).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import mapping_rss_kib, rss_bytes
from gguf_corpus import ARRAYS, SCALARS, layout, malformed_cases, valid_tensors, write_valid
from qwen_cpu.errors import GGUFError
from qwen_cpu.gguf import GGUFFile, StringArray, ValueType
from qwen_cpu.gguf_types import GGML_TYPES

FIXTURE = Path(__file__).parent / "data" / "qwen2-7b-q4_k_m.header.gguf"

with tempfile.TemporaryDirectory() as _d:
    write_valid(Path(_d) / "valid.gguf")
    VALID_BYTES = (Path(_d) / "valid.gguf").read_bytes()
    VALID_LAYOUT = layout(Path(_d) / "valid.gguf")
    CASES = malformed_cases(Path(_d) / "valid.gguf")


@pytest.fixture
def valid_path(tmp_path: Path) -> Path:
    p = tmp_path / "valid.gguf"
    p.write_bytes(VALID_BYTES)
    return p


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


# --- type table -----------------------------------------------------------------------------

def test_type_table_matches_gguf_py():
    """Every ggml type gguf-py knows has our id, name and block geometry. One known difference:
    gguf-py sizes Q8_1 as 4+4+32 = 40 bytes; ggml's block_q8_1 (fp16 d, fp16 s, 32 int8) and
    csrc/blocks.h's static_assert say 36."""
    for t in QT:
        ours = GGML_TYPES[t.value]
        assert ours.name == t.name
        elems, nbytes = gguf.GGML_QUANT_SIZES[t]
        if t == QT.Q8_1:
            assert (ours.block_elems, ours.block_bytes) == (32, 36)
            assert nbytes in (36, 40)
        else:
            assert (ours.block_elems, ours.block_bytes) == (elems, nbytes), t.name


# --- valid files round-trip -----------------------------------------------------------------

def test_valid_file_metadata_equals_what_was_written(valid_path):
    with GGUFFile(valid_path) as f:
        assert f.version == 3 and f.alignment == 64 and f.file_size == len(VALID_BYTES)
        assert f.metadata["general.architecture"] == "qwen2"
        for key, (val, vt) in SCALARS.items():
            assert f.metadata_types[key] == vt.value
            assert f.metadata[key] == val and type(f.metadata[key]) is type(val), key
        for key, (vals, et) in ARRAYS.items():
            assert f.metadata_types[key] == (ValueType.ARRAY, et.value)
            got = f.metadata[key]
            if et == VT.STRING:
                assert got == vals
            else:
                assert isinstance(got, np.ndarray) and got.tolist() == vals, key
                assert not got.flags.writeable  # a view into the read-only map
        assert f.metadata["test.arr_bool"].dtype == np.bool_


def test_valid_file_agrees_with_gguf_py_reader(valid_path):
    ref = gguf.GGUFReader(valid_path)
    with GGUFFile(valid_path) as f:
        ref_fields = {k: v for k, v in ref.fields.items() if not k.startswith("GGUF.")}
        assert list(f.metadata) == list(ref_fields)
        for key, field in ref_fields.items():
            got = f.metadata[key]
            want = field.contents()
            assert (got.tolist() if isinstance(got, np.ndarray) else got) == want, key
            types = f.metadata_types[key]
            assert (list(types) if isinstance(types, tuple) else [types]) == field.types, key
        assert f.data_offset == ref.data_offset
        assert list(f.tensors) == [t.name for t in ref.tensors]
        for t in ref.tensors:
            info = f.tensors[t.name]
            assert info.ggml_type == t.tensor_type.value and info.type_name == t.tensor_type.name
            assert info.shape == tuple(int(d) for d in reversed(t.shape))
            assert (info.n_elements, info.n_bytes, info.offset) == (t.n_elements, t.n_bytes, t.data_offset)
            view = f.tensor(t.name)
            assert view.dtype == t.data.dtype and view.shape == t.data.shape
            assert np.array_equal(view, t.data)


def test_tensor_views_equal_written_data_and_are_zero_copy(valid_path):
    with GGUFFile(valid_path) as f:
        base = _address(f._view)
        for name, (data, qt) in valid_tensors().items():
            info = f.tensors[name]
            view = f.tensor(name)
            if qt in (QT.F32, QT.F16):
                assert view.dtype == data.dtype and info.shape == data.shape
            else:  # BF16 and blocks: raw rows
                assert view.dtype == np.uint8 and view.shape == (*info.shape[:-1], info.row_bytes)
            assert view.tobytes() == data.tobytes(), name
            assert _address(view) - base == info.offset  # a view into the map, not a copy
            assert not view.flags.writeable
        arr = f.metadata["test.arr_f32"]
        assert 0 < _address(arr) - base < f.data_offset


def test_version_2_reads_like_version_3(tmp_path):
    p = tmp_path / "v2.gguf"
    p.write_bytes(VALID_BYTES[:4] + struct.pack("<I", 2) + VALID_BYTES[8:])
    with GGUFFile(p) as f:
        assert f.version == 2 and f.metadata["test.str"] == SCALARS["test.str"][0]
        assert np.array_equal(f.tensor("t.f32"), valid_tensors()["t.f32"][0])


def test_default_alignment_is_32_without_the_key(tmp_path):
    p = tmp_path / "noalign.gguf"
    w = gguf.GGUFWriter(p, "qwen2")
    data = np.arange(40, dtype=np.float32).reshape(5, 8)
    w.add_tensor("a", np.ones(3, np.float32))
    w.add_tensor("b", data)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with GGUFFile(p) as f:
        assert "general.alignment" not in f.metadata and f.alignment == 32
        assert f.data_offset % 32 == 0 and f.tensors["b"].offset == f.data_offset + 32
        assert np.array_equal(f.tensor("b"), data)


def test_other_types_read_and_removed_types_are_reported_when_mapped(tmp_path):
    """IQ2_XXS maps as raw rows (66-byte blocks); I32 as int32. A tensor whose type id ggml removed
    (31, Q4_0_4_4) leaves the file readable, but mapping it raises a clear error."""
    p = tmp_path / "types.gguf"
    rng = np.random.default_rng(5)
    iq = rng.integers(0, 256, (3, 66), dtype=np.uint8)
    ints = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    w = gguf.GGUFWriter(p, "qwen2")
    w.add_tensor("iq", iq, raw_dtype=QT.IQ2_XXS)
    w.add_tensor("ints", ints, raw_dtype=QT.I32)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with GGUFFile(p) as f:
        assert f.tensors["iq"].shape == (3, 256) and f.tensors["iq"].type_name == "IQ2_XXS"
        assert np.array_equal(f.tensor("iq"), iq)
        assert f.tensor("ints").dtype == np.int32 and np.array_equal(f.tensor("ints"), ints)
    type_field = gguf.GGUFReader(p).tensors[0].field
    type_off = type_field.offset + sum(q.nbytes for q in type_field.parts[:4])
    raw = bytearray(p.read_bytes())
    raw[type_off:type_off + 4] = struct.pack("<I", 31)
    p.write_bytes(bytes(raw))
    for metadata_only in (False, True):
        with GGUFFile(p, metadata_only=metadata_only) as f:
            info = f.tensors["iq"]
            assert info.type_name == "Q4_0_4_4" and info.n_bytes is None
            with pytest.raises(GGUFError, match=r"'iq' has type Q4_0_4_4 \(31\), which ggml removed"):
                f.tensor("iq")
            assert np.array_equal(f.tensor("ints"), ints)


def test_big_endian_file_is_rejected(tmp_path):
    p = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(p, "qwen2", endianess=gguf.GGUFEndian.BIG)
    w.add_uint32("x", 1)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(GGUFError, match=r"version at offset 4: .*big-endian"):
        GGUFFile(p)


def test_missing_tensor_and_closed_file(valid_path):
    f = GGUFFile(valid_path)
    with pytest.raises(GGUFError, match="no tensor named 'nope'"):
        f.tensor("nope")
    view = f.tensor("t.f32")
    f.close()
    with pytest.raises(GGUFError, match="closed"):
        f.tensor("t.f32")
    # Views handed out keep the map alive after close().
    assert np.array_equal(view, valid_tensors()["t.f32"][0])
    assert f.metadata["test.arr_i32"].tolist() == [1, -2, 3]


# --- the real header fixture ----------------------------------------------------------------

def test_fixture_reads_completely_in_metadata_only_mode():
    t0 = time.thread_time()  # CPU time of this thread: a loaded machine does not inflate it
    f = GGUFFile(FIXTURE, metadata_only=True)
    elapsed = time.thread_time() - t0
    assert elapsed < 1.0, f"parsing the 5.9 MB header took {elapsed:.2f} s of CPU"  # ~0.1 s measured
    md = f.metadata
    assert f.version == 3 and len(md) == 27 and len(f.tensors) == 339
    assert md["general.architecture"] == "qwen2" and md["qwen2.block_count"] == 28
    assert md["qwen2.embedding_length"] == 3584 and md["qwen2.context_length"] == 131072
    assert (md["qwen2.attention.head_count"], md["qwen2.attention.head_count_kv"]) == (28, 4)
    assert md["tokenizer.ggml.pre"] == "deepseek-r1-qwen"
    assert "{%" in md["tokenizer.chat_template"]
    tokens, merges = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.merges"]
    assert len(tokens) == 152064 and len(merges) == 151387
    assert md["tokenizer.ggml.token_type"].dtype == np.int32
    assert md["tokenizer.ggml.token_type"].shape == (152064,)
    # Digests of the same lists taken from the tokenizer.json fixture (tokens 0..151642 = its BPE vocab).
    digest = lambda xs: hashlib.sha256("\n".join(xs).encode()).hexdigest()  # noqa: E731
    assert digest(tokens[:151643]) == "36c3749fd3c87e2402f612459b45ae4e6ce5488a3ecde47a8a3ea3ed3d5dda5a"
    assert digest(merges) == "bbeef245f0b03a9613753068e5799c2496290005594c68f09eed68feedbe6d1f"
    assert {t.type_name for t in f.tensors.values()} == {"Q4_K", "Q6_K", "F32"}
    emb = f.tensors["token_embd.weight"]
    assert emb.shape == (152064, 3584) and emb.type_name == "Q4_K"
    assert emb.n_bytes == 152064 * 3584 // 256 * 144 and emb.row_bytes == 2016
    assert f.data_offset == 5953248 and f.file_size == 5953246  # even the last padding is cut
    with pytest.raises(GGUFError, match="truncated: tensor 'token_embd.weight'"):
        f.tensor("token_embd.weight")
    f.close()


def test_release_metadata_pages_keeps_the_metadata_readable():
    """After the vocabulary is read its pages are dropped (Model.load does this): the map's
    resident pages fall from the whole 5.9 MB header to almost nothing, and reading the metadata
    again gives the same values (the pages fault back in from the file)."""
    f = GGUFFile(FIXTURE, metadata_only=True)
    digest = lambda xs: hashlib.sha256("\n".join(xs).encode()).hexdigest()  # noqa: E731
    before = digest(f.metadata["tokenizer.ggml.merges"]), digest(f.metadata["tokenizer.ggml.tokens"])
    address = f._view.ctypes.data  # the map's first byte
    rss_read = mapping_rss_kib(address)
    f.release_metadata_pages()
    rss_released = mapping_rss_kib(address)
    if rss_read is not None:  # Linux: the mapping's own resident size
        assert rss_read > 4000 and rss_released < 200, (rss_read, rss_released)
    after = digest(f.metadata["tokenizer.ggml.merges"]), digest(f.metadata["tokenizer.ggml.tokens"])
    assert after == before
    f.close()


def test_string_arrays_are_checked_but_not_decoded_at_open():
    """The fixture's 152k tokens and 151k merges would take ~20 MB as Python str objects; opened,
    they are StringArrays holding an offset per string (~2.4 MB). tracemalloc counts exactly the
    Python and numpy allocations still held, so the bound does not depend on the machine."""
    import tracemalloc

    tracemalloc.start()
    try:
        f = GGUFFile(FIXTURE, metadata_only=True)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tokens = f.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, StringArray) and len(tokens) == 152064
    assert held < 4 * 2**20, f"{held / 2**20:.1f} MiB held after open"
    assert tokens[0] == "!" and tokens[-1] == tokens[152063] and tokens[151643] == "<｜end▁of▁sentence｜>"
    blob, offsets = tokens.joined()
    assert blob[offsets[151643]:offsets[151644]] == "<｜end▁of▁sentence｜>".encode()
    assert offsets[-1] == len(blob)
    with pytest.raises(IndexError):
        tokens[152064]
    f.close()


def test_fixture_in_normal_mode_is_reported_truncated():
    with pytest.raises(GGUFError) as e:
        GGUFFile(FIXTURE)
    msg = str(e.value)
    assert "truncated" in msg and "'output.weight'" in msg  # the first tensor in the data section
    assert "5953246 bytes" in msg and "447068160 bytes" in msg and re.search(r"at offset \d+", msg)


# --- malformed files ------------------------------------------------------------------------

def test_corpus_is_large_and_covers_every_category():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 40
    for part in ("magic", "version", "count", "length", "value_type", "tensor_type", "nested",
                 "duplicate_key", "duplicate_tensor", "past_end", "misaligned", "overflow",
                 "n_dims_0", "n_dims_5", "alignment_not_power", "utf8", "truncated_boundary",
                 "truncated_random"):
        assert any(part in n for n in names), part


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_file_raises_gguf_error_naming_the_problem(case, tmp_path):
    p = tmp_path / f"{case.name}.gguf"
    p.write_bytes(case.data)
    with pytest.raises(GGUFError) as e:
        GGUFFile(p)
    msg = str(e.value)
    assert re.search(case.match, msg), msg
    assert re.search(r"at offset \d+", msg), msg
    if case.in_header:
        with pytest.raises(GGUFError, match=case.match):
            GGUFFile(p, metadata_only=True)
    else:  # the header is intact: a metadata-only read succeeds
        with GGUFFile(p, metadata_only=True) as f:
            assert f.metadata["general.alignment"] == 64


# --- resources ------------------------------------------------------------------------------

def test_opening_a_200mb_file_does_not_read_it(tmp_path):
    """A 200 MiB F32 tensor (header by GGUFWriter, data a sparse extension of the file): opening and
    taking a view must leave RSS within 16 MiB of where it was (a copy would add 200 MiB)."""
    p = tmp_path / "big.gguf"
    rows, cols = 50 * 1024, 1024
    w = gguf.GGUFWriter(p, "qwen2")
    w.add_tensor_info("big", (rows, cols), np.dtype(np.float32), rows * cols * 4)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_ti_data_to_file(), w.close()
    data_offset = -(-p.stat().st_size // 32) * 32
    os.truncate(p, data_offset + rows * cols * 4)
    before = rss_bytes()
    with GGUFFile(p) as f:
        view = f.tensor("big")
        grown = rss_bytes() - before
        assert view.shape == (rows, cols) and view.dtype == np.float32
        assert f.file_size > 200 * 2**20
        assert not view[-1, -4:].any()  # the sparse tail reads as zeros
        del view
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, VALID_LAYOUT.ti_end + 64),
                  st.sampled_from([b"\x00", b"\xff", b"\x80", b"\x09", b"\x05",
                                   struct.pack("<Q", 2**63), struct.pack("<Q", 2**32 + 1),
                                   struct.pack("<I", 0xFFFFFFFF), struct.pack("<Q", 3)])),
        min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, len(VALID_BYTES))),
)
def test_fuzzed_bytes_raise_only_gguf_error(edits, cut):
    """Random overwrites (header-biased) and truncation of the valid file: opening, in both modes,
    and mapping every tensor either works or raises GGUFError; nothing else escapes."""
    data = bytearray(VALID_BYTES)
    for pos, new in edits:
        data[pos:pos + len(new)] = new
    data = bytes(data[:cut] if cut is not None else data)
    with tempfile.NamedTemporaryFile(suffix=".gguf") as fh:
        fh.write(data)
        fh.flush()
        for metadata_only in (False, True):
            try:
                with GGUFFile(fh.name, metadata_only=metadata_only) as f:
                    for name in f.tensors:
                        try:
                            v = f.tensor(name)
                            assert v.nbytes == f.tensors[name].n_bytes
                        except GGUFError:
                            pass
            except GGUFError:
                pass
