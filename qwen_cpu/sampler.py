"""Token sampling: small pure functions on a logits vector and a seeded Sampler that chains them.

`logits` is always a 1-D float array of shape (n,): one row of the model's output (n = vocabulary
rows) or a shorter candidate list. The filters (`apply_*`, `top_k`, `top_p`, `min_p`) return a new
(n,) float32 array with removed tokens set to -inf and never modify their input; `top_k_indices` /
`top_p_indices` return the kept indices instead. Probabilities are softmax(logits).

The Sampler applies, in this order (llama.cpp's order): a grammar's mask (constrain.py), logit
bias, repetition/presence/frequency penalties over the last `penalty_window` tokens, top-k, top-p,
min-p, temperature, then draws one token. top-p and min-p therefore see the temperature-1 distribution (after top-k when top-k is on:
the top-k candidates renormalised). temperature == 0 means greedy (argmax after bias and penalties).

Speed: the vocabulary (151,936 for Qwen2.5) is never fully sorted. top-k takes a threshold from the
maxima of 64 interleaved groups, top-p tries the top 64 and otherwise narrows its cut by selection,
and a full-vocabulary draw goes group first, then member. bench/bench_sampler.py prints the cost per
token (about 0.1-0.3 ms with top-k/top-p on LM-shaped logits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import QwenCpuError
from .options import check_float, check_int, check_logit_bias, check_seed

_GROUPS = 64   # interleaved groups for the top-k threshold and two-level sampling
MAX_TEMPERATURE = 100.0        # beyond it every distribution is uniform to float precision
MAX_REPETITION_PENALTY = 100.0


# ---- pure functions ---------------------------------------------------------------------------

def check_finite(logits: np.ndarray) -> None:
    """Raise QwenCpuError if `logits` (n,) holds NaN or +-Inf (a broken forward pass: such
    logits are never sampled)."""
    if logits.ndim != 1 or logits.size == 0:
        raise QwenCpuError(f"logits must be a non-empty 1-D array, got shape {logits.shape}")
    # max/min propagate NaN and expose +-Inf in two cheap passes
    if not (math.isfinite(float(logits.max())) and math.isfinite(float(logits.min()))):
        bad = np.flatnonzero(~np.isfinite(logits))
        raise QwenCpuError(f"logits contain {bad.size} NaN/Inf values (first at index {bad[0]})")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (n,) float64 of `logits` (n,); -inf entries get probability 0."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities (float64, the shape of `logits`: (n,) or (rows, n)) over the last axis;
    -inf entries stay -inf. Used for reported logprobs and by perplexity.py."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def log_sum_exp(logits: np.ndarray) -> float:
    """log(sum(exp(logits))) computed stably (float32 exponentials, float64 sum)."""
    x = np.asarray(logits, dtype=np.float32)
    m = x.max()
    if m == -np.inf:
        return -math.inf
    return float(m) + math.log(float(np.exp(x - m).sum(dtype=np.float64)))


def logit_bias_arrays(bias: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """{token id: bias} as (ids (k,) int64, biases (k,) float32)."""
    return (np.fromiter(bias.keys(), dtype=np.int64, count=len(bias)),
            np.fromiter(bias.values(), dtype=np.float32, count=len(bias)))


def apply_logit_bias(logits: np.ndarray, bias: Mapping[int, float] | tuple[np.ndarray, np.ndarray],
                     inplace: bool = False) -> np.ndarray:
    """logits + bias[id] for each id in `bias` (a bias of -inf bans the token); `bias` a mapping or
    its logit_bias_arrays. inplace: into `logits` itself (float32), else into a copy."""
    out = logits if inplace else np.array(logits, dtype=np.float32, copy=True)
    ids, values = bias if isinstance(bias, tuple) else logit_bias_arrays(bias or {})
    if ids.size:
        if ids.min() < 0 or ids.max() >= out.size:
            raise QwenCpuError(f"logit_bias token id outside 0..{out.size - 1}")
        out[ids] += values
    return out


def penalties_active(recent: Sequence[int], repetition: float, presence: float, frequency: float) -> bool:
    """Whether apply_penalties would change anything."""
    return len(recent) > 0 and not (repetition == 1.0 and presence == 0.0 and frequency == 0.0)


def apply_penalties(logits: np.ndarray, recent: Sequence[int], repetition: float = 1.0,
                    presence: float = 0.0, frequency: float = 0.0, inplace: bool = False) -> np.ndarray:
    """Penalise tokens that occur in `recent` (the window of past ids; ids >= n are ignored);
    inplace: in `logits` itself (float32), else in a copy.

    repetition (CTRL-style): a positive logit is divided by it, a negative one multiplied by it.
    presence: subtracted once from each token that occurs. frequency: subtracted per occurrence.
    """
    out = logits if inplace else np.array(logits, dtype=np.float32, copy=True)
    if not penalties_active(recent, repetition, presence, frequency):
        return out
    ids, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    keep = (ids >= 0) & (ids < out.size)
    ids, counts = ids[keep], counts[keep]
    x = out[ids]
    if repetition != 1.0:
        x = np.where(x > 0, x / repetition, x * repetition)
    out[ids] = x - presence - frequency * counts
    return out


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(logits - max(logits)) / temperature (temperature > 0), float32. The max is taken out first
    (softmax does not change) so that a tiny temperature sends the other logits to -inf instead of
    overflowing to inf - inf = NaN."""
    if not temperature > 0:
        raise QwenCpuError(f"temperature must be > 0 here, got {temperature}")
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    if m == -np.inf:                             # nothing left: sample_categorical says so
        return x.astype(np.float32)
    with np.errstate(over="ignore"):
        return ((x - m) / temperature).astype(np.float32)


def top_k_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices (min(k, n),) int64 of the k largest logits, largest first (ties in any order).

    Instead of partitioning all n values, split them into _GROUPS interleaved groups and take the
    k-th largest group maximum as a threshold: at least k groups reach it, so at least k values do,
    and only values >= it can be in the top k. The few values above it are then partitioned.
    """
    n = logits.shape[0]
    if k <= 0:
        raise QwenCpuError(f"top_k must be >= 1, got {k}")
    if k >= n:
        cand = np.arange(n)
    else:
        cand = None
        width = n // _GROUPS                      # group j = {j, j + width, j + 2*width, ...}
        if k <= width // 4:
            group_max = logits[:_GROUPS * width].reshape(_GROUPS, width).max(axis=0)
            threshold = np.partition(group_max, width - k)[width - k]
            if threshold == -np.inf:              # mostly -inf (a grammar's mask): the finite ones,
                cand = np.flatnonzero(logits > threshold)   # padded with -inf ones up to k
                if cand.size < k:
                    cand = np.concatenate([cand, np.flatnonzero(logits == threshold)[:k - cand.size]])
            else:
                cand = np.flatnonzero(logits >= threshold)
            if cand.size > n // 2:                # flat logits: the threshold did not help
                cand = None
        if cand is None:
            cand = np.argpartition(logits, n - k)[n - k:]
        elif cand.size > k:
            cand = cand[np.argpartition(logits[cand], cand.size - k)[cand.size - k:]]
    return cand[np.argsort(-logits[cand], kind="stable")]


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits, the rest -inf."""
    out = np.full(logits.shape, -np.inf, dtype=np.float32)
    ids = top_k_indices(logits, k)
    out[ids] = logits[ids]
    return out


def top_p_indices(logits: np.ndarray, p: float, log_z: float | None = None) -> np.ndarray:
    """Indices (m,) of the smallest set of most probable tokens whose probability sums to >= p
    (at least one token), in no particular order.

    log_z: log of the normaliser when `logits` is a candidate list cut from a larger vocabulary
    (probabilities are exp(logit - log_z)); default: normalise over `logits` itself.
    Cost: the top 64 tokens are tried first (enough for most language-model steps); otherwise a
    selection narrows the boundary with pivots estimated from a strided sample, so only the
    tokens near the cut are ever sorted.
    """
    if not 0.0 < p <= 1.0:
        raise QwenCpuError(f"top_p must be in (0, 1], got {p}")
    x = np.asarray(logits, dtype=np.float32)
    if p >= 1.0:
        return np.flatnonzero(x > -np.inf)
    if log_z is None:
        m = float(x.max())
        weights = np.exp(x - np.float32(m))      # (n,) float32: the one exp pass over x
        total = float(weights.sum(dtype=np.float64))
        probs, log_z = weights / np.float32(total), m + math.log(total)
    else:
        probs = np.exp(x - np.float32(log_z))    # (n,) float32 probabilities
    head = top_k_indices(x, 64)
    head_cum = np.cumsum(probs[head], dtype=np.float64)
    if head_cum[-1] >= p or head.size == x.size:
        return head[:min(int(np.searchsorted(head_cum, p, side="left")) + 1, head.size)]
    # All 64 head tokens are in. Without them the rest has no outliers, so a strided sample
    # estimates where the cumulative mass of the rest reaches what is still needed.
    vals = x.copy()
    vals[head] = -np.inf
    probs[head] = 0.0
    ids, need, rest_mass, kept = None, p - head_cum[-1], 1.0 - head_cum[-1], [head]
    for _ in range(12):                          # each round narrows; 12 is never reached
        if vals.size <= 1024:
            break
        sample_vals = np.sort(vals[::vals.size // 256])[::-1]
        est = np.cumsum(np.exp(sample_vals.astype(np.float64) - log_z))
        est *= rest_mass / est[-1] if est[-1] > 0 else 0.0
        pivot = sample_vals[min(int(np.searchsorted(est, need)), sample_vals.size - 1)]
        # integer positions, not boolean masks: compressing with a random mask is slow in numpy
        upper = np.flatnonzero(vals >= pivot)
        mass = float(probs[upper].sum(dtype=np.float64))
        select = upper if mass >= need else np.flatnonzero(vals < pivot)
        if select.size == vals.size:             # no progress (ties): sort what is left
            break
        if mass < need:                          # all of `upper` is in; look below it
            kept.append(upper if ids is None else ids[upper])
            need, rest_mass = need - mass, rest_mass - mass
        else:
            rest_mass = mass
        ids = select if ids is None else ids[select]
        vals, probs = vals[select], probs[select]
    if ids is None:
        ids = np.arange(x.size)
    order = np.argsort(-vals, kind="stable")
    cum = np.cumsum(probs[order], dtype=np.float64)
    n_finite = int(np.count_nonzero(vals > -np.inf))     # head (set to -inf) is never re-added
    n_keep = min(int(np.searchsorted(cum, need, side="left")) + 1, n_finite)
    kept.append(ids[order[:n_keep]])
    return np.concatenate(kept)


def top_p(logits: np.ndarray, p: float, log_z: float | None = None) -> np.ndarray:
    """Keep the smallest set of most probable tokens whose probability sums to >= p (at least
    one), the rest -inf. `log_z` as in `top_p_indices`."""
    x = np.asarray(logits, dtype=np.float32)
    out = np.full(x.shape, -np.inf, dtype=np.float32)
    ids = top_p_indices(x, p, log_z)
    out[ids] = x[ids]
    return out


def min_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep tokens whose probability is >= p times the largest probability."""
    if not 0.0 <= p <= 1.0:
        raise QwenCpuError(f"min_p must be in [0, 1], got {p}")
    x = np.asarray(logits, dtype=np.float32)
    if p <= 0.0:
        return x.copy()
    threshold = x.max() + math.log(p)      # p_i >= p * p_max  <=>  l_i >= l_max + log p
    return np.where(x >= threshold, x, np.float32(-np.inf)).astype(np.float32)


def greedy(logits: np.ndarray) -> int:
    """Index of the largest logit (the first one on ties)."""
    return int(np.argmax(logits))


def check_some_left(max_logit: float) -> None:
    """Raise QwenCpuError if the largest logit is -inf: every token was banned or masked."""
    if max_logit == -np.inf:
        raise QwenCpuError("every token was removed: nothing left to sample")


def sample_categorical(logits: np.ndarray, rng: np.random.Generator) -> int:
    """Draw an index with probability softmax(logits), using one `rng.random()` draw.

    Long vectors are drawn in two levels (a group by its total weight, then a member of the
    group), which avoids a cumulative sum over the whole vocabulary.
    """
    x = np.asarray(logits, dtype=np.float32)
    m = x.max()
    check_some_left(m)
    weights = np.exp(x - m)                      # (n,) in (0, 1], the max is 1
    n = x.size
    width = n // _GROUPS
    if width < 64:
        cdf = np.cumsum(weights, dtype=np.float64)
        r = rng.random() * cdf[-1]
        return min(int(np.searchsorted(cdf, r, side="right")), n - 1)
    main = weights[:_GROUPS * width].reshape(_GROUPS, width)   # column j = group j
    group_cdf = np.cumsum(main.sum(axis=0, dtype=np.float64))  # (width,)
    tail = weights[_GROUPS * width:].astype(np.float64)         # (n % _GROUPS,) own group
    total = group_cdf[-1] + tail.sum()
    r = rng.random() * total
    if r >= group_cdf[-1]:                      # inside the tail
        cdf = group_cdf[-1] + np.cumsum(tail)
        j = min(int(np.searchsorted(cdf, r, side="right")), tail.size - 1)
        return _GROUPS * width + j
    g = min(int(np.searchsorted(group_cdf, r, side="right")), width - 1)
    before = group_cdf[g - 1] if g > 0 else 0.0
    member_cdf = before + np.cumsum(main[:, g], dtype=np.float64)
    i = min(int(np.searchsorted(member_cdf, r, side="right")), _GROUPS - 1)
    return i * width + g


# ---- the sampler ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings. A field left out is neutral (that filter off: the model's plain
    distribution); the settings a model runs with by default are not here but in defaults.py,
    applied by generate.sampling_params.

    temperature: 0 = greedy, at most 100. top_k: 0 = off. top_p in (0, 1], 1 = off. min_p in
    [0, 1], 0 = off. repetition_penalty in (0, 100], 1 = off. presence_penalty /
    frequency_penalty in [-2, 2] (OpenAI's range), 0 = off.
    penalty_window: how many of the most recent tokens the penalties look at.
    logit_bias: {token id: added logit in [-100, 100], or -inf to ban}. seed: 0 .. 2^64-1 for the
    Sampler's numpy Generator (None = random). Every field is checked (options.py) on
    construction: a bad one is a QwenCpuError naming it and its range.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_window: int = 64
    logit_bias: Mapping[int, float] | None = None
    seed: int | None = None

    def __post_init__(self):
        # Every field through the shared validation layer (options.py), in canonical form.
        checked = dict(
            temperature=check_float("temperature", self.temperature, 0.0, MAX_TEMPERATURE),
            top_k=check_int("top_k", self.top_k, 0),
            top_p=check_float("top_p", self.top_p, 0.0, 1.0, lo_open=True),
            min_p=check_float("min_p", self.min_p, 0.0, 1.0),
            repetition_penalty=check_float("repetition_penalty", self.repetition_penalty, 0.0,
                                           MAX_REPETITION_PENALTY, lo_open=True),
            presence_penalty=check_float("presence_penalty", self.presence_penalty, -2.0, 2.0),
            frequency_penalty=check_float("frequency_penalty", self.frequency_penalty, -2.0, 2.0),
            penalty_window=check_int("penalty_window", self.penalty_window, 0, 2**31 - 1),
            logit_bias=check_logit_bias(self.logit_bias),
            seed=check_seed(self.seed),
        )
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @cached_property
    def logit_bias_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """logit_bias as logit_bias_arrays, made once per request rather than at every token (a
        batched step waits for each sequence's sampling; bench/bench_sampler.py)."""
        return logit_bias_arrays(self.logit_bias) if self.logit_bias else None


def sample(logits: np.ndarray, history: Sequence[int], params: SamplingParams,
           rng: np.random.Generator, constraint=None) -> int:
    """One token id drawn from `logits` (vocab,) given the ids generated so far (`history`).
    constraint (constrain.Constraint): its mask comes first, so everything after sees allowed
    tokens only (it is not advanced here: Sampler does that)."""
    logits = np.asarray(logits)
    check_finite(logits)
    window = history[-params.penalty_window:] if params.penalty_window else ()
    penalize = penalties_active(window, params.repetition_penalty, params.presence_penalty,
                                params.frequency_penalty)
    # one copy to edit in place where anything edits (the caller's logits stay as computed): a
    # copy per step of a 152K vocabulary is a share of a batched decode step's serial Python work
    x = logits.astype(np.float32, copy=constraint is not None or bool(params.logit_bias) or penalize)
    if constraint is not None:
        constraint.mask_logits(x)
    if params.logit_bias:
        apply_logit_bias(x, params.logit_bias_arrays, inplace=True)
    if penalize:
        apply_penalties(x, window, params.repetition_penalty, params.presence_penalty,
                        params.frequency_penalty, inplace=True)
    removes = constraint is not None or bool(params.logit_bias)  # the only edits that set -inf
    if params.temperature == 0:
        i = greedy(x)
        if removes:
            check_some_left(x[i])  # the largest logit, no second pass
        return i
    if removes:
        check_some_left(x.max())

    n = x.size
    if 0 < params.top_k < n:
        ids = top_k_indices(x, params.top_k)
    elif params.top_p < 1.0:
        ids = top_p_indices(x, params.top_p)
    elif params.min_p > 0.0:
        ids = np.flatnonzero(x >= x.max() + math.log(params.min_p))
    else:
        ids = None
    cand = x if ids is None else x[ids]
    if params.top_p < 1.0 and 0 < params.top_k < n:
        cand = top_p(cand, params.top_p)        # over the renormalised top-k candidates
    if params.min_p > 0.0:
        cand = min_p(cand, params.min_p)
    if params.temperature != 1.0:
        cand = apply_temperature(cand, params.temperature)
    i = sample_categorical(cand, rng)
    return int(i if ids is None else ids[i])


class Sampler:
    """`SamplingParams` plus its own seeded `numpy.random.Generator`: the same seed and the same
    logits give the same tokens. `sampler(logits, history) -> int`.

    constraint (constrain.Constraint, optional): masks the logits before anything else and is
    advanced by each drawn token (INTERFACES.md #1)."""

    def __init__(self, params: SamplingParams | None = None, constraint=None, **overrides):
        params = params or SamplingParams()
        if overrides:
            params = dataclasses.replace(params, **overrides)
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.constraint = constraint

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        token = sample(logits, history, self.params, self.rng, self.constraint)
        if self.constraint is not None:
            self.constraint.accept(token)
        return token
