"""The non-matmul kernels and drivers (csrc/scalar/ops.cpp, csrc/avx2/ops.cpp, csrc/ops.cpp) through
their bindings, on every kernel path (the `isa` fixture of conftest.py).

References: numpy in float64 on the same float32 (or float16-rounded) inputs, except
  - add and fp32_to_fp16, compared bit for bit with numpy's own float32 add / astype(float16);
  - rope_tables, compared with Hugging Face transformers' Qwen2 rotary embedding (plain and YaRN)
    stored in tests/data/rope_golden.npz by tests/data/make_rope_golden.py.
Each test states its tolerance; the AVX2 path's vector exp (error bound in csrc/avx2/ops.cpp:
3 ulp) is checked directly through softmax.
"""

import os

import numpy as np
import pytest

from qwen_cpu import _kernels

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "rope_golden.npz")
ODD_SIZES = [1, 3, 7, 8, 9, 17, 37, 896, 4099]  # lengths below, at and off a multiple of 8 / 16


def rng_for(*key):
    """A generator seeded from the test's parameters, so every case is reproducible on its own."""
    return np.random.default_rng([sum((i + 1) * ord(c) for i, c in enumerate(str(k))) for k in key])


# ---- elementwise and row kernels ------------------------------------------------------------------


@pytest.mark.parametrize("n", ODD_SIZES)
def test_rmsnorm_matches_float64(isa, n):
    # vs float64 numpy: relative error <= 2e-6 per element (float32 sum of squares and two products)
    rng = rng_for("rmsnorm", n)
    x = (rng.standard_normal((3, n)) * [[1.0], [30.0], [1e-3]]).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    eps = 1e-6
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64**2).mean(axis=-1, keepdims=True) + eps) * w
    y = _kernels.rmsnorm(x, w, eps)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-30)
    np.testing.assert_array_equal(_kernels.rmsnorm(x[1], w, eps), y[1])  # 1-D input, same row


def test_rmsnorm_eps_dominates_zero_row(isa):
    # an all-zero row gives zeros (eps keeps the scale finite), exactly
    y = _kernels.rmsnorm(np.zeros(13, np.float32), np.ones(13, np.float32), 1e-5)
    assert np.array_equal(y, np.zeros(13, np.float32))


def softmax64(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("n", ODD_SIZES)
def test_softmax_matches_float64(isa, n):
    # vs float64 numpy: relative error <= 2e-6 (exp <= 3 ulp, float32 sum, one product) plus the
    # float32 rounding of x - max (6e-8 * |x - max|, inherent: exp turns it into a relative error);
    # values below the smallest normal float may flush to 0 (atol 1.2e-38)
    rng = rng_for("softmax", n)
    x = (rng.standard_normal((4, n)) * [[1.0], [10.0], [40.0], [1e-3]]).astype(np.float32)
    ref = softmax64(x)
    rtol = 2e-6 + 6e-8 * np.abs(x - x.max(axis=-1, keepdims=True))
    assert np.all(np.abs(_kernels.softmax(x) - ref) <= rtol * ref + 1.2e-38)


def test_softmax_masked_entries(isa):
    # -inf entries (masked scores) get probability exactly 0; the rest match float64 (rtol 2e-6)
    rng = rng_for("softmax-mask")
    x = rng.standard_normal((2, 21)).astype(np.float32)
    x[0, ::3] = -np.inf
    x[1, 1:] = -np.inf
    y = _kernels.softmax(x)
    assert np.all(y[np.isneginf(x)] == 0.0)
    assert y[1, 0] == 1.0
    np.testing.assert_allclose(y, softmax64(x), rtol=2e-6, atol=0)


def test_exp_accuracy_through_softmax(isa):
    # softmax([x, 0]) = [e^x / (1 + e^x), 1 / (1 + e^x)]; for x < -17, 1 + e^x rounds to 1 in float32,
    # so the first element is the kernel's exp itself: relative error <= 3 ulp (3.6e-7). Closer to 0
    # the division adds an ulp (<= 4.8e-7). Below -87.34 (result < 2^-126) the AVX2 exp flushes to 0.
    x = np.concatenate([np.linspace(-87.3, -17.0, 4001), np.linspace(-17.0, 0.0, 2001)]).astype(np.float32)
    rows = np.stack([x, np.zeros_like(x)], axis=1)
    y = _kernels.softmax(rows)[:, 0].astype(np.float64)
    ref = softmax64(rows)[:, 0]
    rel = np.abs(y - ref) / ref
    assert rel[x < -17.0].max() <= 3.6e-7
    assert rel.max() <= 4.8e-7
    tiny = _kernels.softmax(np.array([[-90.0, 0.0], [-200.0, 0.0]], np.float32))
    assert np.all(tiny[:, 0] <= 2.0**-126) and np.all(tiny[:, 1] == 1.0)


@pytest.mark.parametrize("n", ODD_SIZES)
def test_swiglu_matches_float64(isa, n):
    # vs float64 numpy gate * sigmoid(gate) * up: relative error <= 2e-6 (exp, one division, one
    # product); where the true value is below 1e-30 (gate < -70) an absolute 1e-30 is allowed
    rng = rng_for("swiglu", n)
    gate = (rng.standard_normal(n) * 6).astype(np.float32)
    gate[: min(n, 4)] = [-100.0, 100.0, -30.0, 0.0][: min(n, 4)]
    up = rng.standard_normal(n).astype(np.float32)
    g = gate.astype(np.float64)
    ref = g / (1.0 + np.exp(-g)) * up
    np.testing.assert_allclose(_kernels.swiglu(gate, up), ref, rtol=2e-6, atol=1e-30)


@pytest.mark.parametrize("n", ODD_SIZES)
def test_add_is_exact(isa, n):
    # bit-identical to numpy's float32 addition (IEEE, correctly rounded)
    rng = rng_for("add", n)
    a, b = rng.standard_normal((2, 2, n)).astype(np.float32)
    np.testing.assert_array_equal(_kernels.add(a, b), a + b)


# ---- fp32 -> fp16 -----------------------------------------------------------------------------------


def test_fp32_to_fp16_bit_identical_to_numpy(isa):
    # bit for bit vs numpy astype(float16): random magnitudes across the whole half range,
    # exact halfway cases (ties to even), subnormal halves, overflow to inf, +-0, +-inf, +-nan
    rng = rng_for("fp16")
    mags = rng.standard_normal(3000) * np.exp2(rng.uniform(-28, 18, 3000))
    all_halves = np.arange(0, 0x7C00, dtype=np.uint16)  # every finite non-negative half
    lo = all_halves[:-1].view(np.float16).astype(np.float64)
    hi = all_halves[1:].view(np.float16).astype(np.float64)
    ties = (lo + hi) / 2  # exactly between two halves: needs 12 mantissa bits, exact in float32
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504.0, 65519.99, 65520.0, -65520.0, 1e5,
                2.0**-24, 2.0**-25, 2.0**-25 * 1.0000001, 2.0**-26, 2.0**-14, 2.0**-14 * (1 - 2.0**-12), 1e-30]
    with np.errstate(over="ignore"):  # float64 -> float32 of 1e5 etc. is fine; numpy warns on the cast to half
        x = np.concatenate([mags, ties, -ties[::7], specials, [0.1, 0.2, 0.3]]).astype(np.float32)
        expected = x.astype(np.float16)
    assert x.size % 8 != 0  # the tail path too
    y = _kernels.fp32_to_fp16(x)
    assert y.dtype == np.float16 and y.shape == x.shape
    np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))
    # any shape; a NaN with a payload stays a NaN of the same sign (payload bits are not kept)
    payload = np.array([0x7FC00001, 0xFF800001, 0x7FFFFFFF], np.uint32).view(np.float32).reshape(3, 1)
    h = _kernels.fp32_to_fp16(payload)
    assert h.shape == (3, 1) and np.all(np.isnan(h)) and list(np.signbit(h[:, 0])) == [False, True, False]


# ---- rotary embedding --------------------------------------------------------------------------------


def rope_reference(x, cos, sin, neox):
    """x (n_tok, n_head, head_dim) rotated in float64 with cos, sin (n_tok, head_dim/2)."""
    x = x.astype(np.float64)
    half = x.shape[-1] // 2
    c, s = cos[:, None, :].astype(np.float64), sin[:, None, :].astype(np.float64)
    if neox:
        a, b = x[..., :half], x[..., half:]
    else:
        a, b = x[..., 0::2], x[..., 1::2]
    ra, rb = a * c - b * s, a * s + b * c
    out = np.empty_like(x)
    if neox:
        out[..., :half], out[..., half:] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def tables64(head_dim, pos0, n_pos, base, freq_scale=1.0, attn_factor=1.0):
    """Plain / linearly scaled rope tables in float64 (no YaRN)."""
    theta = freq_scale * base ** (-np.arange(0, head_dim, 2) / head_dim)
    ang = np.arange(pos0, pos0 + n_pos)[:, None] * theta[None, :]
    return np.cos(ang) * attn_factor, np.sin(ang) * attn_factor


@pytest.mark.parametrize("neox", [True, False])
@pytest.mark.parametrize("head_dim", [2, 6, 18, 64, 128])
def test_rope_both_pairings(isa, neox, head_dim):
    # vs float64 rotation of the same float32 input with float64 tables: |err| <= 2e-6 (x ~ N(0, 1));
    # pos0 = 5, linear scaling 0.5 and attn_factor 1.5 to exercise those parameters too
    rng = rng_for("rope", neox, head_dim)
    n_tok, n_head = 5, 3
    x = rng.standard_normal((n_tok, n_head, head_dim)).astype(np.float32)
    cos, sin = tables64(head_dim, 5, n_tok, 10000.0, freq_scale=0.5, attn_factor=1.5)
    y = _kernels.rope(x, 5, freq_base=10000.0, neox=neox, freq_scale=0.5, attn_factor=1.5)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, rope_reference(x, cos, sin, neox), rtol=0, atol=2e-6 * 1.5)
    # the input is not modified; position 0 is the identity
    assert not np.array_equal(x, y)
    np.testing.assert_array_equal(_kernels.rope(x[:1], 0, freq_base=10000.0, neox=neox), x[:1])


def test_rope_tokens_independent_of_batching(isa):
    # a prompt rotated at once equals its tokens rotated one at a time (bit-exact), and a 3-thread pool
    # gives the same bits as one thread
    rng = rng_for("rope-batch")
    x = rng.standard_normal((9, 4, 64)).astype(np.float32)
    kw = dict(freq_base=1e6, neox=True, freq_scale=0.25, ext_factor=1.0, n_ctx_orig=32768)
    whole = _kernels.rope(x, 100, **kw)
    single = np.concatenate([_kernels.rope(x[t : t + 1], 100 + t, **kw) for t in range(9)])
    np.testing.assert_array_equal(whole, single)
    np.testing.assert_array_equal(_kernels.rope(x, 100, pool=_kernels.ThreadPool(3), **kw), whole)


def test_rope_tables_plain_and_linear_match_float64():
    # plain and linearly scaled tables vs float64 cos/sin: |err| <= 1e-7 * attn_factor (float32 rounding)
    for freq_scale, attn_factor in [(1.0, 1.0), (0.125, 0.8)]:
        c, s = _kernels.rope_tables(96, 17, 40, freq_base=5e5, freq_scale=freq_scale, attn_factor=attn_factor)
        rc, rs = tables64(96, 17, 40, 5e5, freq_scale=freq_scale, attn_factor=attn_factor)
        assert c.shape == (40, 48)
        np.testing.assert_allclose(c, rc, rtol=0, atol=1e-7 * attn_factor)
        np.testing.assert_allclose(s, rs, rtol=0, atol=1e-7 * attn_factor)


@pytest.mark.parametrize("name", ["plain", "yarn"])
def test_rope_tables_match_transformers(name):
    # vs transformers' Qwen2RotaryEmbedding (tests/data/rope_golden.npz). HF computes its frequencies
    # and angles in float32, we in float64, so the angles may differ by ~1.2e-7 relative: allowed
    # |err| <= mscale * (2e-7 + 2.5e-7 * angle) per entry. At position 1 the angle is the frequency
    # itself, recovered with atan2 (|err| <= 1.2e-7), and |(cos, sin)| is YaRN's magnitude scale.
    g = np.load(GOLDEN)
    head_dim, theta = int(g["head_dim"]), float(g["rope_theta"])
    kw = {}
    if name == "yarn":  # GGUF rope.scaling.{type=yarn, factor, original_context_length} -> RopeParams
        kw = dict(freq_scale=1.0 / float(g["yarn_factor"]), ext_factor=1.0,
                  n_ctx_orig=int(g["yarn_original_max_position_embeddings"]))
    positions = g["positions"]
    cos = np.empty((len(positions), head_dim // 2), np.float32)
    sin = np.empty_like(cos)
    for i, p in enumerate(positions):
        c, s = _kernels.rope_tables(head_dim, int(p), 1, freq_base=theta, **kw)
        cos[i], sin[i] = c[0], s[0]
    mscale = float(g[f"{name}_attention_scaling"])
    inv_freq = g[f"{name}_inv_freq"].astype(np.float64)
    tol = mscale * (2e-7 + 2.5e-7 * positions[:, None] * inv_freq[None, :])
    assert np.all(np.abs(cos - g[f"{name}_cos"]) <= tol)
    assert np.all(np.abs(sin - g[f"{name}_sin"]) <= tol)
    p1 = list(positions).index(1)
    np.testing.assert_allclose(np.arctan2(sin[p1], cos[p1]), inv_freq, rtol=0, atol=1.2e-7)
    np.testing.assert_allclose(np.hypot(cos, sin), mscale, rtol=3e-7)


def test_rope_tables_yarn_ramp_shape():
    # YaRN per pair i (head_dim 128, base 1e6, n_ctx_orig 32768, beta 32/1: correction dims 23 and 40):
    # pairs <= 23 keep the original frequency, pairs >= 40 are divided by the factor, between them a
    # linear mix (checked in float64 via atan2 at position 1, |err| <= 1.2e-7)
    c, s = _kernels.rope_tables(128, 1, 1, freq_base=1e6, freq_scale=0.25, ext_factor=1.0, n_ctx_orig=32768)
    freq = np.arctan2(s[0], c[0]).astype(np.float64)
    i = np.arange(64)
    base_freq = 1e6 ** (-2.0 * i / 128)
    ramp = 1.0 - np.clip((i - 23) / (40 - 23), 0.0, 1.0)  # 1: extrapolate, 0: interpolate
    expected = base_freq * (0.25 * (1 - ramp) + ramp)
    np.testing.assert_allclose(freq, expected, rtol=0, atol=1.2e-7)


# ---- attention -------------------------------------------------------------------------------------


def attention_reference(q, k_cache, v_cache, pos0, n_head, n_kv_head):
    """Causal GQA softmax attention in float64: q (n_tok, n_head, head_dim) -> (n_tok, n_head, head_dim)."""
    n_tok, _, head_dim = q.shape
    k = k_cache.astype(np.float64)
    v = v_cache.astype(np.float64)
    out = np.zeros((n_tok, n_head, head_dim))
    group = n_head // n_kv_head
    for t in range(n_tok):
        n_keys = pos0 + t + 1
        for h in range(n_head):
            scores = k[h // group, :n_keys] @ q[t, h].astype(np.float64) / np.sqrt(head_dim)
            p = np.exp(scores - scores.max())
            out[t, h] = (p / p.sum()) @ v[h // group, :n_keys]
    return out


def make_attention_case(rng, n_tok, pos0, n_head, n_kv_head, head_dim, dtype, spare=3):
    """q and caches whose positions beyond pos0 + n_tok hold NaN: reading them would poison the output."""
    n_ctx = pos0 + n_tok + spare
    q = rng.standard_normal((n_tok, n_head, head_dim)).astype(np.float32)
    k = (rng.standard_normal((n_kv_head, n_ctx, head_dim)) * 1.5).astype(dtype)
    v = rng.standard_normal((n_kv_head, n_ctx, head_dim)).astype(dtype)
    k[:, pos0 + n_tok :] = np.nan
    v[:, pos0 + n_tok :] = np.nan
    return q, k, v


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["f16", "f32"])
@pytest.mark.parametrize("pos0", [0, 5])
@pytest.mark.parametrize("n_tok", [1, 7])
@pytest.mark.parametrize("heads", [(14, 2), (9, 3)], ids=["14-2", "9-3"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_attention_matches_float64(isa, head_dim, heads, n_tok, pos0, dtype):
    # vs float64 causal GQA attention over the same (float16-rounded) cache: |err| <= 5e-6 (outputs ~1;
    # measured <= 8e-7)
    n_head, n_kv_head = heads
    rng = rng_for("attn", head_dim, heads, n_tok, pos0, dtype.__name__)
    q, k, v = make_attention_case(rng, n_tok, pos0, n_head, n_kv_head, head_dim, dtype)
    out = _kernels.attention(_kernels.ThreadPool(2), q, k, v, pos0, n_head, n_kv_head)
    assert out.shape == q.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, attention_reference(q, k, v, pos0, n_head, n_kv_head), rtol=0, atol=5e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["f16", "f32"])
def test_attention_odd_shapes(isa, dtype):
    # head_dim 20 (not a multiple of 8), 10 query heads per KV head (more than one block of 8),
    # 73+ keys (more than one 64-key tile): vs float64, |err| <= 1e-5
    rng = rng_for("attn-odd", dtype.__name__)
    q, k, v = make_attention_case(rng, 3, 70, 10, 1, 20, dtype)
    out = _kernels.attention(_kernels.ThreadPool(2), q, k, v, 70, 10, 1)
    np.testing.assert_allclose(out, attention_reference(q, k, v, 70, 10, 1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["f16", "f32"])
@pytest.mark.parametrize("n_q", [1, 2, 3, 4, 5, 6, 8])
def test_attention_group_sizes(isa, n_q, dtype):
    # every number of query heads per KV head (the AVX2 kernel specialises each), head_dim 136 (17
    # chunks of 8: multi-chunk passes plus a remainder), 67 and 68 keys (one full 64-key tile plus
    # a partial one, odd and even): vs float64, |err| <= 5e-6
    rng = rng_for("attn-group", n_q, dtype.__name__)
    q, k, v = make_attention_case(rng, 2, 66, 2 * n_q, 2, 136, dtype)
    out = _kernels.attention(_kernels.ThreadPool(2), q, k, v, 66, 2 * n_q, 2)
    np.testing.assert_allclose(out, attention_reference(q, k, v, 66, 2 * n_q, 2), rtol=0, atol=5e-6)


def test_attention_long_prompt_thread_split(isa):
    # a 61-token prompt split over 1, 2 and 3 threads gives identical bits (each (token, kv head)
    # pair is computed whole by one thread), and matches float64 within 1e-5
    rng = rng_for("attn-long")
    q, k, v = make_attention_case(rng, 61, 0, 4, 2, 32, np.float16)
    outs = [_kernels.attention(_kernels.ThreadPool(n), q, k, v, 0, 4, 2) for n in (1, 2, 3)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_allclose(outs[0], attention_reference(q, k, v, 0, 4, 2), rtol=0, atol=1e-5)


def test_attention_decode_equals_prefill_row(isa):
    # decoding token t alone (pos0 = t) gives the same bits as row t of the whole-prompt call
    rng = rng_for("attn-decode")
    q, k, v = make_attention_case(rng, 6, 0, 6, 2, 64, np.float32, spare=0)
    pool = _kernels.ThreadPool(2)
    whole = _kernels.attention(pool, q, k, v, 0, 6, 2)
    for t in range(6):
        np.testing.assert_array_equal(_kernels.attention(pool, q[t : t + 1], k, v, t, 6, 2)[0], whole[t])


# ---- shape errors ----------------------------------------------------------------------------------


def test_shape_errors_raise_value_error(isa):
    f = np.zeros
    pool = _kernels.ThreadPool(1)
    q = f((2, 4, 16), np.float32)
    kc = f((2, 8, 16), np.float16)
    bad = [
        lambda: _kernels.rmsnorm(f((2, 5), np.float32), f(4, np.float32), 1e-6),
        lambda: _kernels.rmsnorm(f((2, 0), np.float32), f(0, np.float32), 1e-6),
        lambda: _kernels.swiglu(f(5, np.float32), f(6, np.float32)),
        lambda: _kernels.add(f((2, 3), np.float32), f((3, 2), np.float32)),
        lambda: _kernels.softmax(np.float32(1.0)),
        lambda: _kernels.rope(f((3, 16), np.float32), 0, freq_base=1e4, neox=True),
        lambda: _kernels.rope(f((1, 2, 7), np.float32), 0, freq_base=1e4, neox=True),
        lambda: _kernels.rope(f((1, 2, 8), np.float32), -1, freq_base=1e4, neox=True),
        lambda: _kernels.rope(f((1, 2, 8), np.float32), 0, freq_base=1e4, neox=True, ext_factor=1.0),
        lambda: _kernels.rope_tables(8, 0, 4, freq_base=0.5),
        lambda: _kernels.rope_tables(7, 0, 4, freq_base=1e4),
        lambda: _kernels.attention(pool, q, kc, kc, 0, 5, 2),  # n_head != q's heads
        lambda: _kernels.attention(pool, f((2, 3, 16), np.float32), kc, kc, 0, 3, 2),  # 3 % 2 != 0
        lambda: _kernels.attention(pool, q, kc, kc, 7, 4, 2),  # positions 7, 8 beyond an 8-slot cache
        lambda: _kernels.attention(pool, q, kc, kc.astype(np.float32), 0, 4, 2),  # k/v dtypes differ
        lambda: _kernels.attention(pool, q, kc, kc[:, :6], 0, 4, 2),  # k/v shapes differ
        lambda: _kernels.attention(pool, q, f((2, 8, 32), np.float16), f((2, 8, 32), np.float16), 0, 4, 2),
        lambda: _kernels.attention(pool, q, f((3, 8, 16), np.float16), f((3, 8, 16), np.float16), 0, 4, 2),
        lambda: _kernels.attention(pool, q[0], kc, kc, 0, 4, 2),  # q not 3-D
    ]
    for i, call in enumerate(bad):
        try:
            call()
        except ValueError:
            continue
        pytest.fail(f"case {i} did not raise ValueError")


def test_rope_tables_freq_factors_divide_each_pair_s_frequency():
    # llama3 rope_freqs: pair i turns at base^(-2i/d) / f_i radians per position (float64 reference)
    f = np.array([1.0, 1.5, 3.3, 8.0, 8.0, 8.0, 8.0, 8.0], np.float32)
    c, s = _kernels.rope_tables(16, 5, 90, freq_base=100.0, freq_factors=f)
    ang = np.arange(5, 95)[:, None] * (100.0 ** (-np.arange(0, 16, 2) / 16) / f.astype(np.float64))[None, :]
    np.testing.assert_allclose(c, np.cos(ang), rtol=0, atol=1e-7)
    np.testing.assert_allclose(s, np.sin(ang), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="freq_factors must be 1-D with head_dim/2 elements"):
        _kernels.rope_tables(16, 0, 1, freq_base=100.0, freq_factors=f[:4])


# ---- Hadamard rotation of a quantized KV cache (csrc/hadamard.h) -----------------------------------

@pytest.mark.parametrize("n", [4, 8, 32, 64, 128, 256])
def test_hadamard_is_the_orthonormal_sylvester_matrix(n):
    """Rows of the identity give the matrix itself: Sylvester's (-1)^popcount(i & j) / sqrt(n),
    symmetric, its own inverse (H.H = I within float rounding), norms preserved."""
    h = _kernels.hadamard(np.eye(n, dtype=np.float32)).astype(np.float64)
    i, j = np.indices((n, n))
    sylvester = np.vectorize(lambda a: (-1) ** bin(a).count("1"))(i & j) / np.sqrt(n)
    np.testing.assert_allclose(h, sylvester, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(h, h.T)
    np.testing.assert_allclose(h @ h, np.eye(n), rtol=0, atol=1e-6)
    x = rng_for("hadamard", n).standard_normal((40, n)).astype(np.float32)
    y = _kernels.hadamard(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-6)
    np.testing.assert_allclose(_kernels.hadamard(y), x, rtol=0, atol=1e-5 * np.abs(x).max())
    np.testing.assert_allclose(y, x.astype(np.float64) @ sylvester, rtol=0, atol=1e-5 * np.abs(x).max())


def test_hadamard_rows_are_independent_of_threads_and_batching():
    x = rng_for("hadamard-pool").standard_normal((512, 14, 64)).astype(np.float32)  # a prefill step's queries
    one = _kernels.hadamard(x)
    np.testing.assert_array_equal(_kernels.hadamard(x, pool=_kernels.ThreadPool(3)), one)
    np.testing.assert_array_equal(_kernels.hadamard(x[7:8]), one[7:8])
    with pytest.raises(ValueError, match="power of two"):
        _kernels.hadamard(np.zeros((2, 96), np.float32))


def test_kv_rotation_widths_follow_llama_cpp():
    """Quantized caches only: K by the largest power of two dividing head_dim, V by at most 64
    (llama.cpp's attn_rot_k/v when head_dim % 64 == 0; it leaves the others plain, we rotate them
    by 32); float caches: none."""
    F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8
    for t in (F32, F16):
        assert [_kernels.kv_rotation(t, d, v) for d in (64, 128) for v in (False, True)] == [0, 0, 0, 0]
    for t in (Q4_0, Q8_0):
        got = {d: (_kernels.kv_rotation(t, d, False), _kernels.kv_rotation(t, d, True)) for d in (32, 64, 96, 128, 192, 256)}
        assert got == {32: (32, 32), 64: (64, 64), 96: (32, 32), 128: (128, 64), 192: (64, 64), 256: (256, 64)}


@pytest.mark.parametrize("qtype, gain", [(8, 2.0), (2, 1.5)], ids=["q8_0", "q4_0"])
def test_hadamard_rotation_shrinks_the_quantization_error_of_rows_with_outliers(qtype, gain):
    """Why the cache rotates: keys with a few large channels (as trained models' are) lose less to
    32-value blocks once rotated, the error measured back in the original basis."""
    rng = rng_for("outliers", qtype)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    x[:, [3, 40]] *= 20  # two outlier channels
    def error(rows):
        q = _kernels.quantize(qtype, rows)
        back = np.stack([_kernels.dequantize(qtype, r, 64) for r in q])
        return back - rows
    plain = np.linalg.norm(error(x))
    rotated = np.linalg.norm(_kernels.hadamard(error(_kernels.hadamard(x))))
    assert rotated * gain < plain  # (measured: 3.2x and 2.5x less)
