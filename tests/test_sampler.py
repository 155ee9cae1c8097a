"""Sampler tests.

References: probabilities computed by hand for small logit vectors (logits = log of chosen
probabilities), compared with rel/abs tolerance 1e-6 (float32 arithmetic); for the fast paths on a
151,936-entry vocabulary, the plain numpy definition (full argsort); for the random draws, the
expected frequencies within 5 standard deviations over 5,000-20,000 seeded draws (1,000 on the
full vocabulary).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qwen_cpu.errors import QwenCpuError
from qwen_cpu.sampler import (
    Sampler,
    SamplingParams,
    apply_logit_bias,
    apply_penalties,
    apply_temperature,
    check_finite,
    greedy,
    log_softmax,
    log_sum_exp,
    min_p,
    sample,
    sample_categorical,
    softmax,
    top_k,
    top_k_indices,
    top_p,
    top_p_indices,
)

VOCAB = 151936
P4 = np.array([0.1, 0.2, 0.3, 0.4])
L4 = np.log(P4).astype(np.float32)      # softmax(L4) == P4


def kept(masked: np.ndarray) -> set[int]:
    return set(np.flatnonzero(masked > -np.inf).tolist())


# ---- the pure functions, by hand ------------------------------------------------------------

def test_softmax_and_log_sum_exp():
    np.testing.assert_allclose(softmax(L4), P4, rtol=1e-6)
    np.testing.assert_allclose(softmax(np.array([0.0, -np.inf, 0.0])), [0.5, 0.0, 0.5])
    assert log_sum_exp(L4) == pytest.approx(0.0, abs=1e-6)      # sum of P4 is 1
    np.testing.assert_allclose(log_softmax(L4 + 3.0), np.log(P4), rtol=1e-5)


def test_temperature():
    # logits (0, ln 4) at T = 2 -> (0, ln 2) -> probabilities (1/3, 2/3)
    x = np.array([0.0, math.log(4.0)], dtype=np.float32)
    np.testing.assert_allclose(softmax(apply_temperature(x, 2.0)), [1 / 3, 2 / 3], rtol=1e-6)
    # T = 0.5 squares the odds: (1, 16) / 17
    np.testing.assert_allclose(softmax(apply_temperature(x, 0.5)), [1 / 17, 16 / 17], rtol=1e-6)
    with pytest.raises(QwenCpuError):
        apply_temperature(x, 0.0)


def test_top_k():
    assert kept(top_k(L4, 2)) == {2, 3}
    np.testing.assert_allclose(softmax(top_k(L4, 2)), [0, 0, 3 / 7, 4 / 7], rtol=1e-6)
    assert top_k_indices(L4, 3).tolist() == [3, 2, 1]          # largest first
    assert kept(top_k(L4, 10)) == {0, 1, 2, 3}
    with pytest.raises(QwenCpuError):
        top_k(L4, 0)


def test_top_p():
    # sorted probabilities 0.4, 0.3, 0.2, 0.1; cumulative 0.4, 0.7, 0.9, 1.0
    assert kept(top_p(L4, 0.35)) == {3}
    assert kept(top_p(L4, 0.69)) == {2, 3}
    assert kept(top_p(L4, 0.71)) == {1, 2, 3}
    assert kept(top_p(L4, 1.0)) == {0, 1, 2, 3}
    np.testing.assert_allclose(softmax(top_p(L4, 0.69)), [0, 0, 3 / 7, 4 / 7], rtol=1e-6)
    # a candidate list cut from a larger distribution: log_z = log(1) = 0 keeps 0.4 + 0.3 >= 0.6
    assert kept(top_p(L4[2:], 0.6, log_z=0.0)) == {0, 1}
    for bad in (0.0, 1.5):
        with pytest.raises(QwenCpuError):
            top_p(L4, bad)


def test_min_p():
    # keep p_i >= min_p * 0.4
    assert kept(min_p(L4, 0.6)) == {2, 3}          # threshold 0.24
    assert kept(min_p(L4, 0.3)) == {1, 2, 3}       # threshold 0.12
    assert kept(min_p(L4, 0.0)) == {0, 1, 2, 3}
    np.testing.assert_allclose(softmax(min_p(L4, 0.6)), [0, 0, 3 / 7, 4 / 7], rtol=1e-6)


def test_penalties():
    x = np.array([2.0, -2.0, 1.0], dtype=np.float32)
    # repetition 2: positive logits halve, negative ones double; token 2 not in the window
    np.testing.assert_allclose(apply_penalties(x, [0, 1, 1], repetition=2.0), [1.0, -4.0, 1.0])
    # presence 0.5 once per token, frequency 0.25 per occurrence: token 0 twice, token 1 once
    np.testing.assert_allclose(apply_penalties(x, [0, 0, 1], presence=0.5, frequency=0.25),
                               [1.0, -2.75, 1.0])
    np.testing.assert_allclose(apply_penalties(x, [5, -1, 2], presence=1.0), [2.0, -2.0, 0.0])
    np.testing.assert_array_equal(apply_penalties(x, []), x)
    assert x.tolist() == [2.0, -2.0, 1.0]          # input untouched


def test_logit_bias():
    np.testing.assert_allclose(apply_logit_bias(L4, {0: math.log(4.0)}),
                               L4 + [math.log(4.0), 0, 0, 0], rtol=1e-6)
    # probabilities (0.4, 0.2, 0.3, 0.4) / 1.3 after multiplying token 0's odds by 4
    np.testing.assert_allclose(softmax(apply_logit_bias(L4, {0: math.log(4.0)})),
                               np.array([0.4, 0.2, 0.3, 0.4]) / 1.3, rtol=1e-6)
    assert kept(apply_logit_bias(L4, {3: -np.inf})) == {0, 1, 2}
    with pytest.raises(QwenCpuError):
        apply_logit_bias(L4, {4: 1.0})


def test_sample_edits_a_copy_once():
    # sample() copies the logits once and edits the copy in place (bias, then penalties); the
    # caller's array stays as computed, and the result is what the copying functions give
    x = np.array([1.0, 3.0, 2.0, 2.9], dtype=np.float32)
    before = x.copy()
    params = SamplingParams(temperature=0, logit_bias={1: -np.inf}, repetition_penalty=2.0)
    rng = np.random.default_rng(0)
    assert sample(x, [3], params, rng) == 2        # 3 banned, 2.9 halved to 1.45
    np.testing.assert_array_equal(x, before)
    assert Sampler(params, repetition_penalty=1.0)(x, [3]) == 3  # overrides beside the bias's cached arrays
    y = x.copy()
    assert apply_penalties(apply_logit_bias(y, {1: -np.inf}, inplace=True), [3], 2.0, inplace=True) is y
    np.testing.assert_array_equal(y, apply_penalties(apply_logit_bias(x, {1: -np.inf}), [3], 2.0))
    for temperature in (0.0, 0.8):  # greedy too: argmax would give token 0 of an all -inf vector
        with pytest.raises(QwenCpuError, match="every token was removed"):
            sample(x, [], SamplingParams(temperature=temperature, logit_bias=dict.fromkeys(range(4), -np.inf)), rng)


def test_greedy_and_finite_check():
    assert greedy(L4) == 3
    assert greedy(np.array([1.0, 5.0, 5.0])) == 1
    for bad in (np.nan, np.inf, -np.inf):
        x = L4.copy()
        x[1] = bad
        with pytest.raises(QwenCpuError, match="NaN/Inf"):
            check_finite(x)
        with pytest.raises(QwenCpuError):
            Sampler(temperature=0)(x)
    with pytest.raises(QwenCpuError):
        check_finite(np.zeros((2, 2), dtype=np.float32))


# ---- draws ------------------------------------------------------------------------------------

def _frequencies(draw, n_classes: int, n: int = 5000) -> np.ndarray:
    counts = np.bincount([draw() for _ in range(n)], minlength=n_classes)
    return counts / n


def _assert_frequencies(freq: np.ndarray, probs, n: int = 5000):
    probs = np.asarray(probs, dtype=np.float64)
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1e-12), (freq, probs)


def test_sample_categorical_frequencies():
    rng = np.random.default_rng(1)
    _assert_frequencies(_frequencies(lambda: sample_categorical(L4, rng), 4, 20000), P4, 20000)
    with pytest.raises(QwenCpuError, match="nothing left"):
        sample_categorical(np.full(3, -np.inf, dtype=np.float32), rng)


@pytest.mark.parametrize("n", [64 * 80 + 37, VOCAB])
def test_two_level_draw(n):
    # 8 likely tokens spread over the vocabulary: both ends, neighbouring groups, and the tail
    # past the last full group of 64 interleaved groups (n % 64 entries)
    x = np.full(n, -1e4, dtype=np.float32)
    width, tail = n // 64, 64 * (n // 64)
    ids = [0, 5, width - 1, width, n // 2, tail - 1] + ([tail, n - 1] if n - tail >= 2
                                                        else [tail - 3, tail - 2])
    probs = np.array([0.05, 0.1, 0.15, 0.2, 0.1, 0.15, 0.05, 0.2])
    x[ids] = np.log(probs)
    rng = np.random.default_rng(2)
    draws = 20000 if n < VOCAB else 1000          # ~0.3 ms a draw on the full vocabulary
    got = [sample_categorical(x, rng) for _ in range(draws)]
    assert set(got) <= set(ids)
    freq = np.array([got.count(i) for i in ids]) / draws
    _assert_frequencies(freq, probs, draws)


def test_sampler_chain_frequencies():
    # top_k=3 keeps (0.2, 0.3, 0.4); top_p=0.75 over those renormalised (2/9, 1/3, 4/9) keeps
    # 4/9 + 1/3 = 7/9 >= 0.75 -> tokens 2, 3; temperature 0.5 squares the odds: 9/25, 16/25
    s = Sampler(SamplingParams(temperature=0.5, top_k=3, top_p=0.75, seed=3))
    _assert_frequencies(_frequencies(lambda: s(L4), 4), [0, 0, 9 / 25, 16 / 25])
    # min_p=0.6 keeps 0.3 and 0.4 -> 3/7, 4/7 at temperature 1
    s = Sampler(SamplingParams(min_p=0.6, seed=4))
    _assert_frequencies(_frequencies(lambda: s(L4), 4), [0, 0, 3 / 7, 4 / 7])
    # repetition penalty with a 1-token window: only the last token (3) is penalised
    x = np.ones(4, dtype=np.float32)
    s = Sampler(SamplingParams(repetition_penalty=2.0, penalty_window=1, seed=5))
    e = math.exp(-0.5)                             # token 3's logit halves to 0.5
    _assert_frequencies(_frequencies(lambda: s(x, [3, 0, 3]), 4),
                        np.array([1, 1, 1, e]) / (3 + e))


def test_seeded_determinism_and_greedy():
    rng = np.random.default_rng(6)
    logits = [rng.normal(0, 3, VOCAB).astype(np.float32) for _ in range(20)]
    params = SamplingParams(temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=7)
    a = Sampler(params)
    b = Sampler(params)
    hist_a, hist_b = [], []
    for x in logits:
        hist_a.append(a(x, hist_a))
        hist_b.append(b(x, hist_b))
    assert hist_a == hist_b
    assert Sampler(params, seed=8)  # another seed is accepted ...
    assert [Sampler(temperature=0)(x) for x in logits] == [int(np.argmax(x)) for x in logits]
    assert [Sampler(top_k=1, seed=0)(x) for x in logits] == [int(np.argmax(x)) for x in logits]
    # sample() with an explicit generator equals the Sampler with that seed
    s = Sampler(params)
    assert sample(logits[0], [], params, np.random.default_rng(7)) == s(logits[0], [])


def test_params_validation():
    for bad in ({"temperature": -1}, {"top_k": -1}, {"top_p": 0.0}, {"min_p": 2.0},
                {"repetition_penalty": 0.0}, {"penalty_window": -1}):
        with pytest.raises(QwenCpuError):
            SamplingParams(**bad)


# ---- the fast paths against the plain definitions ---------------------------------------------

def _logit_sets():
    rng = np.random.default_rng(9)
    flat = rng.normal(0, 1, VOCAB).astype(np.float32)
    peaked = rng.normal(0, 2, VOCAB).astype(np.float32)
    peaked[rng.integers(0, VOCAB, 5)] += 15
    ties = np.round(rng.normal(0, 1, VOCAB), 1).astype(np.float32)   # many equal values
    masked = flat.copy()
    masked[: VOCAB // 2 + 1000] = -np.inf                            # half the vocabulary banned
    return {"flat": flat, "peaked": peaked, "ties": ties, "masked": masked}


@pytest.mark.parametrize("name", ["flat", "peaked", "ties", "masked"])
def test_top_k_indices_match_full_sort(name):
    x = _logit_sets()[name]
    for k in (1, 20, 40, 1000, 50000):
        got = top_k_indices(x, k)
        want_values = np.sort(x)[::-1][:k]
        np.testing.assert_array_equal(x[got], want_values)            # same values, same order
        assert len(set(got.tolist())) == k


@pytest.mark.parametrize("name", ["flat", "peaked", "ties", "masked"])
def test_top_p_indices_match_full_sort(name):
    x = _logit_sets()[name]
    order = np.argsort(-x, kind="stable")
    probs = softmax(x)[order]
    cum = np.cumsum(probs)
    for p in (0.1, 0.5, 0.9, 0.99):
        n_want = int(np.searchsorted(cum, p)) + 1
        got = top_p_indices(x, p)
        assert len(set(got.tolist())) == got.size
        # the same number of tokens (up to float rounding at the boundary), all among the largest
        assert abs(got.size - n_want) <= 2, (p, got.size, n_want)
        threshold = x[order[min(got.size, n_want) - 1]]
        assert np.all(x[got] >= x[order[max(got.size, n_want) - 1]])
        assert np.count_nonzero(x[got] > threshold) == np.count_nonzero(x > threshold)
        assert probs[:got.size].sum() >= p - 1e-5
