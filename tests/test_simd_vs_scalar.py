"""SIMD quantized kernels (csrc/avx2, csrc/avx512, ...) against the scalar reference path.

For every kernel path other than "scalar" that this build has and this CPU runs:
  - quantize_act: bytes IDENTICAL to the scalar path's (Q8_0, Q8_1, Q8_K; same float operations,
    round to nearest even), on random rows and on adversarial ones (ties at .5, zeros, a lone
    non-zero, huge and tiny magnitudes);
  - vec_dot: on the same (weight, activation) bytes, |simd - scalar| <= 1e-5 * sum_i |w_i a_i|
    (the sum of absolute terms computed in float64 from gguf.quants.dequantize of the weights and
    the activation bytes). The integer dot products inside blocks are exact on both paths; only
    the float summation order of the per-block terms differs. Observed: at most 2e-7 (about two
    float32 ulps of that sum) for the sizes here (up to 4352 elements); a wrong value, scale,
    offset or block gives errors of 1e-3 and more;
  - matmul (threaded driver, activation quantization included): same bound per output element.
The scalar path itself is tested against gguf.quants in tests/test_quant_kernels.py.
"""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

from _helpers import ACT_BLOCK, ACT_Q8_0, ACT_Q8_1, ACT_Q8_K, WEIGHT_TYPES, act_type, act_values, random_weights

from qwen_cpu import _kernels

SIMD_ISAS = [name for name in _kernels.available_isas() if name != "scalar"]

REL_BOUND = 1e-5


@pytest.fixture(params=SIMD_ISAS)
def simd(request, use_isa):
    """(name of a SIMD path, run(fn, *args) -> (result on that path, result on scalar))."""

    def both(fn, *args):
        with use_isa(request.param):
            got = fn(*args)
        with use_isa("scalar"):
            ref = fn(*args)
        return got, ref

    return request.param, both


@pytest.mark.parametrize("wtype", list(WEIGHT_TYPES), ids=lambda t: t.name)
def test_act_type_same_as_scalar(simd, wtype):
    _, both = simd
    got, ref = both(_kernels.weight_act_type, int(wtype))
    assert ref is not None and got == ref


def sizes(wtype):
    """Row lengths: one block, two blocks (one unrolled pair), an odd count, and a model-sized row."""
    blk = max(WEIGHT_TYPES[wtype][0], ACT_BLOCK[act_type(wtype)])
    if blk == 1:
        return [1, 7, 64, 4101]
    return [blk, 2 * blk, 3 * blk, 4096 + blk]


def abs_terms(wtype, w, atype, a, n):
    """sum_i |w_i a_i| in float64: the scale of the rounding error of any summation order."""
    if wtype == T.F32:
        wv = w.view(np.float32).astype(np.float64)
    else:
        wv = dequantize(w, wtype).astype(np.float64).reshape(-1)
    return float(np.abs(wv * act_values(atype, a, n)).sum())


def activation_rows(rng, n):
    """Float rows for the activation quantizers: random ones at several scales, and adversarial ones."""
    rows = {
        "normal": rng.standard_normal(n),
        "outliers": rng.standard_normal(n) * np.where(rng.random(n) < 0.02, 50.0, 1.0),
        "tiny": rng.standard_normal(n) * 1e-6,
        "large": rng.standard_normal(n) * 1e3,
        "zeros": np.zeros(n),
        "lone": np.where(np.arange(n) == n // 3, -2.5, 0.0),
        "constant": np.full(n, 0.75),
        "alternating": np.where(np.arange(n) % 2 == 0, 1.0, -1.0),
    }
    # amax = 127 gives scale 1 in both formats, so k + 0.5 lands exactly on a rounding tie
    ties = rng.integers(-127, 127, n) + 0.5
    ties[::32] = 127.0
    rows["ties"] = ties
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in rows.items()}


@pytest.mark.parametrize("atype", [ACT_Q8_0, ACT_Q8_1, ACT_Q8_K])
@pytest.mark.parametrize("n", [256, 4096])
def test_quantize_act_bytes_identical_to_scalar(simd, atype, n):
    _, both = simd
    rng = np.random.default_rng(1000 + atype + n)
    for name, x in activation_rows(rng, n).items():
        got, ref = both(_kernels.quantize_act, atype, x)
        assert got.dtype == np.uint8 and got.shape == ref.shape
        bad = np.flatnonzero(got != ref)
        assert bad.size == 0, f"{name}: {bad.size} bytes differ, first at {bad[:8]}"


def check_dot(both, wtype, w, x, n):
    """vec_dot of weight bytes w with x (n,) quantized to the activation format, simd vs scalar."""
    atype = act_type(wtype)
    a, _ = both(_kernels.quantize_act, atype, x)
    got, ref = both(_kernels.vec_dot, int(wtype), w, a, n)
    scale = abs_terms(wtype, w, atype, a, n)
    assert np.isfinite(ref)
    assert abs(got - ref) <= REL_BOUND * scale + 1e-30, (
        f"{wtype.name} n={n}: simd {got!r} scalar {ref!r} diff {abs(got - ref):.3g} sum|terms| {scale:.3g}")


@pytest.mark.parametrize("wtype", list(WEIGHT_TYPES), ids=lambda t: t.name)
def test_vec_dot_random_matches_scalar(simd, wtype):
    _, both = simd
    rng = np.random.default_rng(int(wtype) + 1)
    for n in sizes(wtype):
        for _ in range(3):
            w = random_weights(rng, wtype, n)
            x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 30.0])).astype(np.float32)
            check_dot(both, wtype, w, x, n)


@pytest.mark.parametrize("wtype", [t for t in WEIGHT_TYPES if WEIGHT_TYPES[t][0] > 1], ids=lambda t: t.name)
@pytest.mark.parametrize("fill", [0x00, 0xFF, 0x80, 0x7F, 0x55])
def test_vec_dot_adversarial_matches_scalar(simd, wtype, fill):
    """Every quant byte (values, high bits, packed scales and mins) set to one extreme pattern:
    all values at their maximum (0xFF), minimum (0x00), -128 for Q8_0 and Q6_K scales (0x80);
    against activations at the format's extremes (+127, -127, alternating) and random ones."""
    _, both = simd
    rng = np.random.default_rng(int(wtype) * 7 + fill)
    blk = max(WEIGHT_TYPES[wtype][0], ACT_BLOCK[act_type(wtype)])
    for n in (blk, 5 * blk):
        w = random_weights(rng, wtype, n, fill=fill)
        for x in (np.ones(n), -np.ones(n), np.where(np.arange(n) % 2 == 0, 1.0, -1.0), rng.standard_normal(n)):
            check_dot(both, wtype, w, np.ascontiguousarray(x, dtype=np.float32), n)


@pytest.mark.parametrize("wtype", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("n_tok", [1, 3])
def test_matmul_matches_scalar(simd, wtype, n_tok):
    _, both = simd
    rng = np.random.default_rng(int(wtype) * 13 + n_tok)
    n_in, n_out = 512, 37  # an odd row count: uneven split across the threads and row tiles
    w = np.stack([random_weights(rng, wtype, n_in) for _ in range(n_out)])
    x = rng.standard_normal((n_tok, n_in)).astype(np.float32)
    pool = _kernels.ThreadPool(2)
    got, ref = both(_kernels.matmul, pool, w, int(wtype), n_in, x)
    assert got.shape == ref.shape == (n_tok, n_out)
    atype = act_type(wtype)
    for t in range(n_tok):
        a = _kernels.quantize_act(atype, x[t])  # the bytes both paths multiply (identical, tested above)
        for r in range(n_out):
            scale = abs_terms(wtype, w[r], atype, a, n_in)
            assert abs(got[t, r] - ref[t, r]) <= REL_BOUND * scale + 1e-30, (t, r, got[t, r], ref[t, r])
