"""One validation layer for every option a caller gives: the Python API, the CLI and the HTTP
server call these before any computation, so a bad value is a QwenCpuError naming the option and
the allowed range, never a numpy or C++ exception, a NaN in the logits or a silent truncation.

Each `check_*` returns the value in its canonical form (e.g. `stop="How"` -> ("How",)).
"""

from __future__ import annotations

import math
import numbers
import os
import stat
from collections.abc import Mapping, Sequence

from .errors import QwenCpuError

MAX_SEED = 2**64 - 1
MAX_THREADS = 1024
MAX_BATCH = 1 << 16      # prefill tokens per step; more only costs scratch memory
LOGIT_BIAS_RANGE = 100.0  # OpenAI's range; -inf (ban the token) is also allowed


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """`value` as an int in lo .. hi (hi None: no upper bound); bools, floats and strings refused."""
    span = f"{lo} .. {hi}" if hi is not None else f">= {lo}"
    if not _is_int(value):
        raise QwenCpuError(f"{name} must be an integer ({span}), got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise QwenCpuError(f"{name} must be in {span}, got {value}")
    return value


def check_float(name: str, value, lo: float, hi: float, lo_open: bool = False) -> float:
    """`value` as a finite float in [lo, hi] ((lo, hi] with lo_open); NaN and +-inf refused."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise QwenCpuError(f"{name} must be a number, got {value!r}")
    value = float(value)
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
        raise QwenCpuError(f"{name} must be a finite number in {span}, got {value!r}")
    return value


def check_seed(seed) -> int | None:
    """None (a random seed) or an int in 0 .. 2^64-1."""
    if seed is None:
        return None
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise QwenCpuError(f"seed must be an integer in 0 .. 2^64-1 (or None for a random one), got {seed!r}")
    return int(seed)


def check_max_tokens(max_tokens) -> int | None:
    """None (until a stop or the end of the context) or an int >= 0."""
    return None if max_tokens is None else check_int("max_tokens", max_tokens, 0)


def check_stop(stop) -> tuple[str, ...]:
    """Stop strings: None, one str (as OpenAI allows) or a sequence of str."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if not isinstance(stop, Sequence) or not all(isinstance(s, str) for s in stop):
        raise QwenCpuError(f"stop must be a string or a list of strings, got {stop!r}")
    return tuple(stop)


def check_logit_bias(bias) -> dict[int, float] | None:
    """{token id: finite bias in [-100, 100], or -inf to ban}; keys may be int or decimal strings
    (JSON). None or empty: no bias. Token ids are range-checked against the vocabulary later."""
    if bias is None:
        return None
    if not isinstance(bias, Mapping):
        raise QwenCpuError(f"logit_bias must be a mapping {{token id: bias}}, got {type(bias).__name__}")
    out = {}
    for key, value in bias.items():
        if isinstance(key, str) and key.strip().lstrip("-").isdigit():
            key = int(key)
        token = check_int("logit_bias token id", key, 0, 2**31 - 1)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and value == -math.inf:
            out[token] = -math.inf
        else:
            out[token] = check_float(f"logit_bias[{token}]", value, -LOGIT_BIAS_RANGE, LOGIT_BIAS_RANGE)
    return out or None


def check_token_ids(ids, n_vocab: int, what: str = "token ids") -> list[int]:
    """A non-empty list of int token ids in 0 .. n_vocab-1 (text, floats and bools refused)."""
    if isinstance(ids, (str, bytes)):
        raise QwenCpuError(f"{what} must be a sequence of integers, got text (tokenize it first)")
    try:
        values = list(ids)
    except TypeError:
        raise QwenCpuError(f"{what} must be a sequence of integers, got {type(ids).__name__}") from None
    if not values:
        raise QwenCpuError(f"{what} must not be empty")
    for i, t in enumerate(values):
        if not _is_int(t):
            raise QwenCpuError(f"{what}[{i}] must be an integer, got {t!r}")
        if not 0 <= t < n_vocab:
            raise QwenCpuError(f"{what}[{i}] = {t} is outside the vocabulary (0 .. {n_vocab - 1})")
    return [int(t) for t in values]


def check_regular_file(path, what: str = "model file") -> None:
    """Refuse a path that is missing or not a regular file (a directory, a FIFO: open() on a FIFO
    with no writer would wait forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise QwenCpuError(f"{what} {str(path)!r}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise QwenCpuError(f"{what} {str(path)!r} is {kind}")
