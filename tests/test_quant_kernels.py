"""Tests of the per-row quantized kernels (csrc/scalar/quants*.cpp and every SIMD path that
registers its own) through the _kernels bindings: dequantize, quantize_act, vec_dot, matmul.

Oracles:
  - dequantize: gguf-py's gguf.quants.dequantize, bit for bit (NaN positions included);
  - quantize_act: a numpy transcription of the activation formats (round half to even), byte
    for byte, and the scalar path's bytes on every other path;
  - vec_dot: the float64 sum of the dequantized weight times the dequantized activation, up to
    float32 rounding of the per-block scale products;
  - matmul: the float64 product of the gguf-py-dequantized weights with the float64
    activations, within a bound derived from the 8-bit activation quantization (see
    `matmul_error_bound`).
Every test runs on each available kernel path through the `isa` fixture (tests/conftest.py).
"""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants as gq

from qwen_cpu import _kernels

F32, F16, BF16 = T.F32.value, T.F16.value, T.BF16.value
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 = (T[n].value for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1"))
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K = (T[n].value for n in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"))

FLOAT_TYPES = [F32, F16, BF16]
BLOCK32_TYPES = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0]
K_TYPES = [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K]
WEIGHT_TYPES = FLOAT_TYPES + BLOCK32_TYPES + K_TYPES
ACT_TYPES = [F32, Q8_0, Q8_1, Q8_K]
EXPECTED_ACT_TYPE = {**{t: F32 for t in FLOAT_TYPES}, Q4_0: Q8_0, Q5_0: Q8_0, Q8_0: Q8_0, Q4_1: Q8_1, Q5_1: Q8_1,
                     **{t: Q8_K for t in K_TYPES}}

# Byte offsets of the f16 scale fields inside one block, from the layouts in csrc/blocks.h.
F16_FIELDS = {Q4_0: [0], Q4_1: [0, 2], Q5_0: [0], Q5_1: [0, 2], Q8_0: [0],
              Q2_K: [80, 82], Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208]}
# The types whose values carry an additive offset: (offset of the f16 field scaling it,
# byte range of the quants). Zeroing the field leaves the scaled part d*q ("core"); zeroing the
# quants leaves the offset alone (m for Q4_1/Q5_1, -dmin*m for the K-quants).
OFFSET_FIELDS = {Q4_1: (2, (4, 20)), Q5_1: (2, (4, 24)), Q2_K: (82, (16, 80)),
                 Q4_K: (2, (16, 144)), Q5_K: (2, (16, 176))}

# Adversarial f16 scale bit patterns: +-0, smallest and largest subnormal, smallest normal,
# +-65504 (largest finite), +-inf, a quiet and a signalling NaN.
SPECIAL_F16 = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF,
                        0x7C00, 0xFC00, 0x7E00, 0x7C01], dtype=np.uint16)


def name(t):
    return T(t).name


def block_info(t):
    """(block_elems, block_bytes) of a type, from the extension."""
    info = _kernels.type_info(t)
    assert info is not None, t
    return info[1], info[2]


def type_ids(types):
    return [name(t) for t in types]


def gguf_dequantize(t, raw, n_rows):
    """gguf-py's dequantization of raw bytes holding n_rows equal rows -> float32 (n_rows, n_in)."""
    with np.errstate(all="ignore"):  # inf * 0 in the adversarial blocks is the point
        return gq.dequantize(raw.reshape(n_rows, -1), T(t))


def sane_f16(rng, size):
    """Random f16 scales (bit patterns) of magnitude 1e-3 .. 1, either sign."""
    v = rng.uniform(0.5, 1.0, size) * 10.0 ** rng.uniform(-3, 0, size) * rng.choice([-1, 1], size)
    return v.astype(np.float16).view(np.uint16)


def random_raw(t, n_blocks, rng, f16_bits=None):
    """n_blocks random blocks of a quantized type (uint8, flat), the f16 scale fields set from
    f16_bits (n_blocks, n_fields) or to sane random scales."""
    _, bb = block_info(t)
    raw = rng.integers(0, 256, size=(n_blocks, bb), dtype=np.uint8)
    fields = F16_FIELDS[t]
    if f16_bits is None:
        f16_bits = sane_f16(rng, (n_blocks, len(fields)))
    for k, off in enumerate(fields):
        raw[:, off:off + 2] = np.ascontiguousarray(f16_bits[:, k]).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def assert_same_floats(got, want):
    """Identical float32 values bit for bit (so -0.0 != 0.0), NaN wherever the other has NaN."""
    assert got.dtype == np.float32 and want.dtype == np.float32
    assert got.shape == want.shape
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    bad = np.flatnonzero(nan_got != nan_want)
    assert bad.size == 0, f"NaN mismatch at {bad[:8]}: got {got.flat[bad[:8]]}, want {want.flat[bad[:8]]}"
    ok = ~nan_want
    diff = np.flatnonzero(got[ok].view(np.uint32) != want[ok].view(np.uint32))
    idx = np.flatnonzero(ok.ravel())[diff[:8]]
    assert diff.size == 0, f"{diff.size} values differ, first at {idx}: got {got.flat[idx]}, want {want.flat[idx]}"


# ---- type table ------------------------------------------------------------------------------

def test_type_info_matches_gguf_sizes():
    # Against gguf-py's GGML_QUANT_SIZES. Not Q8_1: gguf-py lists 40 bytes (an old layout with
    # f32 d and s); GGUF files never store it, and ggml's and our block_q8_1 hold two f16: 36.
    from gguf.constants import GGML_QUANT_SIZES

    for t in WEIGHT_TYPES + [Q8_K]:
        assert _kernels.type_info(t) == (name(t), *GGML_QUANT_SIZES[T(t)])
    assert _kernels.type_info(Q8_1) == ("Q8_1", 32, 36)
    for unknown in (-1, 4, 5, 16, 29, 31, 1000):  # 4, 5: the removed Q4_2/Q4_3; 16..29: types we do not read
        assert _kernels.type_info(unknown) is None


def test_weight_act_types(isa):
    for t in WEIGHT_TYPES:
        assert _kernels.weight_act_type(t) == EXPECTED_ACT_TYPE[t], name(t)
    for t in (Q8_1, Q8_K, 4, -1, 99):
        assert _kernels.weight_act_type(t) is None


# ---- dequantize ----------------------------------------------------------------------------

def random_weight_bytes(t, n_elems, rng):
    """Raw bytes of n_elems random values of any weight type; the float types get every bit
    pattern (NaN, inf, subnormals), the block types random quants with sane f16 scales."""
    if t == F32:
        return rng.integers(0, 256, size=4 * n_elems, dtype=np.uint8)
    if t in (F16, BF16):
        return rng.integers(0, 256, size=2 * n_elems, dtype=np.uint8)
    be, _ = block_info(t)
    return random_raw(t, n_elems // be, rng)


@pytest.mark.parametrize("t", WEIGHT_TYPES, ids=type_ids(WEIGHT_TYPES))
def test_dequantize_random_matches_gguf(isa, t):
    """Random rows, bit for bit against gguf-py; one call large enough to run without the GIL."""
    rng = np.random.default_rng(1000 + t)
    be, _ = block_info(t)
    for n_blocks in (1, 3, 37, 40000 // be + 1):
        n = n_blocks * be
        raw = random_weight_bytes(t, n, rng)
        assert_same_floats(_kernels.dequantize(t, raw, n), gguf_dequantize(t, raw, 1)[0])


@pytest.mark.parametrize("t", BLOCK32_TYPES + K_TYPES, ids=type_ids(BLOCK32_TYPES + K_TYPES))
def test_dequantize_adversarial_matches_gguf(isa, t):
    """Every combination of special f16 scales (0, -0, subnormal, 65504, inf, NaN) with
    all-zero, all-one-bits, alternating and random quant bytes; also an all-zero row."""
    rng = np.random.default_rng(2000 + t)
    be, bb = block_info(t)
    n_fields = len(F16_FIELDS[t])
    combos = np.array(np.meshgrid(*[SPECIAL_F16] * n_fields, indexing="ij")).reshape(n_fields, -1).T
    for fill in (0x00, 0xFF, 0x55, 0xAA, None):
        raw = random_raw(t, len(combos), rng, f16_bits=combos).reshape(len(combos), bb)
        if fill is not None:  # overwrite everything but the scale fields with one byte value
            keep = np.zeros(bb, dtype=bool)
            for off in F16_FIELDS[t]:
                keep[off:off + 2] = True
            raw[:, ~keep] = fill
        raw = raw.reshape(-1)
        n = len(combos) * be
        assert_same_floats(_kernels.dequantize(t, raw, n), gguf_dequantize(t, raw, 1)[0])
    zero = np.zeros(4 * bb, dtype=np.uint8)
    assert_same_floats(_kernels.dequantize(t, zero, 4 * be), gguf_dequantize(t, zero, 1)[0])


@pytest.mark.parametrize("t", FLOAT_TYPES, ids=type_ids(FLOAT_TYPES))
def test_dequantize_float_special_values(isa, t):
    """F32/F16/BF16 special bit patterns (signed zeros, subnormals, extremes, inf, NaNs), exactly."""
    if t == F32:
        bits = np.array([0, 0x80000000, 1, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000,
                         0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF], dtype=np.uint32)
    else:
        bits = np.array([0, 0x8000, 1, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                         0x7E00, 0x7C01, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF], dtype=np.uint16)
    raw = bits.view(np.uint8)
    assert_same_floats(_kernels.dequantize(t, raw, len(bits)), gguf_dequantize(t, raw, 1)[0])


ACT_DTYPES = {
    Q8_0: np.dtype([("d", "<f2"), ("qs", "i1", 32)]),
    Q8_1: np.dtype([("d", "<f2"), ("s", "<f2"), ("qs", "i1", 32)]),
    Q8_K: np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)]),
}


def numpy_dequantize_act(t, raw):
    """Values d * q of activation bytes (gguf-py has no Q8_1/Q8_K dequantizer) -> float32."""
    if t == F32:
        return raw.view(np.float32).copy()
    blocks = raw.view(ACT_DTYPES[t])
    return (blocks["qs"].astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).ravel()


@pytest.mark.parametrize("t", [Q8_0, Q8_1, Q8_K], ids=type_ids([Q8_0, Q8_1, Q8_K]))
def test_dequantize_activation_formats(isa, t):
    """Q8_0 against gguf-py; Q8_1 and Q8_K against d * q computed in numpy, bit for bit."""
    rng = np.random.default_rng(3000 + t)
    be, bb = block_info(t)
    raw = rng.integers(0, 256, size=(5, bb), dtype=np.uint8)
    if t == Q8_K:  # a float32 d: keep it finite and sane
        raw[:, 0:4] = rng.uniform(-0.1, 0.1, 5).astype(np.float32).view(np.uint8).reshape(5, 4)
    raw = raw.reshape(-1)
    assert_same_floats(_kernels.dequantize(t, raw, 5 * be), numpy_dequantize_act(t, raw))


def test_dequantize_unaligned_input(isa):
    """A view starting at an odd address (np.frombuffer offset) gives the same values."""
    rng = np.random.default_rng(7)
    for t in (Q4_K, Q8_0, F32):
        be, _ = block_info(t)
        raw = random_weight_bytes(t, 2 * be, rng)
        shifted = np.frombuffer(b"\x00" + raw.tobytes(), dtype=np.uint8, offset=1)
        assert shifted.ctypes.data % 2 == 1
        assert_same_floats(_kernels.dequantize(t, shifted, 2 * be), gguf_dequantize(t, raw, 1)[0])


# ---- activation quantization ---------------------------------------------------------------

def numpy_quantize_act(t, x):
    """The activation formats of /tmp/actformats.md in numpy float32 arithmetic -> bytes."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # huge inputs: d and s overflow f16 to inf, as in C++
        return _numpy_quantize_act(t, x)


def _numpy_quantize_act(t, x):
    if t == F32:
        return x.view(np.uint8).copy()
    be, _ = block_info(t)
    xb = x.reshape(-1, be)
    amax = np.abs(xb).max(axis=1)
    out = np.zeros(len(xb), dtype=ACT_DTYPES[t])
    if t in (Q8_0, Q8_1):
        d = amax / np.float32(127)
        inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
        q = np.rint(xb * inv[:, None]).astype(np.int8)  # np.rint rounds half to even
        out["d"] = d.astype(np.float16)
        if t == Q8_1:
            out["s"] = (d * q.sum(axis=1, dtype=np.int32).astype(np.float32)).astype(np.float16)
    else:
        nz = amax != 0
        iscale = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=nz)
        d = np.divide(np.float32(1), iscale, out=np.zeros_like(amax), where=nz)
        q = np.minimum(np.rint(xb * iscale[:, None]), 127).astype(np.int8)
        out["d"] = d
        out["bsums"] = q.reshape(-1, 16, 16).sum(axis=2, dtype=np.int16)
    out["qs"] = q
    return out.view(np.uint8)


def activation_rows(t, rng):
    """Activation vectors that probe the formats' corners, each a multiple of the block size."""
    be, _ = block_info(t)
    nb = max(1, 64 // be)  # several blocks for the 32-element formats
    n = nb * be
    rows = [
        rng.standard_normal(4 * n).astype(np.float32),
        (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)).astype(np.float32),  # mixed magnitudes
        np.zeros(n, np.float32),
        np.full(n, -0.0, np.float32),
        np.concatenate([[127.0], np.tile(np.arange(-15.5, 16.0), 8)])[: max(be, 32)].astype(np.float32),  # ties
        np.full(n, 3e38, np.float32),  # near float max
        # tiny blocks: d = amax/127 underflows f16 (1e-30) or is an f16 subnormal (1e-5). Not
        # float32-subnormal amax: 1/d overflows there and the formats leave that case open.
        np.full(n, 1e-30, np.float32) * rng.choice([-1, 1], n).astype(np.float32),
        (rng.standard_normal(n) * 1e-5).astype(np.float32),
        np.where(np.arange(n) % be == 5, np.float32(-2.0), np.float32(0.0)),  # one value per block
    ]
    return rows


@pytest.mark.parametrize("t", ACT_TYPES, ids=type_ids(ACT_TYPES))
def test_quantize_act_scalar_matches_spec(use_isa, t):
    """The scalar quantizer against the numpy transcription of the format, byte for byte. The
    row starting [127, -15.5, -14.5, ...] has d = 1 and ties at every other value: round half
    to even (not away from zero) is part of the format."""
    rng = np.random.default_rng(4000 + t)
    with use_isa("scalar"):
        for x in activation_rows(t, rng):
            got = _kernels.quantize_act(t, x)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, numpy_quantize_act(t, x))


@pytest.mark.parametrize("t", ACT_TYPES, ids=type_ids(ACT_TYPES))
def test_quantize_act_same_bytes_on_every_isa(isa, use_isa, t):
    """Each path's activation bytes equal the scalar path's (so SIMD dots can be checked on them)."""
    rng = np.random.default_rng(5000 + t)
    rows = activation_rows(t, rng) + [rng.standard_normal(40960).astype(np.float32)]  # large: no GIL
    for x in rows:
        got = _kernels.quantize_act(t, x)
        with use_isa("scalar"):
            want = _kernels.quantize_act(t, x)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("t", [Q8_0, Q8_1, Q8_K], ids=type_ids([Q8_0, Q8_1, Q8_K]))
def test_quantize_act_round_trip(isa, t):
    """|x - d16 * q| <= d * (1/2 + 1e-4) + |q| * |d - d16| per element: half a quantum, plus what
    the f16 rounding of the stored scale moves (Q8_K keeps d in f32: that term is ~0), with d
    = amax/127 the unrounded scale and 1e-4 for the float32 rounding of x * (1/d)."""
    rng = np.random.default_rng(6000 + t)
    be, _ = block_info(t)
    x = (rng.standard_normal((16, be)) * 10.0 ** rng.uniform(-3, 3, (16, 1))).astype(np.float32).ravel()
    raw = _kernels.quantize_act(t, x)
    blocks = raw.view(ACT_DTYPES[t])
    q = blocks["qs"].astype(np.float64)
    d_stored = blocks["d"].astype(np.float64)[:, None]
    d = np.abs(x.reshape(-1, be)).max(axis=1, keepdims=True).astype(np.float64) / 127
    err = np.abs(x.reshape(-1, be) - d_stored * q)
    bound = d * (0.5 + 1e-4) + np.abs(q) * np.abs(d - d_stored)
    assert (err <= bound).all(), f"worst err/bound {np.max(err / bound)}"
    np.testing.assert_array_equal(_kernels.dequantize(t, raw, x.size), (d_stored * q).astype(np.float32).ravel())
    if t == Q8_1:  # s = d * sum(q) rounded to f16, d unrounded
        np.testing.assert_array_equal(blocks["s"], (d[:, 0] * q.sum(axis=1)).astype(np.float32).astype(np.float16))


# ---- weights for the dot products ----------------------------------------------------------

def make_weights(t, n_out, n_in, rng):
    """(raw rows uint8 (n_out, row_bytes), float64 (n_out, n_in) values by gguf-py): block
    types with a gguf-py quantizer are quantized from random floats, the K-quants (no quantizer
    in gguf-py) are random raw blocks with sane f16 scales."""
    w = (rng.standard_normal((n_out, n_in)) * rng.uniform(0.02, 1.0, (n_out, 1))).astype(np.float32)
    if t == F32:
        raw = w.view(np.uint8)
    elif t == F16:
        raw = w.astype(np.float16).view(np.uint8)
    elif t in K_TYPES:
        be, _ = block_info(t)
        raw = random_raw(t, n_out * n_in // be, rng).reshape(n_out, -1)
    else:
        raw = gq.quantize(w, T(t))
    raw = np.ascontiguousarray(raw)
    return raw, gguf_dequantize(t, raw, n_out).astype(np.float64)


def split_weights(t, raw, values):
    """The weight values as core + offset (float64, (n_out, n_in) each): core = the scaled quants
    d*q (exact in float32), offset = the additive min term (zero for types without one). The
    kernels multiply the core by integer sums and the offset by activation block sums."""
    n_out = raw.shape[0]
    if t not in OFFSET_FIELDS:
        return values, np.zeros_like(values)
    (scale_off, (q0, q1)), (_, bb) = OFFSET_FIELDS[t], block_info(t)
    blocks = raw.reshape(-1, bb)
    no_min, no_q = blocks.copy(), blocks.copy()
    no_min[:, scale_off:scale_off + 2] = 0
    no_q[:, q0:q1] = 0
    core = gguf_dequantize(t, no_min.reshape(-1), n_out).astype(np.float64)
    offset = gguf_dequantize(t, no_q.reshape(-1), n_out).astype(np.float64)
    # the field table above is right iff the parts add up (to float32 rounding of the sum)
    np.testing.assert_allclose(core + offset, values, rtol=2**-23, atol=1e-30)
    return core, offset


def float_rounding_bound(n_in, magnitude):
    """float32 accumulation over n_in products (a generous gamma_n) times sum |w||x|."""
    return 2.0**-23 * (n_in + 8) * magnitude


# ---- vec_dot -------------------------------------------------------------------------------

@pytest.mark.parametrize("t", WEIGHT_TYPES, ids=type_ids(WEIGHT_TYPES))
def test_vec_dot_matches_dequantized_dot(isa, t):
    """vec_dot(w, quantize_act(x)) against the float64 dot of the dequantized weight with the
    dequantized activation (for Q4_1/Q5_1 the min term uses the activation's stored block sum s,
    as the format defines). Only float32 rounding separates the two: tolerance
    2^-23 (n + 8) sum |w||x_hat|."""
    rng = np.random.default_rng(7000 + t)
    be, _ = block_info(t)
    act = EXPECTED_ACT_TYPE[t]
    for n in sorted({be, 2 * max(be, 32), 4 * max(be, 256)}):
        raw, values = make_weights(t, 3, n, rng)
        core, offset = split_weights(t, raw, values)
        for r in range(3):
            x = (rng.standard_normal(n) * rng.uniform(0.1, 10)).astype(np.float32)
            a = _kernels.quantize_act(act, x)
            x_hat = numpy_dequantize_act(act, a).astype(np.float64)
            want = core[r] @ x_hat
            if act == Q8_1:  # the min term: m times the stored block sum s
                s = a.view(ACT_DTYPES[Q8_1])["s"].astype(np.float64)
                want += offset[r].reshape(-1, 32)[:, 0] @ s
            else:
                want += offset[r] @ x_hat
            got = _kernels.vec_dot(t, raw[r], a, n)
            magnitude = (np.abs(core[r]) + np.abs(offset[r])) @ np.abs(x_hat)
            assert abs(got - want) <= float_rounding_bound(n, magnitude), (name(t), n, r, got, want)


# ---- matmul ----------------------------------------------------------------------------------

N_IN = {**{t: [1, 64, 200] for t in FLOAT_TYPES},
        **{t: [32, 64, 128, 160] for t in BLOCK32_TYPES},  # 64, 128: head-dim-like rows
        **{t: [256, 768] for t in K_TYPES}}


def matmul_error_bound(act, core, offset, x):
    """Bound on |matmul - W @ x| (n_tok, n_out), W = core + offset, from quantizing x to `act`.

    Per activation block b with step d_b = max|x_b| / 127 an activation value is off by at most
    d_b (1/2 + 1e-4) (round to nearest, float32 rounding of x/d), plus |q| |d_b - f16(d_b)|
    <= 127 * 2^-11 d_b where the format stores d in f16 (Q8_0, Q8_1). Both the core and the
    offset of a weight see that error (the kernels apply the offset to the activation block
    sums), so each block contributes d_b c sum(|core| + |offset|). Q8_1 also rounds the block
    sum s to f16: |m_b| |s_b| 2^-11, |s_b| <= sum |x_b|. Float32 accumulation is added on top.
    """
    n_tok, n_in = x.shape
    if act == F32:
        c, be = 0.0, 1
    else:
        be = 256 if act == Q8_K else 32
        c = 0.5 + 1e-4 + (0.0 if act == Q8_K else 127 * 2.0**-11)
    mag_w = np.abs(core) + np.abs(offset)  # (n_out, n_in)
    step = np.abs(x).reshape(n_tok, -1, be).max(axis=2) / 127 if c else np.zeros((n_tok, n_in // be))
    w_blocks = mag_w.reshape(mag_w.shape[0], -1, be).sum(axis=2)  # (n_out, n_blocks)
    bound = c * step @ w_blocks.T
    if act == Q8_1:
        m = np.abs(offset.reshape(offset.shape[0], -1, 32)[:, :, 0])  # (n_out, n_blocks)
        bound += 2.0**-11 * 1.01 * np.abs(x).reshape(n_tok, -1, 32).sum(axis=2) @ m.T
    return bound + float_rounding_bound(n_in, np.abs(x) @ mag_w.T) + 1e-30


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("t", WEIGHT_TYPES, ids=type_ids(WEIGHT_TYPES))
def test_matmul_against_float64(isa, use_isa, t, n_threads):
    """_kernels.matmul against float64 (gguf-py-dequantized W) @ x within matmul_error_bound,
    for n_out in (1, 7, 33) (not multiples of the thread counts), n_tok in (1, 5) and several
    row lengths; on SIMD paths also against the scalar path within float32 rounding (both compute
    the same integer sums on the same activation bytes)."""
    rng = np.random.default_rng(8000 + 10 * t + n_threads)
    pool = _kernels.ThreadPool(n_threads)
    act = EXPECTED_ACT_TYPE[t]
    worst = 0.0
    for n_in in N_IN[t]:
        for n_out in (1, 7, 33):
            raw, values = make_weights(t, n_out, n_in, rng)
            core, offset = split_weights(t, raw, values)
            for n_tok in (1, 5):
                x = (rng.standard_normal((n_tok, n_in)) * rng.uniform(0.1, 10, (n_tok, 1))).astype(np.float32)
                y = _kernels.matmul(pool, raw, t, n_in, x)
                assert y.shape == (n_tok, n_out) and y.dtype == np.float32
                want = x.astype(np.float64) @ values.T
                bound = matmul_error_bound(act, core, offset, x.astype(np.float64))
                err = np.abs(y - want)
                assert (err <= bound).all(), (name(t), n_in, n_out, n_tok, float(np.max(err / bound)))
                worst = max(worst, float(np.max(err / bound)))
                if isa != "scalar":
                    with use_isa("scalar"):
                        y_ref = _kernels.matmul(pool, raw, t, n_in, x)
                    tol = 2 * float_rounding_bound(n_in, np.abs(x.astype(np.float64)) @ (np.abs(core) + np.abs(offset)).T)
                    assert (np.abs(y - y_ref) <= tol + 1e-30).all(), (name(t), n_in, n_out, n_tok)
    # The bound must stay meaningful: for the quantized formats the observed error reaches a
    # visible fraction of it (it is a worst case, random data lands well inside).
    if act != F32:
        assert worst > 0.01, worst


# ---- argument errors -------------------------------------------------------------------------

def test_errors_are_value_errors():
    """Wrong sizes and unknown types raise ValueError naming the problem, never crash."""
    x32 = np.zeros(32, np.float32)
    q4 = np.zeros(18, np.uint8)
    with pytest.raises(ValueError, match="17 bytes, expected 18"):
        _kernels.dequantize(Q4_0, np.zeros(17, np.uint8), 32)
    with pytest.raises(ValueError, match="not a multiple of the Q4_0 block size"):
        _kernels.dequantize(Q4_0, q4, 33)
    with pytest.raises(ValueError, match="n must be >= 0"):
        _kernels.dequantize(Q4_0, q4, -32)
    for bad in (4, 16, 31, -1, 1000):
        with pytest.raises(ValueError, match="unsupported tensor type"):
            _kernels.dequantize(bad, q4, 32)
    with pytest.raises(ValueError, match="1-D"):
        _kernels.dequantize(Q4_0, np.zeros((1, 18), np.uint8), 32)

    with pytest.raises(ValueError, match="not an activation format"):
        _kernels.quantize_act(Q4_0, x32)
    with pytest.raises(ValueError, match="not an activation format"):
        _kernels.quantize_act(77, x32)
    with pytest.raises(ValueError, match="not a multiple of the Q8_K block size"):
        _kernels.quantize_act(Q8_K, x32)
    with pytest.raises(ValueError, match="1-D"):
        _kernels.quantize_act(Q8_0, np.zeros((2, 32), np.float32))

    a8 = _kernels.quantize_act(Q8_0, x32)
    assert _kernels.vec_dot(Q4_0, q4, a8, 32) == 0.0
    with pytest.raises(ValueError, match="w has 17 bytes, expected 18"):
        _kernels.vec_dot(Q4_0, np.zeros(17, np.uint8), a8, 32)
    with pytest.raises(ValueError, match="a has 33 bytes, expected 34"):
        _kernels.vec_dot(Q4_0, q4, a8[:33], 32)
    with pytest.raises(ValueError, match="a has 34 bytes, expected 36"):  # Q4_1 pairs with Q8_1
        _kernels.vec_dot(Q4_1, np.zeros(20, np.uint8), a8, 32)
    with pytest.raises(ValueError, match="not a multiple of the Q4_0 block size"):
        _kernels.vec_dot(Q4_0, q4, a8, 31)
    for bad in (Q8_1, Q8_K, 4, -3, 500):
        with pytest.raises(ValueError, match="no dot-product kernel"):
            _kernels.vec_dot(bad, q4, a8, 32)

    pool = _kernels.ThreadPool(1)
    with pytest.raises(ValueError, match="expected 18"):
        _kernels.matmul(pool, np.zeros((2, 17), np.uint8), Q4_0, 32, x32[None])
    with pytest.raises(ValueError):
        _kernels.matmul(pool, np.zeros((2, 18), np.uint8), Q4_0, 33, np.zeros((1, 33), np.float32))
