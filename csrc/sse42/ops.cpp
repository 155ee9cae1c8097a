// SSE4.2 versions of the non-matmul kernels (contracts in kernels.h), 4 floats per vector and
// no FMA (these CPUs have none). Row tails shorter than a vector go through a 4-float buffer, so
// every element takes the same vector arithmetic (the same exp) whatever its index.
//
// exp: the AVX2 table's method (csrc/avx2/ops.cpp) with separate multiplies and adds: Cody-Waite
// range reduction x = n ln2 + r with ln2 split in two (n * ln2_hi exact), Cephes' degree-7
// polynomial for e^r, 2^n built in the exponent bits. Inputs below -87.34 give 0, above 88
// saturate at e^88; NaN propagates. The kernel test holds it to the AVX2 bounds (relative 3.6e-7
// below x = -17, 4.8e-7 up to 0, through softmax).
//
// fp32_to_fp16_row stays the scalar one: without F16C an exact round-to-nearest-even conversion
// is a dozen vector operations per 4 values for a row written once per token (the KV cache).
#include <cmath>
#include <cstring>

#include "simd.h"

#include "../attn_groups.h"

#if defined(__clang__)
#define QC_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define QC_UNROLL _Pragma("GCC unroll 16")
#else
#define QC_UNROLL
#endif

namespace qc {
namespace sse42 {
namespace {

// e^x per lane (see the file comment).
static inline __m128 exp_ps(__m128 x) {
  const __m128 lo = _mm_set1_ps(-87.33654f);  // ln(2^-126): below it the result is not a normal float
  const __m128 hi = _mm_set1_ps(88.0f);       // keeps n <= 127 so 2^n stays a finite float
  const __m128 flush = _mm_cmplt_ps(x, lo);
  x = _mm_min_ps(hi, _mm_max_ps(lo, x));  // NaN in x is the second operand: it propagates
  const __m128 n = _mm_round_ps(_mm_mul_ps(x, _mm_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m128 r = _mm_sub_ps(x, _mm_mul_ps(n, _mm_set1_ps(0.693359375f)));
  r = _mm_sub_ps(r, _mm_mul_ps(n, _mm_set1_ps(-2.12194440e-4f)));
  __m128 p = _mm_set1_ps(1.9875691500e-4f);
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.3981999507e-3f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(8.3334519073e-3f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(4.1665795894e-2f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.6666665459e-1f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(5.0000001201e-1f));
  p = _mm_add_ps(_mm_mul_ps(p, _mm_mul_ps(r, r)), _mm_add_ps(r, _mm_set1_ps(1.0f)));
  const __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvtps_epi32(n), _mm_set1_epi32(127)), 23);
  return _mm_andnot_ps(flush, _mm_mul_ps(p, _mm_castsi128_ps(e)));
}

// The last r < 4 floats of a row, zero-padded to a vector, and back.
static inline __m128 load_tail(const float* p, int64_t r, float fill = 0.0f) {
  float b[4] = {fill, fill, fill, fill};
  std::memcpy(b, p, (size_t)r * sizeof(float));
  return _mm_loadu_ps(b);
}
static inline void store_tail(float* p, __m128 v, int64_t r) {
  float b[4];
  _mm_storeu_ps(b, v);
  std::memcpy(p, b, (size_t)r * sizeof(float));
}

// y (n) = x / sqrt(mean(x^2) + eps) * w. The sum of squares in double (2 lanes per vector):
// float accumulation in 4 or 8 lanes drifts past the 2e-6 bound on long rows.
void rmsnorm(float* y, const float* x, const float* w, int64_t n, float eps) {
  __m128d a0 = _mm_setzero_pd(), a1 = _mm_setzero_pd();
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps(x + i);
    const __m128d lo = _mm_cvtps_pd(v), hi = _mm_cvtps_pd(_mm_movehl_ps(v, v));
    a0 = _mm_add_pd(a0, _mm_mul_pd(lo, lo));
    a1 = _mm_add_pd(a1, _mm_mul_pd(hi, hi));
  }
  a0 = _mm_add_pd(a0, a1);
  double ss = _mm_cvtsd_f64(_mm_add_sd(a0, _mm_unpackhi_pd(a0, a0)));
  for (; i < n; ++i) ss += (double)x[i] * x[i];
  const __m128 r = _mm_set1_ps((float)(1.0 / std::sqrt(ss / (double)n + eps)));
  for (i = 0; i + 4 <= n; i += 4)
    _mm_storeu_ps(y + i, _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(x + i), r), _mm_loadu_ps(w + i)));
  if (i < n) store_tail(y + i, _mm_mul_ps(_mm_mul_ps(load_tail(x + i, n - i), r), load_tail(w + i, n - i)), n - i);
}

// x (n) = softmax(x)
void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  __m128 vmax = _mm_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vmax = _mm_max_ps(vmax, _mm_loadu_ps(x + i));
  float mx = hmax_ps(vmax);
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const __m128 vmx = _mm_set1_ps(mx);
  __m128 sum0 = _mm_setzero_ps(), sum1 = _mm_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m128 e0 = exp_ps(_mm_sub_ps(_mm_loadu_ps(x + i), vmx));
    const __m128 e1 = exp_ps(_mm_sub_ps(_mm_loadu_ps(x + i + 4), vmx));
    _mm_storeu_ps(x + i, e0);
    _mm_storeu_ps(x + i + 4, e1);
    sum0 = _mm_add_ps(sum0, e0);
    sum1 = _mm_add_ps(sum1, e1);
  }
  for (; i + 4 <= n; i += 4) {
    const __m128 e = exp_ps(_mm_sub_ps(_mm_loadu_ps(x + i), vmx));
    _mm_storeu_ps(x + i, e);
    sum0 = _mm_add_ps(sum0, e);
  }
  const int64_t rest = n - i;
  if (rest) {  // padding lanes hold -inf: e^-inf = 0 adds nothing to the sum
    const __m128 e = exp_ps(_mm_sub_ps(load_tail(x + i, rest, -INFINITY), vmx));
    store_tail(x + i, e, rest);
    sum0 = _mm_add_ps(sum0, e);
  }
  const __m128 inv = _mm_set1_ps(1.0f / hsum_ps(_mm_add_ps(sum0, sum1)));
  for (i = 0; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, _mm_mul_ps(_mm_loadu_ps(x + i), inv));
  if (rest) store_tail(x + i, _mm_mul_ps(load_tail(x + i, rest), inv), rest);
}

// gate * sigmoid(gate) * up for 4 lanes
static inline __m128 swiglu4(__m128 g, __m128 u) {
  const __m128 e = exp_ps(_mm_sub_ps(_mm_setzero_ps(), g));
  return _mm_mul_ps(_mm_div_ps(g, _mm_add_ps(_mm_set1_ps(1.0f), e)), u);
}

// y (n) = silu(gate) * up
void swiglu(float* y, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, swiglu4(_mm_loadu_ps(gate + i), _mm_loadu_ps(up + i)));
  if (i < n) store_tail(y + i, swiglu4(load_tail(gate + i, n - i), load_tail(up + i, n - i)), n - i);
}

// y (n) = a + b
void add(float* y, const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, _mm_add_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
  for (; i < n; ++i) y[i] = a[i] + b[i];
}

// x (n_head, head_dim) rotated in place; cos, sin (head_dim/2)
void rope(float* x, int n_head, int head_dim, const float* cos, const float* sin, bool neox) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_head; ++h) {
    float* xh = x + (int64_t)h * head_dim;
    int i = 0;
    if (neox) {
      // the two halves of the head are the two members of each pair: plain vertical arithmetic
      for (; i + 4 <= half; i += 4) {
        const __m128 a = _mm_loadu_ps(xh + i), b = _mm_loadu_ps(xh + i + half);
        const __m128 c = _mm_loadu_ps(cos + i), s = _mm_loadu_ps(sin + i);
        _mm_storeu_ps(xh + i, _mm_sub_ps(_mm_mul_ps(a, c), _mm_mul_ps(b, s)));
        _mm_storeu_ps(xh + i + half, _mm_add_ps(_mm_mul_ps(a, s), _mm_mul_ps(b, c)));
      }
    } else {
      // 2 interleaved pairs per vector: cos/sin duplicated into each pair's two lanes; addsub
      // gives x0 c - x1 s in even lanes and x1 c + x0 s in odd ones
      for (; i + 2 <= half; i += 2) {
        const __m128 v = _mm_loadu_ps(xh + 2 * i);
        const __m128 cs = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(cos + i)));
        const __m128 sn = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(sin + i)));
        const __m128 c = _mm_unpacklo_ps(cs, cs), s = _mm_unpacklo_ps(sn, sn);
        const __m128 swapped = _mm_shuffle_ps(v, v, 0xb1);  // (x1, x0) in each pair
        _mm_storeu_ps(xh + 2 * i, _mm_addsub_ps(_mm_mul_ps(v, c), _mm_mul_ps(swapped, s)));
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

// 4 elements of a cache row from element idx, as floats (f16: converted in software).
template <bool F16>
static inline __m128 load4(const void* base, int64_t idx) {
  if constexpr (F16) {
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const half_t*>(base) + idx));
    return h2f_4(_mm_unpacklo_epi16(h, _mm_setzero_si128()));
  } else {
    return _mm_loadu_ps(static_cast<const float*>(base) + idx);
  }
}

template <bool F16>
static inline float load1(const void* base, int64_t idx) {
  if constexpr (F16)
    return fp16_to_fp32(static_cast<const half_t*>(base)[idx]);
  else
    return static_cast<const float*>(base)[idx];
}

// Scores of NQ (<= 4) queries against every key: s[j * n_keys + i] = scale * q_j . k_i. Each
// 4-element chunk of a key (converted once) serves the NQ queries.
template <int NQ, bool F16>
void scores_group(float* s, int64_t n_keys, const float* q, const void* k, int64_t kv_stride, int head_dim,
                  float scale) {
  const int d4 = head_dim & ~3;
  for (int64_t i = 0; i < n_keys; ++i) {
    const int64_t row = i * kv_stride;
    __m128 acc[NQ];
    QC_UNROLL for (int j = 0; j < NQ; ++j) acc[j] = _mm_setzero_ps();
    for (int d = 0; d < d4; d += 4) {
      const __m128 kv = load4<F16>(k, row + d);
      QC_UNROLL for (int j = 0; j < NQ; ++j) acc[j] = _mm_add_ps(acc[j], _mm_mul_ps(_mm_loadu_ps(q + j * head_dim + d), kv));
    }
    for (int j = 0; j < NQ; ++j) {
      float dot = hsum_ps(acc[j]);
      for (int d = d4; d < head_dim; ++d) dot += q[j * head_dim + d] * load1<F16>(k, row + d);
      s[j * n_keys + i] = dot * scale;
    }
  }
}

// out (NQ, head_dim) = sum over the keys of p[j][i] * v_i, p row j at p + j * n_keys. Each
// 4-element chunk of a value row (converted once) serves the NQ queries; the output rows stay in L1.
template <int NQ, bool F16>
void values_group(float* out, const float* p, int64_t n_keys, const void* v, int64_t kv_stride, int head_dim) {
  const int d4 = head_dim & ~3;
  for (int64_t i = 0; i < n_keys; ++i) {
    const int64_t row = i * kv_stride;
    __m128 pj[NQ];
    QC_UNROLL for (int j = 0; j < NQ; ++j) pj[j] = _mm_set1_ps(p[j * n_keys + i]);
    for (int d = 0; d < d4; d += 4) {
      const __m128 vv = load4<F16>(v, row + d);
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        float* o = out + j * head_dim + d;
        _mm_storeu_ps(o, _mm_add_ps(_mm_loadu_ps(o), _mm_mul_ps(pj[j], vv)));
      }
    }
    for (int d = d4; d < head_dim; ++d) {
      const float vd = load1<F16>(v, row + d);
      for (int j = 0; j < NQ; ++j) out[j * head_dim + d] += p[j * n_keys + i] * vd;
    }
  }
}

typedef void (*scores_fn)(float*, int64_t, const float*, const void*, int64_t, int, float);
typedef void (*values_fn)(float*, const float*, int64_t, const void*, int64_t, int);

template <bool F16>
struct GroupFns {
  static constexpr scores_fn scores[5] = {nullptr, scores_group<1, F16>, scores_group<2, F16>, scores_group<3, F16>,
                                          scores_group<4, F16>};
  static constexpr values_fn values[5] = {nullptr, values_group<1, F16>, values_group<2, F16>, values_group<3, F16>,
                                          values_group<4, F16>};
};

// x (n) = exp(x - mx); returns the sum (the online softmax's block step)
float exp_sum(float* x, int n, float mx) {
  const __m128 vmx = _mm_set1_ps(mx);
  __m128 sum = _mm_setzero_ps();
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 e = exp_ps(_mm_sub_ps(_mm_loadu_ps(x + i), vmx));
    _mm_storeu_ps(x + i, e);
    sum = _mm_add_ps(sum, e);
  }
  float total = hsum_ps(sum);
  if (i < n) {
    const __m128 e = exp_ps(_mm_sub_ps(load_tail(x + i, n - i), vmx));
    store_tail(x + i, e, n - i);
    alignas(16) float t[4];
    _mm_store_ps(t, e);
    for (int r = 0; r < n - i; ++r) total += t[r];
  }
  return total;
}

// attn_fn (kernels.h): the tiled loop of attn_groups.h over this file's score and value kernels,
// queries in groups of up to 4 (the accumulators of scores_group fit the 16 xmm registers).
template <int32_t KT, int32_t VT>
void attn(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v, size_t v_row_bytes,
          int64_t n_keys, int head_dim, float scale, float* m, float* l, float* acc, float* scratch) {
  attn_online<4, KT, VT>(
      q, n_q, k, k_row_bytes, v, v_row_bytes, n_keys, head_dim, m, l, acc, scratch,
      [&](int nq, float* s, const float* qg, const void* rows, int n) {
        GroupFns<kv_rows_f16<KT>>::scores[nq](s, n, qg, rows, head_dim, head_dim, scale);
      },
      exp_sum,
      [&](int nq, float* out, const float* p, const void* rows, int n) {
        for (int64_t e = 0; e < (int64_t)nq * head_dim; ++e) out[e] = 0.0f;
        GroupFns<kv_rows_f16<VT>>::values[nq](out, p, n, rows, head_dim, head_dim);
      });
}

}  // namespace
}  // namespace sse42

#define QC_KERNEL_PREFIX "sse42::"

void register_op_kernels_sse42(Kernels& k) {
  k.rmsnorm = sse42::rmsnorm;
  k.softmax = sse42::softmax;
  k.swiglu = sse42::swiglu;
  k.add = sse42::add;
  k.rope = sse42::rope;
  using namespace sse42;
  QC_SET_ATTN_ALL(k);
  // fp32_to_fp16_row: the inherited scalar one (see the file comment)
}

}  // namespace qc
