"""Constrained decoding: JSON schemas, regexes and grammars enforced while sampling, on llguidance.

Two steps, so that bad input fails before any computation:

1. a `Grammar` is compiled and checked against the model's vocabulary per request
   (`from_json_schema`, `from_regex`, `from_grammar`, or `from_options` / `from_response_format`
   for the API's keyword forms); an invalid schema, regex or grammar raises QwenCpuError;
2. `Grammar.constraint()` makes the per-sequence `Constraint` (the protocol of INTERFACES.md #1)
   that `sampler.Sampler(params, constraint=...)` applies: `mask_logits` before any other logits
   processing, `accept` after each draw, `is_complete` to end with "stop", `forced_tokens` for
   the tokens the grammar leaves no choice about.

llguidance matches bytes, not token strings: its token table is built from our tokenizer's exact
token bytes (control tokens marked as special, so grammar text never matches `<|im_end|>` spelled
out), once per tokenizer, and cached. The end-of-generation tokens (`tokenizer.eos_ids`) are
allowed exactly when the output so far is a complete match.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any, Mapping

import numpy as np

from .errors import QwenCpuError

# Whitespace allowed between JSON tokens: nothing, one space, or a newline and up to 20 spaces/tabs
# of indentation (llama.cpp's rule). Unbounded whitespace lets a weak model emit it forever.
JSON_WHITESPACE = r"(?:[ ]|\n[ \t]{0,20})?"
JSON_OPTIONS = {"whitespace_pattern": JSON_WHITESPACE}

# (256, 8) float32: for each mask byte, what to add to its 8 tokens' logits (bit i of the byte
# set: token i allowed, 0; clear: -inf).
_BYTE_TO_ADD = np.where(np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little") == 1,
                        np.float32(0), np.float32(-np.inf)).astype(np.float32)

_CACHE: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def _llguidance():
    try:
        import llguidance
    except ImportError as e:  # a runtime dependency; say so instead of a bare traceback
        raise QwenCpuError("constrained decoding needs the llguidance package: pip install llguidance") from e
    return llguidance


class _TokenTable:
    """What llguidance.TokenizerWrapper reads from a tokenizer: every token's bytes, the special ids,
    BOS/EOS, and an encoder (called with str; it raises on bytes so that llguidance sends str)."""

    def __init__(self, tokenizer):
        self.tokens = tokenizer.all_token_bytes()
        self.special_token_ids = sorted(tokenizer.special_tokens.values())
        self.eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else min(tokenizer.eos_ids, default=0)
        self.bos_token_id = tokenizer.bos_id
        self._encode = tokenizer.encode

    def __call__(self, text):
        if not isinstance(text, str):
            raise TypeError("str expected")
        return self._encode(text)


def ll_tokenizer(tokenizer):
    """The llguidance.LLTokenizer of our `tokenizer.Tokenizer`, built on first use (about 1 s at a
    152k vocabulary) and cached for the tokenizer's lifetime."""
    with _CACHE_LOCK:
        llt = _CACHE.get(tokenizer)
        if llt is None:
            llg = _llguidance()
            if not tokenizer.eos_ids:
                raise QwenCpuError("constrained decoding needs an end-of-generation token; the vocabulary has none")
            llt = llg.LLTokenizer(llg.TokenizerWrapper(_TokenTable(tokenizer)), eos_token=sorted(tokenizer.eos_ids))
            _CACHE[tokenizer] = llt
        return llt


class Grammar:
    """A grammar checked against a tokenizer's vocabulary. `constraint()` makes a fresh Constraint
    for one sequence. `description` names the source in error messages ("JSON schema", "regex", ...)."""

    def __init__(self, tokenizer, ll_grammar: str, description: str):
        llg = _llguidance()
        self.tokenizer = tokenizer
        self.description = description
        self._llt = ll_tokenizer(tokenizer)
        self._grammar = ll_grammar
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(ll_grammar, self._llt)
        if is_error:
            raise QwenCpuError(f"invalid {description}: {messages[0].strip()}")

    def constraint(self) -> "Constraint":
        """A new Constraint at the start of the grammar."""
        llg = _llguidance()
        matcher = llg.LLMatcher(self._llt, self._grammar, log_level=0)
        if matcher.is_error():
            raise QwenCpuError(f"invalid {self.description}: {matcher.get_error()}")
        return Constraint(matcher, self._llt.vocab_size)

    def __repr__(self) -> str:
        return f"Grammar({self.description})"


class Constraint:
    """One sequence's position in a grammar (INTERFACES.md #1). Not thread-safe: one per request.

    mask_logits(logits): logits (n,) float32, in place: tokens the grammar does not allow next ->
    -inf (ids past the grammar's vocabulary too). accept(token): advance by the drawn token
    (QwenCpuError if the grammar does not allow it). is_complete(): the output is a complete match
    and nothing may follow it. forced_tokens(): the tokens the grammar forces next, possibly [];
    the caller accepts each one it feeds to the model.
    """

    def __init__(self, matcher, n_vocab: int):
        self._matcher = matcher
        self._n_vocab = n_vocab                                      # tokens llguidance knows
        self._bits = np.zeros((n_vocab + 31) // 32, dtype=np.int32)   # (ceil(n_vocab / 32),) bit 1 = allowed
        self._add = np.empty((self._bits.nbytes, 8), dtype=np.float32)  # (bytes, 8): 0 or -inf per token

    def mask_logits(self, logits: np.ndarray) -> None:
        m = self._matcher
        m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if m.is_error():
            raise QwenCpuError(f"constrained decoding failed: {m.get_error()}")
        n = min(self._n_vocab, logits.shape[0])
        # One table lookup per mask byte and an add: branch-free, unlike a boolean-mask store,
        # whose cost grows several-fold when about half the vocabulary is allowed.
        np.take(_BYTE_TO_ADD, self._bits.view(np.uint8), axis=0, out=self._add)
        logits[:n] += self._add.reshape(-1)[:n]
        logits[n:] = -np.inf

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(int(token)):
            raise QwenCpuError(f"token {int(token)} is not allowed by the grammar here: {self._matcher.get_error()}")

    def is_complete(self) -> bool:
        return self._matcher.is_stopped() and not self._matcher.is_error()

    def is_accepting(self) -> bool:
        """The output so far is a complete match (more may still follow)."""
        return self._matcher.is_accepting()

    def forced_tokens(self) -> list[int]:
        if self._matcher.is_stopped():
            return []
        return list(self._matcher.compute_ff_tokens())


# ---- grammars from the API's forms ------------------------------------------------------------

def from_json_schema(tokenizer, schema: Mapping | bool | str) -> Grammar:
    """Output that is one JSON value valid under `schema` (a dict, a bool, or its JSON text).
    Whitespace between tokens is limited to JSON_WHITESPACE unless the schema's "x-guidance"
    options say otherwise."""
    llg = _llguidance()
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise QwenCpuError(f"invalid JSON schema: not JSON ({e})") from None
    if not isinstance(schema, (Mapping, bool)):
        raise QwenCpuError(f"invalid JSON schema: expected an object or a boolean, got {type(schema).__name__}")
    try:
        text = llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as e:
        raise QwenCpuError(f"invalid JSON schema: {e}") from None
    return Grammar(tokenizer, text, "JSON schema")


def from_regex(tokenizer, pattern: str) -> Grammar:
    """Output that matches `pattern` as a whole (Rust regex syntax: as Python's `re` without
    look-around and backreferences)."""
    if not isinstance(pattern, str):
        raise QwenCpuError(f"regex must be a str, got {type(pattern).__name__}")
    return Grammar(tokenizer, _llguidance().LLMatcher.grammar_from_regex(pattern), "regex")


def from_grammar(tokenizer, text: str, description: str = "grammar") -> Grammar:
    """Output that the grammar `text` accepts: llguidance's Lark syntax (which may embed a JSON
    schema as `%json {...}`), or llama.cpp's GBNF (converted by llguidance). `description` names
    it in error messages."""
    if not isinstance(text, str):
        raise QwenCpuError(f"{description} must be a str, got {type(text).__name__}")
    try:
        ll = _llguidance().grammar_from("grammar", text)
    except ValueError as e:
        raise QwenCpuError(f"invalid {description}: {e}") from None
    return Grammar(tokenizer, ll, description)


def from_response_format(tokenizer, response_format: Mapping | None) -> Grammar | None:
    """The Grammar an OpenAI `response_format` asks for: {"type": "text"} or None -> None;
    {"type": "json_object"}; {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}.
    The schema is enforced whether or not "strict" is set."""
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise QwenCpuError("response_format must be an object such as {\"type\": \"json_object\"}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return from_json_schema(tokenizer, {"type": "object"})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise QwenCpuError("response_format json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}")
        return from_json_schema(tokenizer, spec["schema"])
    raise QwenCpuError(f"response_format type {kind!r} is not supported (use 'text', 'json_object' or 'json_schema')")


def from_options(tokenizer, *, response_format: Mapping | None = None, json_schema: Any = None,
                 regex: str | None = None, grammar: str | None = None) -> Grammar | None:
    """The Grammar of the API's keyword options (at most one of them), or None when none is given."""
    given = {k: v for k, v in dict(response_format=response_format, json_schema=json_schema, regex=regex,
                                   grammar=grammar).items() if v is not None}
    if len(given) > 1:
        raise QwenCpuError(f"give at most one of response_format, json_schema, regex, grammar (got {', '.join(given)})")
    if response_format is not None:
        return from_response_format(tokenizer, response_format)
    if json_schema is not None:
        return from_json_schema(tokenizer, json_schema)
    if regex is not None:
        return from_regex(tokenizer, regex)
    if grammar is not None:
        return from_grammar(tokenizer, grammar)
    return None
