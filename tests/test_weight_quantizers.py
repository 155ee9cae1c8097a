"""The C++ weight quantizers (_kernels.quantize) against gguf-py.

F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: byte-identical to gguf.quants.quantize on random and
adversarial rows. K-quants (gguf-py cannot produce them): dequantized with gguf.quants.dequantize,
the RMSE relative to the data's RMS must stay under a stated bound and under a naive baseline of the
same bit width. The quantizers are ISA-neutral (one C++ path, not dispatched), so these tests do not
iterate over kernel paths.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from _helpers import rel_rmse

from qwen_cpu import _kernels

T = gguf.GGMLQuantizationType
EXACT_TYPES = [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
K_TYPES = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]


def reference(x: np.ndarray, qtype: T) -> np.ndarray:
    """gguf-py's bytes for x (rows, n), as uint8 (rows, row_bytes)."""
    return np.ascontiguousarray(gguf.quants.quantize(x, qtype)).view(np.uint8).reshape(x.shape[0], -1)


def adversarial_rows(n: int = 256) -> np.ndarray:
    """Rows that stress the rounding rules; every row has n elements (a multiple of 256)."""
    rng = np.random.default_rng(7)
    rows = [
        np.zeros(n),                                    # all zero
        np.full(n, -0.0),                               # all negative zero
        np.full(n, 0.37), np.full(n, -5.0),             # constant rows
        np.full(n, 1e30), np.full(n, -3e38),            # huge: overflow in (max - min), f16 scales -> inf
        rng.standard_normal(n) * 1e30,
        rng.standard_normal(n) * 1e-30,                 # tiny: scales underflow in f16
        rng.standard_normal(n) * 1e-38,                 # subnormal-scale blocks: 1/d overflows to inf
        np.where(rng.random(n) < 0.5, -0.0, rng.standard_normal(n)),  # negative zeros among values
        rng.standard_normal(n) * 60000,                 # near the f16 maximum
    ]
    # ties: blocks whose scale is exactly 1 so that x * (1/d) lands on .5 for Q8_0 and the
    # offsets of Q4_0/Q5_0/Q4_1/Q5_1 make exact integers before truncation
    ties = rng.integers(-8, 8, n) + 0.5
    ties[::32] = 127.0                                  # Q8_0: d = 127/127 = 1
    rows.append(ties)
    t4 = rng.integers(-7, 7, n) + 0.5
    t4[::32] = -8.0                                     # Q4_0: d = -8/-8 = 1
    rows.append(t4)
    t5 = rng.integers(0, 15, n) + 0.5
    t5[::32], t5[1::32] = 0.0, 15.0                     # Q4_1: min 0, max 15 -> d = 1
    rows.append(t5)
    # f16 / bf16 halfway cases: 1 + 2^-11 (f16 tie), 1 + 2^-8 and 1 + 3 * 2^-8 (bf16 ties)
    half = np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 65520.0, 65519.0,
                     2.0**-25, 3 * 2.0**-26, 2.0**-24 * 1.5, -(2.0**-25)])
    rows.append(np.resize(half, n))
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("qtype", EXACT_TYPES, ids=lambda t: t.name)
def test_random_rows_byte_identical_to_gguf_py(qtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((48, 512)) * rng.lognormal(0, 3, (48, 1))).astype(np.float32)
    np.testing.assert_array_equal(_kernels.quantize(int(qtype), x), reference(x, qtype))


# (scale divisor, bytes of f16 fields before the quants) of the 32-element legacy blocks
LEGACY_BLOCKS = {T.Q4_0: (-8, 2), T.Q5_0: (-16, 2), T.Q4_1: (15, 4), T.Q5_1: (31, 4)}


def x86_cast_reference(x: np.ndarray, qtype: T, ref: np.ndarray) -> np.ndarray:
    """gguf-py's bytes `ref` for x as numpy on x86-64 gives them. In a block whose scale d is so
    small that 1/d overflows to inf, every quant goes through numpy's float32 -> uint8 cast of an
    infinity or NaN: x86-64 gives 0 (INT32_MIN's low byte) and our quantizer writes that on every
    CPU, but aarch64 saturates (inf -> 255, clipped to 15 or 31). So the quant bytes of those
    blocks (all but the f16 d and m) are set to x86-64's zeros; elsewhere ref is unchanged."""
    if qtype not in LEGACY_BLOCKS:
        return ref
    div, head = LEGACY_BLOCKS[qtype]
    blocks = x.reshape(-1, 32)
    if div < 0:  # symmetric: d = (the first element of largest magnitude) / div
        d = np.take_along_axis(blocks, abs(blocks).argmax(axis=-1, keepdims=True), axis=-1)[:, 0] / np.float32(div)
    else:  # asymmetric: d = (max - min) / div
        d = (blocks.max(axis=-1) - blocks.min(axis=-1)) / np.float32(div)
    with np.errstate(all="ignore"):
        inf_id = (d != 0) & np.isinf(np.float32(1) / d)
    out = ref.reshape(inf_id.size, -1).copy()
    out[inf_id, head:] = 0
    return out.reshape(ref.shape)


@pytest.mark.parametrize("qtype", EXACT_TYPES, ids=lambda t: t.name)
def test_adversarial_rows_byte_identical_to_gguf_py(qtype):
    x = adversarial_rows()
    with np.errstate(all="ignore"):
        ref = x86_cast_reference(x, qtype, reference(x, qtype))
    ours = _kernels.quantize(int(qtype), x)
    for i in range(x.shape[0]):
        np.testing.assert_array_equal(ours[i], ref[i], err_msg=f"adversarial row {i}")


def test_thread_count_does_not_change_bytes():
    x = np.random.default_rng(3).standard_normal((64, 1024)).astype(np.float32)
    for qtype in (T.Q4_K, T.Q6_K, T.Q5_0):
        np.testing.assert_array_equal(_kernels.quantize(int(qtype), x, 1), _kernels.quantize(int(qtype), x, 4))




def naive(x: np.ndarray, group: int, bits: int, asym: bool) -> np.ndarray:
    """Round-to-nearest per group with a float32 scale (and min): the baseline a K-quant must beat."""
    g = x.reshape(-1, group).astype(np.float64)
    if asym:
        lo, hi = g.min(1, keepdims=True), g.max(1, keepdims=True)
        d = (hi - lo) / (2**bits - 1)
        d[d == 0] = 1
        return (np.round((g - lo) / d) * d + lo).reshape(x.shape)
    amax = np.abs(g).max(1, keepdims=True)
    d = amax / 2 ** (bits - 1)
    d[d == 0] = 1
    return (np.clip(np.round(g / d), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * d).reshape(x.shape)


# bound on the relative RMSE for Gaussian data (measured: Q2_K 0.263, Q3_K 0.145, Q4_K 0.070,
# Q5_K 0.035, Q6_K 0.0175; llama.cpp's reference quantizers on the same data: 0.296, 0.151, 0.071,
# 0.036, 0.0177) and the naive baseline's group, bits and asymmetry for the same format
K_BOUNDS = {T.Q2_K: (0.275, (16, 2, True)), T.Q3_K: (0.150, (16, 3, False)), T.Q4_K: (0.0725, (32, 4, True)),
            T.Q5_K: (0.0360, (32, 5, True)), T.Q6_K: (0.0180, (16, 6, False))}


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_k_quant_error_bound_and_better_than_naive(qtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 1024)).astype(np.float32)
    q = _kernels.quantize(int(qtype), x)
    assert q.shape == (64, 1024 // 256 * gguf.GGML_QUANT_SIZES[qtype][1])
    err = rel_rmse(gguf.quants.dequantize(q, qtype), x)
    bound, (group, bits, asym) = K_BOUNDS[qtype]
    assert err < bound
    assert err < rel_rmse(naive(x, group, bits, asym), x)


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_k_quant_heavy_tails_and_scaled_rows(qtype):
    """Student-t rows (heavier tails: ~1.2x the Gaussian error, for llama.cpp's quantizers too) with
    per-row scales over 4 decades (the fp16 super-block scales stay normal): the Gaussian bound x1.5 for the worst row."""
    rng = np.random.default_rng(12)
    x = (rng.standard_t(4, (32, 512)) * 10.0 ** rng.uniform(-2, 2, (32, 1))).astype(np.float32)
    y = gguf.quants.dequantize(_kernels.quantize(int(qtype), x), qtype)
    assert np.isfinite(y).all()
    per_row = [rel_rmse(y[i], x[i]) for i in range(x.shape[0])]
    assert max(per_row) < K_BOUNDS[qtype][0] * 1.5


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_k_quant_degenerate_rows(qtype):
    """Zeros stay exactly zero; constant and huge rows come back finite and close."""
    x = np.array([np.zeros(256), np.full(256, -0.0), np.full(256, 0.25), np.full(256, -3.0),
                  np.linspace(-1e4, 1e4, 256)], dtype=np.float32)
    y = gguf.quants.dequantize(_kernels.quantize(int(qtype), x), qtype)
    assert np.isfinite(y).all()
    assert not y[:2].any()
    for i in (2, 3, 4):
        assert rel_rmse(y[i], x[i]) < K_BOUNDS[qtype][0] * 1.3, i


def test_bad_input_raises_value_error():
    x = np.zeros((2, 256), np.float32)
    with pytest.raises(ValueError, match="cannot produce"):
        _kernels.quantize(99, x)
    with pytest.raises(ValueError, match="2-D"):
        _kernels.quantize(int(T.Q8_0), np.zeros(256, np.float32))
    with pytest.raises(ValueError, match="multiple"):
        _kernels.quantize(int(T.Q4_K), np.zeros((2, 128), np.float32))
    with pytest.raises(ValueError, match="floating"):
        _kernels.quantize(int(T.Q8_0), np.zeros((2, 32), np.int32))
    assert _kernels.quantized_row_bytes(int(T.Q4_K), 512) == 288
    assert _kernels.quantized_row_bytes(int(T.Q4_K), 100) == 0
