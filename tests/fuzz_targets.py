"""Fuzz entry points shared by tests/test_reliability.py (a few seconds each, in CI) and
bench/fuzz.py (minutes, with atheris when installed, else seeded random mutation).

Every target takes one `bytes` input. It returns normally when the code under test behaved (it
worked, or it refused the input with the project's error); anything else escaping it, an
assertion failure, a hang or a crash of the process, is a finding.

- `gguf_target`: the bytes as a GGUF file, opened by `qwen_cpu.gguf.GGUFFile` in both modes and
  every tensor mapped. Only GGUFError may escape.
- `model_target`: the bytes as a model file, loaded with `Model.load`, its tokenizer built and
  three tokens run through it. Only QwenCpuError may escape.
- `tokenizer_target`: the bytes turned into hostile text by `text_from_bytes` (lone surrogates,
  control characters, control-token markup, combining marks, runs of up to 60k characters),
  encoded and decoded by the Qwen2.5 tokenizer: ids in the vocabulary, and
  decode(encode(s)) == NFC(clean_text(s)) with and without control-token parsing.

Seeds: `gguf_seed()` (tests/gguf_corpus.py's valid file, every value type and five tensor types)
and `model_seed()` (the golden tiny Qwen2 Q8_0 model with a small tokenizer, `write_model`).
"""

from __future__ import annotations

import functools
import os
import random
import struct
import tempfile
import unicodedata
from pathlib import Path

import gguf
import numpy as np

from qwen_cpu.errors import GGUFError, QwenCpuError
from qwen_cpu.gguf import GGUFFile

TESTS = Path(__file__).parent
GOLDEN = TESTS / "data" / "golden"
TINY_MODEL = GOLDEN / "qwen2-tiny-tied.q8_0.gguf"  # qwen2, n_vocab 512, n_embd 64, 2 layers, 4/2 heads

# Tempfiles on tmpfs when there is one: the targets write one file per input.
_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# ---- a small byte-level BPE vocabulary for the tiny golden models ----------------------------------

def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in character of each byte 0..255 (the byte-level BPE alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


MERGES = ["Ġ t", "h e", "i n", "e r", "a n", "Ġ a", "o n", "Ġt he", "r e", "Ġ s", "e n", "a t",
          "o r", "Ġ w", "Ġ c", "i s", "Ġ o", "Ġ b", "e s", "Ġ f"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_vocab(n_vocab: int = 512) -> dict:
    """tokenizer.ggml.* metadata of an n_vocab-token byte-level BPE (qwen2 pre-tokenizer):
    256 byte tokens, 20 merges, three control tokens (<|endoftext|> = BOS, <|im_end|> = EOS) and
    unused fillers. Returns key -> (value, GGUF value type, array element type or None)."""
    VT = gguf.GGUFValueType
    tokens = _byte_chars() + [m.replace(" ", "") for m in MERGES]
    first_special = len(tokens)
    tokens += SPECIALS
    tokens += [f"<|unused_{i}|>" for i in range(n_vocab - len(tokens))]
    types = [1] * first_special + [3] * len(SPECIALS) + [5] * (n_vocab - first_special - len(SPECIALS))
    return {
        "tokenizer.ggml.model": ("gpt2", VT.STRING, None),
        "tokenizer.ggml.pre": ("qwen2", VT.STRING, None),
        "tokenizer.ggml.tokens": (tokens, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.merges": (MERGES, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.token_type": (types, VT.ARRAY, VT.INT32),
        "tokenizer.ggml.bos_token_id": (first_special, VT.UINT32, None),
        "tokenizer.ggml.eos_token_id": (first_special + 2, VT.UINT32, None),
        "tokenizer.ggml.add_bos_token": (False, VT.BOOL, None),
    }


_DROP = object()


def write_model(dst: Path, src: Path = TINY_MODEL, *, meta: dict | None = None, tensors: dict | None = None,
                tokenizer: bool = True) -> Path:
    """Copy the GGUF model `src` to `dst` with gguf-py's writer, changed as asked.

    meta: key -> (value, value type, element type or None) to set, or -> `DROP` to remove;
    `{arch}` in a key is replaced by the file's architecture. tensors: name -> (array, raw
    ggml type or None) to replace or add, or -> `DROP`. tokenizer: add `tiny_vocab()` first.
    """
    r = gguf.GGUFReader(src)
    arch = str(r.fields["general.architecture"].contents())
    fields: dict[str, tuple] = {}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        vtype = field.types[0]
        etype = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        fields[key] = (field.contents(), vtype, etype)
    if tokenizer:
        fields.update(tiny_vocab(_n_vocab(r)))
    for key, value in (meta or {}).items():
        key = key.replace("{arch}", arch)
        if value is DROP:
            fields.pop(key, None)
        else:
            fields[key] = value
    new_arch = fields.pop("general.architecture")[0]
    w = gguf.GGUFWriter(dst, new_arch)
    for key, (value, vtype, etype) in fields.items():
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, list(value), vtype, sub_type=etype)
        else:
            w.add_key_value(key, value, vtype)
    QT = gguf.GGMLQuantizationType
    replaced = dict(tensors or {})
    for t in r.tensors:
        new = replaced.pop(t.name, None)
        if new is DROP:
            continue
        data, raw = new if new is not None else (np.array(t.data), t.tensor_type)
        if raw in (QT.F32, QT.F16):
            raw = None
        w.add_tensor(t.name, data, raw_dtype=raw)
    for name, (data, raw) in replaced.items():
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


DROP = _DROP


def _n_vocab(reader: gguf.GGUFReader) -> int:
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            return int(t.shape[-1])  # gguf-py lists dims fastest-first: (n_embd, n_vocab)
    raise ValueError("no token_embd.weight")


# ---- seeds -----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def gguf_seed() -> bytes:
    """The valid file of tests/gguf_corpus.py (every value type, five tensor types)."""
    from gguf_corpus import write_valid

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "valid.gguf"
        write_valid(p)
        return p.read_bytes()


@functools.lru_cache(maxsize=None)
def model_seed() -> bytes:
    """The tiny golden Qwen2 Q8_0 model with the tiny vocabulary (131 KB)."""
    with tempfile.TemporaryDirectory() as d:
        return write_model(Path(d) / "seed.gguf").read_bytes()


# ---- mutation (the driver used when atheris is absent, and by the CI tests) --------------------------

_INTERESTING = [struct.pack("<Q", v) for v in (0, 1, 2**31, 2**32, 2**32 + 1, 2**63, 2**64 - 1, 3)] + \
               [struct.pack("<I", v) for v in (0, 1, 12, 13, 16, 0x7FFFFFFF, 0xFFFFFFFF)] + \
               [b"\x00", b"\xff", b"\x80", b"\x09", b"\x05", b"\xc3\x28", b"\xed\xa0\x80"]


def mutate(seed: bytes, rng: random.Random, header_bytes: int | None = None) -> bytes:
    """1-6 random edits of `seed`: byte overwrites, interesting integers, chunk duplication or
    deletion, truncation. Offsets favour the first `header_bytes` (where the parser works)."""
    data = bytearray(seed)
    hb = min(header_bytes or len(data), len(data))
    for _ in range(rng.randint(1, 6)):
        if not data:
            break
        pos = rng.randrange(hb) if rng.random() < 0.8 else rng.randrange(len(data))
        pos = min(pos, len(data) - 1)
        op = rng.random()
        if op < 0.35:
            data[pos] = rng.randrange(256)
        elif op < 0.7:
            new = rng.choice(_INTERESTING)
            data[pos:pos + len(new)] = new
        elif op < 0.8:
            n = rng.randint(1, 64)
            data[pos:pos] = data[pos:pos + n]
        elif op < 0.9:
            del data[pos:pos + rng.randint(1, 64)]
        else:
            del data[rng.randrange(len(data)):]
    return bytes(data)


# ---- targets -----------------------------------------------------------------------------------------

def _write_temp(data: bytes) -> str:
    fd, path = tempfile.mkstemp(suffix=".gguf", dir=_TMP)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def gguf_target(data: bytes) -> None:
    """Open `data` as GGUF in both modes and map every tensor: works or raises GGUFError."""
    path = _write_temp(data)
    try:
        for metadata_only in (False, True):
            try:
                with GGUFFile(path, metadata_only=metadata_only) as f:
                    for name, info in f.tensors.items():
                        try:
                            v = f.tensor(name)
                        except GGUFError:
                            continue
                        assert v.nbytes == info.n_bytes, (name, v.nbytes, info.n_bytes)
            except GGUFError:
                pass
    finally:
        os.unlink(path)


def model_target(data: bytes) -> None:
    """Load `data` as a model, build its tokenizer and run three tokens: works or QwenCpuError."""
    from qwen_cpu import Model

    path = _write_temp(data)
    try:
        try:
            with Model.load(path, n_ctx=8, n_threads=1) as m:
                m.tokenizer.encode("the cat")
                logits = m.logits([0, 1, 2])
                assert logits.shape == (3, m.config.n_vocab)
        except QwenCpuError:
            pass
    finally:
        os.unlink(path)


# Pieces the text generator draws from: markup, characters that compose under NFC, line ends,
# the byte-order mark, and the replacement character itself.
_PIECES = SPECIALS + ["<tool_call>", "</tool_call>", "e\u0301", "\u1100\u1161\u11a8", "\r\n", "\u2028", "\ufeff",
                      "\ufffd", "\U0001f600", " \t", "'s", "'LL", "123456", "\u0130", "\u00df"]
_RANGES = [(0, 0x20), (0x20, 0x7F), (0x80, 0x800), (0xD800, 0xE000), (0x300, 0x370), (0x4E00, 0x9FFF),
           (0xAC00, 0xD7A4), (0x10000, 0x110000)]


MAX_TEXT = 40_000  # characters: bounds one input's time (the 1 MB run has its own test)


def text_from_bytes(data: bytes) -> str:
    """Deterministic hostile text from fuzzer bytes: each 3-byte group picks a random character
    of some Unicode range (lone surrogates included), a piece from _PIECES, or a run of one
    character repeated up to 15,000 times; at most MAX_TEXT characters in all."""
    out: list[str] = []
    n = 0
    for i in range(0, len(data) - 2, 3):
        kind, a, b = data[i], data[i + 1], data[i + 2]
        if kind < 160:
            lo, hi = _RANGES[kind % len(_RANGES)]
            piece = chr(lo + ((a << 8) | b) * 17 % (hi - lo))
        elif kind < 248:
            piece = _PIECES[a % len(_PIECES)]
        else:
            ch = chr(_RANGES[a % len(_RANGES)][0] + b) if a % 3 else " "
            piece = ch * ((kind - 247) * 1875)
        if n + len(piece) > MAX_TEXT:
            break
        out.append(piece)
        n += len(piece)
    return "".join(out)


@functools.lru_cache(maxsize=None)
def qwen_tokenizer():
    from qwen_cpu.tokenizer import Tokenizer

    return Tokenizer.from_file(TESTS / "data" / "qwen2.5-tokenizer.json")


def tokenizer_target(data: bytes) -> None:
    """Encode/decode the hostile text of `data` with the Qwen2.5 tokenizer; check the round trip.

    decode(encode(s)) == NFC(clean_text(s)) exactly, except where markup (an added token, all of
    which end in '>') is followed by a combining mark: the token is matched before normalisation,
    as in the reference tokenizer, so '>' + U+0338 stays two characters instead of composing to
    U+226F; the round trip then holds up to NFC."""
    from qwen_cpu.tokenizer import clean_text

    tok = qwen_tokenizer()
    text = text_from_bytes(data)
    # bytes input too: the text as UTF-8 with surrogates as (invalid) 3-byte sequences, each of
    # whose bytes becomes U+FFFD, as bytes.decode("utf-8", "replace") does it
    raw = text.encode("utf-8", "surrogatepass")
    for source, cleaned, modes in ((text, clean_text(text), (False, True)),
                                   (raw, raw.decode("utf-8", "replace"), (False,))):
        expected = unicodedata.normalize("NFC", cleaned)
        exact = not any(c == ">" and unicodedata.combining(d) for c, d in zip(cleaned, cleaned[1:]))
        for parse_special in modes:
            ids = tok.encode(source, parse_special=parse_special)
            assert all(0 <= i < tok.vocab_size for i in ids)
            got = tok.decode(ids)
            ok = got == expected if exact else unicodedata.normalize("NFC", got) == expected
            assert ok, f"round trip differs ({type(source).__name__}, parse_special={parse_special}): {source!r:.300}"


TARGETS = {"gguf": (gguf_target, gguf_seed), "model": (model_target, model_seed),
           "tokenizer": (tokenizer_target, lambda: bytes(range(256)) * 2)}


def _header_size(data: bytes) -> int:
    """Bytes before the tensor data of a valid GGUF (where mutations find the parser)."""
    path = _write_temp(data)
    try:
        with GGUFFile(path) as f:
            return f.data_offset
    finally:
        os.unlink(path)


def run_random(name: str, seconds: float, seed: int = 0, max_iters: int | None = None) -> int:
    """Run target `name` on seeded random inputs for `seconds` (or max_iters inputs); returns the
    number of inputs run. Findings propagate (with the input attached to the exception)."""
    import time

    target, seed_fn = TARGETS[name]
    base = seed_fn()
    rng = random.Random(seed)
    header = _header_size(base) if name != "tokenizer" else None
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and (max_iters is None or n < max_iters):
        if name == "tokenizer":
            data = rng.randbytes(rng.choice((3, 30, 300, 900)))
        else:
            data = mutate(base, rng, header)
        try:
            target(data)
        except BaseException as e:
            e.fuzz_input = data  # type: ignore[attr-defined]
            raise
        n += 1
    return n
