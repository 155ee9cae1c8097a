"""Byte-level BPE tokenizer from GGUF metadata or a `tokenizer.json`; a streaming detokenizer.

Encoding runs on the `tokenizers` library (a Rust BPE); this module only assembles it from the GGUF
keys (`tokenizer.ggml.*`) the way llama.cpp reads them, and keeps its own byte table per token so
that decoding and streaming never depend on how a decoder treats partial UTF-8.

Text handling, stated once:
- `str` input with lone surrogates (U+D800..U+DFFF) and `bytes` input that is not valid UTF-8 are
  both cleaned by replacing each offending code point / byte sequence with U+FFFD, never rejected.
- Qwen2 vocabularies (`pre` = qwen2 / deepseek-r1-qwen, or a tokenizer.json that says so) normalise
  text to NFC before splitting, as Qwen2.5's tokenizer.json does; so `decode(encode(t)) == NFC(t)`.
- Template markup is the only text that should be encoded with `parse_special=True`; user text
  containing `<|im_end|>` is then spelled out as ordinary characters.
"""

from __future__ import annotations

import codecs
import json
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import QwenCpuError
from .gguf import StringArray

if TYPE_CHECKING:
    import tokenizers  # imported where a tokenizer is built: 4 MiB of RSS that id-level use never needs

# GGUF token types (tokenizer.ggml.token_type), as llama.cpp defines them.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL = 1, 2, 3
TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 4, 5, 6

# Pre-tokenizer split patterns per `tokenizer.ggml.pre`, applied one after another (each splits the
# pieces of the previous one, matches and gaps both kept). These are the patterns llama.cpp's
# llama-vocab.cpp associates with each name; the qwen2 one equals Qwen2.5's tokenizer.json pattern
# with the case-insensitive group spelled out.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_QWEN2 = _CONTRACTIONS + (r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3 = _CONTRACTIONS + (r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_PATTERNS: dict[str, tuple[str, ...]] = {
    "qwen2": (_QWEN2,),
    "deepseek-r1-qwen": (_QWEN2,),
    "llama-bpe": (_LLAMA3,),
    "smollm": (r"\p{N}", _GPT2),
    "gpt2": (_GPT2,),
}
# Vocabularies whose reference tokenizer normalises to NFC (Qwen2.5's tokenizer.json does).
_NFC_PRE = {"qwen2", "deepseek-r1-qwen"}
# llama.cpp's llama3 vocabulary looks a whole pre-token up before merging it.
_IGNORE_MERGES_PRE = {"llama-bpe"}

# Control tokens that end a turn or a text in the families we read; they join EOS in `eos_ids`.
END_OF_GENERATION_TOKENS = (
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|end|>",
    "<end_of_turn>", "<｜end▁of▁sentence｜>",
)

_SURROGATES = re.compile("[\ud800-\udfff]")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE vocabularies."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
                 + list(range(0xAE, 0xFF + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_UNICODE_TO_BYTE = {c: b for b, c in _byte_to_unicode().items()}
# For str.translate: byte-level characters -> their byte as a latin-1 character. U+0080..U+00FF
# outside the table go to U+0100, which latin-1 cannot encode, so they take the UTF-8 path.
_BYTE_LEVEL_TO_LATIN1 = {**{c: 0x100 for c in range(0x80, 0x100)},
                         **{ord(c): b for c, b in _UNICODE_TO_BYTE.items()}}


def clean_text(text: str | bytes) -> str:
    """Return `text` as a valid str: bytes decoded as UTF-8 and lone surrogates, each -> U+FFFD."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise QwenCpuError(f"text must be str or bytes, got {type(text).__name__}")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)


def check_gguf_vocab(meta: dict, n_vocab: int | None = None) -> None:
    """Raise QwenCpuError naming the problem if the `tokenizer.ggml.*` arrays and ids of a GGUF
    metadata dict are malformed: tokens/merges not arrays of strings, token_type not an integer
    array of the same length, BOS/EOS/EOT/EOM ids outside the vocabulary, or (given the model's
    n_vocab, the embedding's row count) more tokens than the model has embeddings. Cheap (no
    BPE is built), so that Model.load can reject a bad vocabulary before the tokenizer is used.
    A padding id out of range is tolerated (some converters write one; nothing here uses it)."""
    def strings(key: str) -> Sequence[str]:
        v = meta.get(key)
        if v is None:
            raise QwenCpuError(f"GGUF metadata lacks {key}")
        # a StringArray (GGUFFile) holds only str by construction; a list is checked item by item
        if not (isinstance(v, StringArray) or isinstance(v, list) and all(isinstance(t, str) for t in v)):
            raise QwenCpuError(f"{key} must be an array of strings, got {_describe(v)}")
        if not v:
            raise QwenCpuError(f"{key} is empty")
        return v

    tokens = strings("tokenizer.ggml.tokens")
    strings("tokenizer.ggml.merges")
    types = meta.get("tokenizer.ggml.token_type")
    if types is not None:
        if not (hasattr(types, "dtype") and types.ndim == 1 and types.dtype.kind in "iu"):
            raise QwenCpuError(f"tokenizer.ggml.token_type must be an array of integers, got {_describe(types)}")
        if len(types) != len(tokens):
            raise QwenCpuError(f"tokenizer.ggml.token_type has {len(types)} entries for "
                               f"{len(tokens)} tokens")
    if n_vocab is not None and len(tokens) > n_vocab:
        raise QwenCpuError(f"the vocabulary has {len(tokens)} tokens but token_embd.weight has only "
                           f"{n_vocab} rows")
    for key in ("bos_token_id", "eos_token_id", "eot_token_id", "eom_token_id"):
        v = meta.get(f"tokenizer.ggml.{key}")
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise QwenCpuError(f"tokenizer.ggml.{key} must be an integer, got {_describe(v)}")
        if not 0 <= int(v) < len(tokens):
            raise QwenCpuError(f"tokenizer.ggml.{key} = {int(v)} is outside the vocabulary of "
                               f"{len(tokens)} tokens")


def _describe(v) -> str:
    if hasattr(v, "dtype"):
        return f"an array of {v.dtype}"
    if isinstance(v, (list, StringArray)):
        kinds = sorted({type(t).__name__ for t in v})
        return f"a list of {', '.join(kinds) or 'nothing'}"
    return f"{type(v).__name__} {v!r}"[:80]


class _PackedStrings:
    """Strings kept as one UTF-8 blob and their offsets: a 152k-token vocabulary takes ~2.5 MB
    this way instead of ~10 MB as a list of str, and needs no GGUF map to stay open."""

    def __init__(self, blob: bytes, offsets: np.ndarray):
        self._blob = blob          # UTF-8 (surrogates passed through) of all strings back to back
        self._offsets = offsets    # int64 (n + 1,): start of each string in blob, then the end

    @classmethod
    def of(cls, strings: Iterable[str]) -> _PackedStrings:
        if isinstance(strings, StringArray):  # straight from the file's bytes, no decoding
            return cls(*strings.joined())
        parts = [t.encode("utf-8", "surrogatepass") for t in strings]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)), out=offsets[1:])
        return cls(b"".join(parts), offsets)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._blob[self._offsets[i]:self._offsets[i + 1]].decode("utf-8", "surrogatepass")

    def __iter__(self):
        blob, offsets = self._blob, self._offsets.tolist()
        return (blob[a:b].decode("utf-8", "surrogatepass") for a, b in zip(offsets, offsets[1:]))


class Tokenizer:
    """A byte-level BPE tokenizer with its special tokens.

    Build it with `from_gguf_metadata` or `from_file`. Attributes: `vocab_size` (number of token ids
    with a text), `bos_id` / `eos_id` / `eot_id` / `pad_id` (int or None), `add_bos` / `add_eos`,
    `eos_ids` (frozenset: EOS plus end-of-turn tokens), `special_tokens` (dict text -> id of the
    control tokens, which only template markup may produce), `chat_template` (str or None).
    """

    def __init__(self, hf: tokenizers.Tokenizer, tokens: Sequence[str] | _PackedStrings, special_ids: set[int],
                 added_ids: set[int], *, bos_id=None, eos_id=None, eot_id=None, pad_id=None,
                 add_bos=False, add_eos=False, chat_template=None, extra_eos_ids=()):
        self._hf = hf
        if not isinstance(tokens, _PackedStrings):
            tokens = _PackedStrings.of(tokens)
        self._tokens = tokens                      # (vocab_size,) token text as stored in the vocab
        self._added_ids = frozenset(added_ids)     # ids whose text is literal, not byte-level
        self._special_ids = frozenset(special_ids)
        self._lock = threading.Lock()              # guards the encode_special_tokens toggle
        self._bytes_cache: dict[int, bytes] = {}
        self.vocab_size = len(tokens)
        self.special_tokens = {tokens[i]: i for i in sorted(special_ids)}
        self.bos_id, self.eos_id, self.eot_id, self.pad_id = bos_id, eos_id, eot_id, pad_id
        self.add_bos, self.add_eos = bool(add_bos), bool(add_eos)
        self.chat_template = chat_template
        eos = {i for i in (eos_id, eot_id, *extra_eos_ids) if i is not None}
        eos |= {self.special_tokens[t] for t in END_OF_GENERATION_TOKENS
                if t in self.special_tokens}
        self.eos_ids = frozenset(eos)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_gguf_metadata(cls, meta: dict, fallback_pre: str | None = None) -> Tokenizer:
        """Build from a GGUF metadata dict (`GGUFFile(path).metadata`).

        Reads `tokenizer.ggml.{model,pre,tokens,merges,token_type,bos_token_id,eos_token_id,
        eot_token_id,padding_token_id,add_bos_token,add_eos_token}` and `tokenizer.chat_template`.
        Only `model` = gpt2 (byte-level BPE) is supported. An unknown `pre` raises QwenCpuError
        unless `fallback_pre` names a known one to use instead.
        """
        import tokenizers
        from tokenizers import decoders, models, normalizers, pre_tokenizers

        def get(key, default=None):
            return meta.get(f"tokenizer.ggml.{key}", default)

        if get("model") != "gpt2":
            raise QwenCpuError(f"tokenizer.ggml.model = {get('model')!r}: only 'gpt2' "
                               "(byte-level BPE) vocabularies are supported")
        pre = get("pre", "default")
        if pre not in PRE_TOKENIZER_PATTERNS:
            if fallback_pre is None:
                raise QwenCpuError(f"tokenizer.ggml.pre = {pre!r} is not supported (known: "
                                   f"{', '.join(sorted(PRE_TOKENIZER_PATTERNS))}); pass "
                                   "fallback_pre= to tokenize with one of those")
            if fallback_pre not in PRE_TOKENIZER_PATTERNS:
                raise QwenCpuError(f"fallback_pre = {fallback_pre!r} is not a known pre-tokenizer")
            pre = fallback_pre
        check_gguf_vocab(meta)
        # GGUFFile gives StringArrays (decoded on access), tests give lists. The token texts are
        # kept packed; the vocab dict and merge pairs live only until the Rust BPE holds its own.
        tokens, types = _PackedStrings.of(get("tokens")), get("token_type")
        types = (np.full(len(tokens), TOKEN_NORMAL, dtype=np.int64) if types is None
                 else np.asarray(types, dtype=np.int64))
        vocab: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            vocab.setdefault(tok, i)       # a duplicated text keeps its first id, as a lookup would
        pairs = []
        for m in get("merges"):
            left, sep, right = m.partition(" ")
            if not sep:
                raise QwenCpuError(f"malformed merge {m!r} in tokenizer.ggml.merges")
            pairs.append((left, right))
        try:
            model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre in _IGNORE_MERGES_PRE)
        except Exception as e:  # e.g. a merge whose parts are not tokens; the message names it
            raise QwenCpuError(f"invalid tokenizer.ggml vocabulary: {e}") from None
        del vocab, pairs
        hf = tokenizers.Tokenizer(model)
        if pre in _NFC_PRE:
            hf.normalizer = normalizers.NFC()
        splits = [pre_tokenizers.Split(tokenizers.Regex(p), behavior="isolated")
                  for p in PRE_TOKENIZER_PATTERNS[pre]]
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        hf.decoder = decoders.ByteLevel()

        special = set(np.flatnonzero((types == TOKEN_CONTROL) | (types == TOKEN_UNKNOWN)).tolist())
        user = set(np.flatnonzero(types == TOKEN_USER_DEFINED).tolist())
        hf.add_special_tokens([tokenizers.AddedToken(tokens[i], special=True, normalized=False)
                               for i in sorted(special)])
        hf.add_tokens([tokenizers.AddedToken(tokens[i], special=False, normalized=False)
                       for i in sorted(user)])

        def tid(key):  # ids were range-checked by check_gguf_vocab (a bad padding id is ignored)
            v = get(key)
            return int(v) if v is not None and 0 <= int(v) < len(tokens) else None

        return cls(hf, tokens, special, special | user, bos_id=tid("bos_token_id"),
                   eos_id=tid("eos_token_id"), eot_id=tid("eot_token_id"),
                   pad_id=tid("padding_token_id"), add_bos=bool(get("add_bos_token", False)),
                   add_eos=bool(get("add_eos_token", False)),
                   chat_template=meta.get("tokenizer.chat_template"),
                   extra_eos_ids=[i for i in [tid("eom_token_id")] if i is not None])

    @classmethod
    def from_file(cls, path: str | Path, config_path: str | Path | None = None) -> Tokenizer:
        """Build from a HF `tokenizer.json` (byte-level BPE).

        BOS/EOS, `add_bos_token` and `chat_template` come from `config_path`, by default the
        `tokenizer_config.json` beside `path` when present; otherwise no BOS is added and EOS is
        the first known end-of-text control token of the vocabulary.
        """
        import tokenizers

        path = Path(path)
        try:
            hf = tokenizers.Tokenizer.from_file(str(path))
            spec = json.loads(path.read_text(encoding="utf-8"))
        except Exception as e:  # the library's own errors name the problem
            raise QwenCpuError(f"cannot load tokenizer {path}: {e}") from e
        if spec.get("model", {}).get("type") != "BPE":
            raise QwenCpuError(f"{path}: only BPE tokenizers are supported")
        decoder = spec.get("decoder") or {}
        kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", [])}
        if "ByteLevel" not in kinds:
            raise QwenCpuError(f"{path}: only byte-level BPE (ByteLevel decoder) is supported, "
                               f"found decoder {decoder.get('type')!r}")
        size = hf.get_vocab_size(with_added_tokens=True)
        id_to_text = {i: t for t, i in hf.get_vocab(with_added_tokens=True).items()}
        size = max(size, max(id_to_text) + 1)
        tokens = [id_to_text.get(i, "") for i in range(size)]
        added = spec.get("added_tokens") or []
        special = {a["id"] for a in added if a.get("special")}
        added_ids = {a["id"] for a in added}

        config_path = Path(config_path) if config_path else path.with_name("tokenizer_config.json")
        config = {}
        if config_path.exists():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise QwenCpuError(f"{config_path}: not valid JSON ({e})") from e

        def tid(name):
            v = config.get(name)
            if isinstance(v, dict):
                v = v.get("content")
            return hf.token_to_id(v) if isinstance(v, str) else None

        eos = tid("eos_token")
        if eos is None:
            eos = next((hf.token_to_id(t) for t in END_OF_GENERATION_TOKENS
                        if hf.token_to_id(t) is not None), None)
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t.get("template") for t in template
                             if t.get("name") == "default"), None)
        return cls(hf, tokens, special, added_ids, bos_id=tid("bos_token"), eos_id=eos,
                   pad_id=tid("pad_token"), add_bos=bool(config.get("add_bos_token", False)),
                   add_eos=bool(config.get("add_eos_token", False)), chat_template=template)

    # ---- encoding -----------------------------------------------------------------------------

    def encode(self, text: str | bytes, add_special: bool = False,
               parse_special: bool = False) -> list[int]:
        """Token ids of `text` (cleaned by `clean_text`).

        add_special: prepend BOS / append EOS where the vocabulary asks for it (`add_bos`,
        `add_eos`).
        parse_special: recognise control-token texts such as `<|im_start|>` as those tokens; only
        for trusted template markup. Non-special added tokens (e.g. `<tool_call>`) always match.
        """
        text = clean_text(text)
        with self._lock:
            self._hf.encode_special_tokens = not parse_special
            ids = self._hf.encode(text, add_special_tokens=False).ids
        if add_special:
            if self.add_bos and self.bos_id is not None:
                ids.insert(0, self.bos_id)
            if self.add_eos and self.eos_id is not None:
                ids.append(self.eos_id)
        return ids

    # ---- decoding -----------------------------------------------------------------------------

    def token_to_bytes(self, token_id: int) -> bytes:
        """The bytes token `token_id` stands for (b"" for ids past the vocabulary, e.g. padding
        rows of an embedding). Control/added tokens give their literal text."""
        token_id = int(token_id)
        cached = self._bytes_cache.get(token_id)
        if cached is not None:
            return cached
        if token_id < 0:
            raise QwenCpuError(f"token id {token_id} is negative")
        if token_id >= self.vocab_size:
            return b""
        out = self._bytes_of(token_id, self._tokens[token_id])
        self._bytes_cache[token_id] = out
        return out

    def all_token_bytes(self) -> list[bytes]:
        """The bytes of every token id (vocab_size,), as `token_to_bytes` gives them, without
        filling its cache (for building a constrained-decoding token table once)."""
        return [self._bytes_of(i, text) for i, text in enumerate(self._tokens)]

    def _bytes_of(self, token_id: int, text: str) -> bytes:
        if token_id in self._added_ids:
            return text.encode("utf-8")
        try:  # byte-level text: one character per byte
            return text.translate(_BYTE_LEVEL_TO_LATIN1).encode("latin-1")
        except UnicodeEncodeError:  # a character outside the byte table is kept as UTF-8
            return b"".join(bytes([_UNICODE_TO_BYTE[c]]) if c in _UNICODE_TO_BYTE
                            else c.encode("utf-8", "surrogateescape") for c in text)

    def token_to_piece(self, token_id: int) -> str:
        """The text of one token; a token that is part of a multi-byte character shows U+FFFD."""
        return self.token_to_bytes(token_id).decode("utf-8", errors="replace")

    def decode(self, ids, skip_special: bool = False) -> str:
        """Text of a sequence of ids; invalid UTF-8 (e.g. a cut character) becomes U+FFFD.

        skip_special: drop control tokens (`<|im_end|>` ...) instead of spelling them.
        """
        special = self._special_ids
        data = b"".join(self.token_to_bytes(i) for i in ids
                        if not (skip_special and int(i) in special))
        return data.decode("utf-8", errors="replace")

    # ---- lookups ------------------------------------------------------------------------------

    def id_to_token(self, token_id: int) -> str:
        """The token's text as stored in the vocabulary (byte-level form, e.g. 'Ġhello')."""
        if not 0 <= int(token_id) < self.vocab_size:
            raise QwenCpuError(f"token id {token_id} outside vocabulary of {self.vocab_size}")
        return self._tokens[int(token_id)]

    def token_to_id(self, text: str) -> int | None:
        """Id of a token given its vocabulary text, or None."""
        return self._hf.token_to_id(text)

    def is_special(self, token_id: int) -> bool:
        """True for control tokens (the ones only template markup may produce)."""
        return int(token_id) in self._special_ids

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id}, "
                f"eos_ids={sorted(self.eos_ids)})")


class StreamingDetokenizer:
    """Turns ids fed one at a time into text deltas that never split a UTF-8 character.

    `feed(id) -> str` returns the newly completed text (possibly ""); bytes of an unfinished
    character are held back until a later token completes them. `finish() -> str` returns what is
    held back, with U+FFFD for an incomplete tail. The concatenation of all deltas equals
    `tokenizer.decode(ids, skip_special)`.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tok = tokenizer
        self._skip_special = skip_special
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""        # all text emitted so far
        self.tokens: list[int] = []

    def feed(self, token_id: int) -> str:
        """Add one token; return the text it completes."""
        self.tokens.append(int(token_id))
        if self._skip_special and self._tok.is_special(token_id):
            return ""
        delta = self._decoder.decode(self._tok.token_to_bytes(token_id), final=False)
        self.text += delta
        return delta

    def finish(self) -> str:
        """Flush held-back bytes (an incomplete character becomes U+FFFD)."""
        delta = self._decoder.decode(b"", final=True)
        self.text += delta
        return delta

    def reset(self) -> None:
        """Start a new stream (e.g. a new chat turn)."""
        self._decoder.reset()
        self.text = ""
        self.tokens = []
