// NEON versions of the non-matmul kernels (contracts in kernels.h). Four floats per vector; the
// n % 4 leftover elements of a row go through the same arithmetic one lane at a time (lane
// loads into a zero vector), so every element sees the same exp whatever its index.
//
// exp: x = n ln2 + r with n = round(x / ln2) and r reduced in two steps (ln2 split into a part
// exact in float and a correction), |r| <= ln2 / 2; e^r by its Taylor polynomial of degree 7
// (truncation error below 1e-8 relative there), Horner with FMA; 2^n built in the exponent bits.
// About 1-2 ulp for results in the normal range; inputs below ln(2^-126) = -87.34 give 0 (no
// subnormal results), inputs above 88 saturate at e^88 = 1.65e38 (swiglu only needs 1 + e^x to
// dwarf any gate), NaN propagates. tests/test_ops.py and csrc/tests/kernel_test.cpp check it.
//
// The sums that the scalar reference keeps in double (sum of squares, softmax denominator,
// attention scores) are accumulated here in float64 lanes too where the length is unbounded
// (rmsnorm, softmax), and in float32 lanes for the head_dim-long attention dot products.
#include <cmath>

#include "neon.h"

#include "../attn_groups.h"

namespace qc {
namespace neon {
namespace {

// Elements [i, i + r) of p (r < 4) in lanes 0 .. r-1 of a zero vector.
static inline float32x4_t load_tail(const float* p, int64_t r) {
  float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t j = 0; j < r; ++j) buf[j] = p[j];
  return vld1q_f32(buf);
}

// Lanes 0 .. r-1 of v stored at p (r < 4).
static inline void store_tail(float* p, float32x4_t v, int64_t r) {
  float buf[4];
  vst1q_f32(buf, v);
  for (int64_t j = 0; j < r; ++j) p[j] = buf[j];
}

// e^x per lane (see the file comment for the error bounds).
static inline float32x4_t exp_f32(float32x4_t x) {
  const float32x4_t lo = vdupq_n_f32(-87.33654f);  // ln(2^-126): below it the result is not a normal float
  const uint32x4_t flush = vcltq_f32(x, lo);
  x = vminq_f32(vmaxq_f32(x, lo), vdupq_n_f32(88.0f));  // vmax/vmin propagate NaN
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  // ln2 = 0.693145751953125 (exact in 16 bits, so n * it is exact for |n| <= 128) + 1.42860682e-6
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693145751953125f));
  r = vfmsq_f32(r, n, vdupq_n_f32(1.42860682e-6f));
  float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  const float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
  return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), flush));
}

// y (n) = x / sqrt(mean(x^2) + eps) * w; the sum of squares in float64 lanes.
void rmsnorm(float* y, const float* x, const float* w, int64_t n, float eps) {
  float64x2_t s0 = vdupq_n_f64(0.0), s1 = s0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    s0 = vfmaq_f64(s0, vcvt_f64_f32(vget_low_f32(v)), vcvt_f64_f32(vget_low_f32(v)));
    s1 = vfmaq_f64(s1, vcvt_high_f64_f32(v), vcvt_high_f64_f32(v));
  }
  double ss = vaddvq_f64(vaddq_f64(s0, s1));
  for (; i < n; ++i) ss += (double)x[i] * x[i];
  const float r = (float)(1.0 / std::sqrt(ss / (double)n + eps));
  const float32x4_t rv = vdupq_n_f32(r);
  for (i = 0; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_f32(vmulq_f32(vld1q_f32(x + i), rv), vld1q_f32(w + i)));
  for (; i < n; ++i) y[i] = x[i] * r * w[i];
}

// x (n) = softmax(x), max-subtracted; the denominator in float64 lanes.
void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const int64_t n4 = n & ~(int64_t)3, r = n - n4;
  float32x4_t m = vdupq_n_f32(-INFINITY);
  for (int64_t i = 0; i < n4; i += 4) m = vmaxq_f32(m, vld1q_f32(x + i));
  float mx = vmaxvq_f32(m);
  for (int64_t i = n4; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const float32x4_t mv = vdupq_n_f32(mx);
  float64x2_t s0 = vdupq_n_f64(0.0), s1 = s0;
  for (int64_t i = 0; i < n4; i += 4) {
    const float32x4_t e = exp_f32(vsubq_f32(vld1q_f32(x + i), mv));
    vst1q_f32(x + i, e);
    s0 = vaddq_f64(s0, vcvt_f64_f32(vget_low_f32(e)));
    s1 = vaddq_f64(s1, vcvt_high_f64_f32(e));
  }
  double sum = vaddvq_f64(vaddq_f64(s0, s1));
  if (r) {
    const float32x4_t e = exp_f32(vsubq_f32(load_tail(x + n4, r), mv));
    store_tail(x + n4, e, r);
    for (int64_t i = n4; i < n; ++i) sum += x[i];
  }
  const float32x4_t inv = vdupq_n_f32((float)(1.0 / sum));
  for (int64_t i = 0; i < n4; i += 4) vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), inv));
  if (r) store_tail(x + n4, vmulq_f32(load_tail(x + n4, r), inv), r);
}

// gate * sigmoid(gate) * up for 4 lanes
static inline float32x4_t swiglu4(float32x4_t g, float32x4_t u) {
  const float32x4_t den = vaddq_f32(vdupq_n_f32(1.0f), exp_f32(vnegq_f32(g)));
  return vmulq_f32(vdivq_f32(g, den), u);
}

// y (n) = silu(gate) * up
void swiglu(float* y, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, swiglu4(vld1q_f32(gate + i), vld1q_f32(up + i)));
  if (i < n) store_tail(y + i, swiglu4(load_tail(gate + i, n - i), load_tail(up + i, n - i)), n - i);
}

// y (n) = a + b (y may alias a or b)
void add(float* y, const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
  for (; i < n; ++i) y[i] = a[i] + b[i];
}

// x (n_head, head_dim) rotated in place; cos, sin (head_dim / 2). The rotation of a pair
// (x0, x1) is (x0 c - x1 s, x0 s + x1 c), each product rounded before the sum as in the scalar one.
void rope(float* x, int n_head, int head_dim, const float* cos, const float* sin, bool neox) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_head; ++h) {
    float* xh = x + (int64_t)h * head_dim;
    int i = 0;
    if (neox) {  // pairs (i, i + half)
      for (; i + 4 <= half; i += 4) {
        const float32x4_t a = vld1q_f32(xh + i), b = vld1q_f32(xh + half + i);
        const float32x4_t c = vld1q_f32(cos + i), s = vld1q_f32(sin + i);
        vst1q_f32(xh + i, vsubq_f32(vmulq_f32(a, c), vmulq_f32(b, s)));
        vst1q_f32(xh + half + i, vaddq_f32(vmulq_f32(a, s), vmulq_f32(b, c)));
      }
    } else {  // pairs (2i, 2i + 1): de-interleaving loads
      for (; i + 4 <= half; i += 4) {
        float32x4x2_t v = vld2q_f32(xh + 2 * i);
        const float32x4_t c = vld1q_f32(cos + i), s = vld1q_f32(sin + i);
        const float32x4_t a = v.val[0], b = v.val[1];
        v.val[0] = vsubq_f32(vmulq_f32(a, c), vmulq_f32(b, s));
        v.val[1] = vaddq_f32(vmulq_f32(a, s), vmulq_f32(b, c));
        vst2q_f32(xh + 2 * i, v);
      }
    }
    for (; i < half; ++i) {
      float* a = neox ? xh + i : xh + 2 * i;
      float* b = neox ? xh + i + half : xh + 2 * i + 1;
      const float x0 = *a, x1 = *b;
      *a = x0 * cos[i] - x1 * sin[i];
      *b = x0 * sin[i] + x1 * cos[i];
    }
  }
}

// ---- attention ---------------------------------------------------------------------------
// Scores: up to 4 queries per pass over the keys, so each key chunk is loaded (and converted from
// f16) once per 4 queries. Values: 8 output columns x up to 4 queries of accumulators per pass
// over the keys. head_dim % 4 leftover columns are handled one at a time.

static inline float32x4_t load4_kv(const void* p, int64_t idx, bool f16) {
  return f16 ? load4_f16(static_cast<const half_t*>(p) + idx) : vld1q_f32(static_cast<const float*>(p) + idx);
}

static inline float kv_at(const void* p, int64_t idx, bool f16) {
  return f16 ? h2f(static_cast<const half_t*>(p)[idx]) : static_cast<const float*>(p)[idx];
}

// s + j * n_keys (n_keys) = scale * q_j . k_i for the nq <= 4 queries q + j * head_dim
static inline void scores(float* s, const float* q, int nq, const void* k, int64_t n_keys, int64_t kv_stride,
                          int head_dim, float scale, bool f16) {
  const int d4 = head_dim & ~3;
  for (int64_t i = 0; i < n_keys; ++i) {
    const int64_t row = i * kv_stride;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (int d = 0; d < d4; d += 4) {
      const float32x4_t kv = load4_kv(k, row + d, f16);
      for (int j = 0; j < nq; ++j) acc[j] = vfmaq_f32(acc[j], vld1q_f32(q + (int64_t)j * head_dim + d), kv);
    }
    for (int j = 0; j < nq; ++j) {
      float dot = vaddvq_f32(acc[j]);
      for (int d = d4; d < head_dim; ++d) dot += q[(int64_t)j * head_dim + d] * kv_at(k, row + d, f16);
      s[(int64_t)j * n_keys + i] = dot * scale;
    }
  }
}

// out + j * head_dim (head_dim) = sum_i p[j * n_keys + i] * v_i for the nq <= 4 queries
static inline void values(float* out, const float* p, int nq, const void* v, int64_t n_keys, int64_t kv_stride,
                          int head_dim, bool f16) {
  int d = 0;
  for (; d + 8 <= head_dim; d += 8) {
    float32x4_t acc[4][2];
    for (int j = 0; j < 4; ++j) acc[j][0] = acc[j][1] = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n_keys; ++i) {
      const float32x4_t v0 = load4_kv(v, i * kv_stride + d, f16), v1 = load4_kv(v, i * kv_stride + d + 4, f16);
      for (int j = 0; j < nq; ++j) {
        const float pj = p[(int64_t)j * n_keys + i];
        acc[j][0] = vfmaq_n_f32(acc[j][0], v0, pj);
        acc[j][1] = vfmaq_n_f32(acc[j][1], v1, pj);
      }
    }
    for (int j = 0; j < nq; ++j) {
      vst1q_f32(out + (int64_t)j * head_dim + d, acc[j][0]);
      vst1q_f32(out + (int64_t)j * head_dim + d + 4, acc[j][1]);
    }
  }
  for (; d + 4 <= head_dim; d += 4) {
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (int64_t i = 0; i < n_keys; ++i) {
      const float32x4_t v0 = load4_kv(v, i * kv_stride + d, f16);
      for (int j = 0; j < nq; ++j) acc[j] = vfmaq_n_f32(acc[j], v0, p[(int64_t)j * n_keys + i]);
    }
    for (int j = 0; j < nq; ++j) vst1q_f32(out + (int64_t)j * head_dim + d, acc[j]);
  }
  for (; d < head_dim; ++d) {
    for (int j = 0; j < nq; ++j) {
      float acc = 0.0f;
      for (int64_t i = 0; i < n_keys; ++i) acc += p[(int64_t)j * n_keys + i] * kv_at(v, i * kv_stride + d, f16);
      out[(int64_t)j * head_dim + d] = acc;
    }
  }
}

// x (n) = exp(x - mx); returns the sum (the online softmax's block step)
float exp_sum(float* x, int n, float mx) {
  const float32x4_t vmx = vdupq_n_f32(mx);
  float32x4_t sum = vdupq_n_f32(0.0f);
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t e = exp_f32(vsubq_f32(vld1q_f32(x + i), vmx));
    vst1q_f32(x + i, e);
    sum = vaddq_f32(sum, e);
  }
  float total = vaddvq_f32(sum);
  if (i < n) {
    const float32x4_t e = exp_f32(vsubq_f32(load_tail(x + i, n - i), vmx));
    store_tail(x + i, e, n - i);
    float t[4];
    vst1q_f32(t, e);
    for (int r = 0; r < n - i; ++r) total += t[r];
  }
  return total;
}

// attn_fn (kernels.h): the tiled loop of attn_groups.h over this file's score and value kernels,
// queries in groups of up to 4.
template <int32_t KT, int32_t VT>
void attn(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v, size_t v_row_bytes,
          int64_t n_keys, int head_dim, float scale, float* m, float* l, float* acc, float* scratch) {
  attn_online<4, KT, VT>(
      q, n_q, k, k_row_bytes, v, v_row_bytes, n_keys, head_dim, m, l, acc, scratch,
      [&](int nq, float* s, const float* qg, const void* rows, int n) {
        scores(s, qg, nq, rows, n, head_dim, head_dim, scale, kv_rows_f16<KT>);
      },
      exp_sum,
      [&](int nq, float* out, const float* p, const void* rows, int n) {
        values(out, p, nq, rows, n, head_dim, head_dim, kv_rows_f16<VT>);
      });
}

// y (n) = x rounded to binary16 (FCVTN: round to nearest even, subnormal halves and overflow to
// infinity as IEEE says). NaN inputs give the scalar path's quiet NaN of the same sign (0x7e00 |
// sign) rather than the hardware's payload-preserving one, so the two paths agree bit for bit.
void fp32_to_fp16_row(const float* x, half_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    const uint16x4_t h = vreinterpret_u16_f16(vcvt_f16_f32(v));
    const uint16x4_t nan = vmovn_u32(vmvnq_u32(vceqq_f32(v, v)));
    const uint16x4_t sign = vshrn_n_u32(vandq_u32(vreinterpretq_u32_f32(v), vdupq_n_u32(0x80000000u)), 16);
    vst1_u16(y + i, vbsl_u16(nan, vorr_u16(sign, vdup_n_u16(0x7e00)), h));
  }
  for (; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

}  // namespace
}  // namespace neon

#define QC_KERNEL_PREFIX "neon::"

void register_op_kernels_neon(Kernels& k) {
  k.rmsnorm = neon::rmsnorm;
  k.softmax = neon::softmax;
  k.swiglu = neon::swiglu;
  k.add = neon::add;
  k.rope = neon::rope;
  using namespace neon;
  QC_SET_ATTN_ALL(k);
  k.fp32_to_fp16_row = neon::fp32_to_fp16_row;
}

}  // namespace qc
