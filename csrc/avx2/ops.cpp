// AVX2 + FMA + F16C versions of the non-matmul kernels (contracts in kernels.h). Lengths that are
// not a multiple of 8 are finished with masked loads/stores, so every element goes through the
// same vector arithmetic (the same exp) whatever its index.
//
// exp is a vector approximation: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, and a
// degree-7 polynomial for e^r (Cephes' expf coefficients), scaled by 2^n built in the exponent
// bits. Relative error below 3 ulp for results in the normal range (measured: 1.25 ulp, 1.2e-7,
// over 2M points of [-87.3, -17]); inputs
// below -87.34 (results below the smallest normal float, i.e. < 1.2e-38) give 0; inputs above
// 88 saturate at e^88 (1.65e38). NaN propagates. tests/test_ops.py checks these bounds.
#include <immintrin.h>

#include <cmath>

#include "../attn_groups.h"
#include "../kernels.h"

// Fully unrolls a loop over a compile-time count, so that arrays of accumulators indexed by it
// become registers (without it GCC keeps some such arrays on the stack).
#if defined(__clang__)
#define QC_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define QC_UNROLL _Pragma("GCC unroll 16")
#else
#define QC_UNROLL
#endif

namespace qc {
namespace avx2 {
namespace {

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lanes 0 .. r-1 set (0 <= r <= 8): the mask for the last, partial vector of a row.
static inline __m256i tail_mask(int64_t r) {
  static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + 8 - r));
}

// e^x per lane (see the file comment for the error bounds).
static inline __m256 exp_ps(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);  // ln(2^-126): below it the result is not a normal float
  const __m256 hi = _mm256_set1_ps(88.0f);       // keeps n <= 127 so 2^n stays a finite float
  const __m256 flush = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));  // NaN in x is the second operand: it propagates
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n ln2 with ln2 split in two so that n * ln2_hi is exact
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(flush, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// y (n) = x / sqrt(mean(x^2) + eps) * w
void rmsnorm(float* y, const float* x, const float* w, int64_t n, float eps) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
    acc1 = _mm256_fmadd_ps(b, b, acc1);
  }
  for (; i < n; i += 8) {
    const __m256 a = _mm256_maskload_ps(x + i, tail_mask(n - i < 8 ? n - i : 8));
    acc0 = _mm256_fmadd_ps(a, a, acc0);
  }
  const float ss = hsum(_mm256_add_ps(acc0, acc1));
  const __m256 r = _mm256_set1_ps(1.0f / std::sqrt(ss / (float)n + eps));
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), r), _mm256_loadu_ps(w + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(x + i, m), r), _mm256_maskload_ps(w + i, m)));
  }
}

// x (n) = softmax(x)
void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  float mx = hmax(vmax);
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  const int64_t rest = n - i;
  const __m256i m = tail_mask(rest);
  if (rest) {
    const __m256 e = _mm256_and_ps(exp_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vmx)), _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + i, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  if (rest) _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
}

// gate * sigmoid(gate) * up for 8 lanes
static inline __m256 swiglu8(__m256 g, __m256 u) {
  const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

// y (n) = silu(gate) * up
void swiglu(float* y, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, swiglu8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m, swiglu8(_mm256_maskload_ps(gate + i, m), _mm256_maskload_ps(up + i, m)));
  }
}

// y (n) = a + b
void add(float* y, const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m, _mm256_add_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m)));
  }
}

// x (n_head, head_dim) rotated in place; cos, sin (head_dim/2)
void rope(float* x, int n_head, int head_dim, const float* cos, const float* sin, bool neox) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_head; ++h) {
    float* xh = x + (int64_t)h * head_dim;
    int i = 0;
    if (neox) {
      // the two halves of the head are the two members of each pair: plain vertical arithmetic
      for (; i + 8 <= half; i += 8) {
        const __m256 a = _mm256_loadu_ps(xh + i), b = _mm256_loadu_ps(xh + i + half);
        const __m256 c = _mm256_loadu_ps(cos + i), s = _mm256_loadu_ps(sin + i);
        _mm256_storeu_ps(xh + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
        _mm256_storeu_ps(xh + i + half, _mm256_fmadd_ps(a, s, _mm256_mul_ps(b, c)));
      }
      for (; i < half; ++i) {
        const float x0 = xh[i], x1 = xh[i + half];
        xh[i] = x0 * cos[i] - x1 * sin[i];
        xh[i + half] = x0 * sin[i] + x1 * cos[i];
      }
    } else {
      // 4 interleaved pairs per vector: each cos/sin duplicated into its pair's two lanes;
      // fmaddsub gives x0 c - x1 s in even lanes and x1 c + x0 s in odd ones.
      const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
      for (; i + 4 <= half; i += 4) {
        const __m256 v = _mm256_loadu_ps(xh + 2 * i);
        const __m256 c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cos + i)), dup);
        const __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sin + i)), dup);
        const __m256 swapped = _mm256_permute_ps(v, 0xb1);  // (x1, x0) in each pair
        _mm256_storeu_ps(xh + 2 * i, _mm256_fmaddsub_ps(v, c, _mm256_mul_ps(swapped, s)));
      }
      for (; i < half; ++i) {
        const float x0 = xh[2 * i], x1 = xh[2 * i + 1];
        xh[2 * i] = x0 * cos[i] - x1 * sin[i];
        xh[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
      }
    }
  }
}

// 8 elements of a cache row from element idx, as floats.
template <bool F16>
static inline __m256 load8(const void* base, int64_t idx) {
  if constexpr (F16)
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const half_t*>(base) + idx)));
  else
    return _mm256_loadu_ps(static_cast<const float*>(base) + idx);
}

template <bool F16>
static inline float load1(const void* base, int64_t idx) {
  if constexpr (F16)
    return _cvtsh_ss(static_cast<const half_t*>(base)[idx]);
  else
    return static_cast<const float*>(base)[idx];
}

// The 8 horizontal sums of a[0..7] as one vector (lane j = sum of a[j]).
static inline __m256 hsum8(const __m256 a[8]) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);  // per 128-bit half
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Scores of NQ (<= 4) queries against keys i0 .. i1-1, KB keys per step so that each query
// chunk loaded serves KB keys: NQ * KB <= 8 accumulators, reduced together by one hsum8.
//   q (NQ, head_dim); s row j at s + j * n_keys; s[j][i] = scale * q_j . k_i.
template <int NQ, bool F16>
static inline void scores_tile(float* s, int64_t n_keys, const float* q, const void* k, int64_t kv_stride,
                               int head_dim, float scale, int64_t i0, int64_t i1) {
  constexpr int KB = NQ <= 2 ? 4 : 2;
  const int d8 = head_dim & ~7;
  for (int64_t i = i0; i < i1; i += KB) {
    const int nk = i1 - i < KB ? (int)(i1 - i) : KB;
    int64_t row[KB];
    QC_UNROLL for (int b = 0; b < KB; ++b) row[b] = (i + (b < nk ? b : 0)) * kv_stride;  // past the end: repeat key i
    __m256 acc[8];
    QC_UNROLL for (int a = 0; a < 8; ++a) acc[a] = _mm256_setzero_ps();
    for (int d = 0; d < d8; d += 8) {
      __m256 kv[KB];
      QC_UNROLL for (int b = 0; b < KB; ++b) kv[b] = load8<F16>(k, row[b] + d);
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        __m256 qv = _mm256_loadu_ps(q + j * head_dim + d);
        __asm__("" : "+x"(qv));  // one load for KB FMAs: keeps GCC from folding it into each of them
        QC_UNROLL for (int b = 0; b < KB; ++b) acc[b * NQ + j] = _mm256_fmadd_ps(qv, kv[b], acc[b * NQ + j]);
      }
    }
    alignas(32) float dot[8];
    _mm256_store_ps(dot, hsum8(acc));  // lane b * NQ + j: query j, key i + b
    for (int d = d8; d < head_dim; ++d)  // head_dim not a multiple of 8
      for (int b = 0; b < KB; ++b) {
        const float kd = load1<F16>(k, row[b] + d);
        for (int j = 0; j < NQ; ++j) dot[b * NQ + j] += q[j * head_dim + d] * kd;
      }
    for (int b = 0; b < nk; ++b)
      for (int j = 0; j < NQ; ++j) s[j * n_keys + i + b] = dot[b * NQ + j] * scale;
  }
}

// Scores of NQ (<= 8) queries against all n_keys keys. More than 4 queries go in two groups
// over each 64-key tile, so a tile read from memory once serves both from L1.
template <int NQ, bool F16>
void scores_block(float* s, int64_t n_keys, const float* q, const void* k, int64_t kv_stride, int head_dim, float scale) {
  if constexpr (NQ <= 4) {
    scores_tile<NQ, F16>(s, n_keys, q, k, kv_stride, head_dim, scale, 0, n_keys);
  } else {
    constexpr int64_t kTile = 64;
    for (int64_t i0 = 0; i0 < n_keys; i0 += kTile) {
      const int64_t i1 = i0 + kTile < n_keys ? i0 + kTile : n_keys;
      scores_tile<4, F16>(s, n_keys, q, k, kv_stride, head_dim, scale, i0, i1);
      scores_tile<NQ - 4, F16>(s + 4 * n_keys, n_keys, q + 4 * head_dim, k, kv_stride, head_dim, scale, i0, i1);
    }
  }
}

// out[j][d .. d + 8*CW) += sum over keys i0 .. i1-1 of p[j][i] * v_i[d .. d + 8*CW), p row j at
// p + j * n_keys: NQ * CW accumulators in registers, one chain per (query, 8 columns).
template <int NQ, int CW, bool F16>
static inline void values_cols(float* out, const float* p, int64_t n_keys, const void* v, int64_t kv_stride,
                               int head_dim, int64_t i0, int64_t i1, int d) {
  __m256 acc[NQ * CW];
  QC_UNROLL for (int j = 0; j < NQ; ++j)
    QC_UNROLL for (int c = 0; c < CW; ++c) acc[j * CW + c] = _mm256_loadu_ps(out + j * head_dim + d + 8 * c);
  for (int64_t i = i0; i < i1; ++i) {
    __m256 vv[CW];
    QC_UNROLL for (int c = 0; c < CW; ++c) vv[c] = load8<F16>(v, i * kv_stride + d + 8 * c);
    QC_UNROLL for (int j = 0; j < NQ; ++j) {
      const __m256 pj = _mm256_broadcast_ss(p + j * n_keys + i);
      QC_UNROLL for (int c = 0; c < CW; ++c) acc[j * CW + c] = _mm256_fmadd_ps(pj, vv[c], acc[j * CW + c]);
    }
  }
  QC_UNROLL for (int j = 0; j < NQ; ++j)
    QC_UNROLL for (int c = 0; c < CW; ++c) _mm256_storeu_ps(out + j * head_dim + d + 8 * c, acc[j * CW + c]);
}

// out (NQ, head_dim) += sum over keys i0 .. i1-1 of p[j][i] * v_i, p row j at p + j * n_keys.
// Few queries take several 8-column chunks at once so that enough independent FMA chains are
// in flight (at most 12 accumulators: with the value and broadcast registers, 16 in all).
template <int NQ, bool F16>
static inline void values_tile(float* out, const float* p, int64_t n_keys, const void* v, int64_t kv_stride,
                               int head_dim, int64_t i0, int64_t i1) {
  constexpr int CW = NQ >= 5 ? 2 : NQ >= 3 ? 3 : NQ == 2 ? 4 : 8;
  const int d8 = head_dim & ~7;
  int d = 0;
  for (; d + 8 * CW <= d8; d += 8 * CW) values_cols<NQ, CW, F16>(out, p, n_keys, v, kv_stride, head_dim, i0, i1, d);
  for (; d < d8; d += 8) values_cols<NQ, 1, F16>(out, p, n_keys, v, kv_stride, head_dim, i0, i1, d);
  for (; d < head_dim; ++d)  // head_dim not a multiple of 8
    for (int64_t i = i0; i < i1; ++i) {
      const float vd = load1<F16>(v, i * kv_stride + d);
      for (int j = 0; j < NQ; ++j) out[j * head_dim + d] += p[j * n_keys + i] * vd;
    }
}

// out (NQ, head_dim) += sum over all n_keys keys of p[j][i] * v_i. Keys are taken in tiles so
// that a tile of value rows, read from memory once, stays in L1 while it is applied to every
// query; 7 or 8 queries go in two passes over the tile (more accumulators than registers).
template <int NQ, bool F16>
void values_block(float* out, const float* p, int64_t n_keys, const void* v, int64_t kv_stride, int head_dim) {
  constexpr int64_t kTile = 64;
  for (int64_t i0 = 0; i0 < n_keys; i0 += kTile) {
    const int64_t i1 = i0 + kTile < n_keys ? i0 + kTile : n_keys;
    if constexpr (NQ >= 7) {
      values_tile<4, F16>(out, p, n_keys, v, kv_stride, head_dim, i0, i1);
      values_tile<NQ - 4, F16>(out + 4 * head_dim, p + 4 * n_keys, n_keys, v, kv_stride, head_dim, i0, i1);
    } else {
      values_tile<NQ, F16>(out, p, n_keys, v, kv_stride, head_dim, i0, i1);
    }
  }
}

// Block b of a q8_0/q4_0 K row as bytes for the integer dot products: q8_0 as |k| (unsigned;
// *sgn = k, whose signs the query takes), q4_0 as its nibbles 0..15 in element order; *dk its scale.
template <int32_t KT>
static inline __m256i k_bytes(const uint8_t* row, int b, __m256i* sgn, __m256* dk) {
  if constexpr (KT == GGML_Q8_0) {
    const block_q8_0* x = reinterpret_cast<const block_q8_0*>(row) + b;
    *dk = _mm256_set1_ps(_cvtsh_ss(x->d));
    *sgn = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qs));
    return _mm256_abs_epi8(*sgn);
  } else {
    const block_q4_0* x = reinterpret_cast<const block_q4_0*>(row) + b;
    *dk = _mm256_set1_ps(_cvtsh_ss(x->d));
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x->qs));
    const __m256i z = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(z, _mm256_set1_epi8(15));
  }
}

// s[j * n + i] = scale * q_j . k_i for NQ (<= 8) queries, Q's queries j0 .. (QueryQ8 in
// attn_groups.h), against the q8_0/q4_0 K rows 0 .. n-1 (row_bytes apart): per 4 elements the
// exact integer dot product (vpmaddubsw of |k| with q signed as k, or of the q4_0 nibbles with q
// plus the offset's correction; vpmaddwd), times K's block scale and the lane's query scale, summed in floats. Each
// (query, key) takes the same instructions in every group (decode and batched or verifying
// passes give the same scores). KB keys per step: NQ * KB <= 8 accumulators, one hsum8.
template <int NQ, int32_t KT>
void scores_q8(float* s, int n, const QueryQ8& Q, int j0, const uint8_t* k, size_t row_bytes, int head_dim, float scale) {
  constexpr int KB = NQ <= 2 ? 4 : NQ <= 4 ? 2 : 1;
  const int nb = head_dim / 32, lanes = head_dim / 4;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int i = 0; i < n; i += KB) {
    const int nk = n - i < KB ? n - i : KB;
    __m256 acc[8];
    QC_UNROLL for (int a = 0; a < 8; ++a) acc[a] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      __m256i kv[KB], sgn[KB];
      __m256 dk[KB];
      QC_UNROLL for (int c = 0; c < KB; ++c)
        kv[c] = k_bytes<KT>(k + (size_t)(i + (c < nk ? c : 0)) * row_bytes, b, &sgn[c], &dk[c]);  // past the end: key i again
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Q.qs + (int64_t)(j0 + j) * head_dim + b * 32));
        const __m256 dq = _mm256_loadu_ps(Q.dq + (int64_t)(j0 + j) * lanes + b * 8);
        QC_UNROLL for (int c = 0; c < KB; ++c) {
          __m256i dot;
          if constexpr (KT == GGML_Q8_0) {
            dot = _mm256_madd_epi16(_mm256_maddubs_epi16(kv[c], _mm256_sign_epi8(qv, sgn[c])), ones);
          } else {
            const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Q.corr + (int64_t)(j0 + j) * lanes + b * 8));
            dot = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(kv[c], qv), ones), corr);
          }
          acc[c * NQ + j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dk[c], dq), acc[c * NQ + j]);
        }
      }
    }
    alignas(32) float dot[8];
    _mm256_store_ps(dot, hsum8(acc));  // lane c * NQ + j: query j, key i + c
    for (int c = 0; c < nk; ++c)
      for (int j = 0; j < NQ; ++j) s[j * n + i + c] = dot[c * NQ + j] * scale;
  }
}

typedef void (*scores_q8_fn)(float*, int, const QueryQ8&, int, const uint8_t*, size_t, int, float);
template <int32_t T>
struct QFns {
  static constexpr scores_q8_fn scores[9] = {nullptr, scores_q8<1, T>, scores_q8<2, T>, scores_q8<3, T>, scores_q8<4, T>,
                                             scores_q8<5, T>, scores_q8<6, T>, scores_q8<7, T>, scores_q8<8, T>};
};
template <int32_t T>
constexpr bool kv_quantized = T == GGML_Q8_0 || T == GGML_Q4_0;

// 8 elements of a q8_0/q4_0 V row from element d (a multiple of 8) as floats, dequantized.
template <int32_t VT>
static inline __m256 load8_q(const uint8_t* row, int d) {
  if constexpr (VT == GGML_Q8_0) {
    const block_q8_0* x = reinterpret_cast<const block_q8_0*>(row) + d / 32;
    const __m256i e = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x->qs + d % 32)));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(e), _mm256_set1_ps(_cvtsh_ss(x->d)));
  } else {
    const block_q4_0* x = reinterpret_cast<const block_q4_0*>(row) + d / 32;
    __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x->qs + d % 16)));
    if (d % 32 >= 16) e = _mm256_srli_epi32(e, 4);
    e = _mm256_sub_epi32(_mm256_and_si256(e, _mm256_set1_epi32(15)), _mm256_set1_epi32(8));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(e), _mm256_set1_ps(_cvtsh_ss(x->d)));
  }
}

// values() for a q8_0/q4_0 V cache read as stored (rows row_bytes apart, head_dim a multiple of
// 32), each row's 8 CW columns dequantized in registers once for the NQ (<= 4) queries.
template <int NQ, int32_t VT>
void values_q(float* out, const float* p, int n, const uint8_t* v, size_t row_bytes, int head_dim) {
  constexpr int CW = NQ >= 3 ? 2 : 4;
  for (int d = 0; d < head_dim; d += 8 * CW) {
    __m256 acc[NQ * CW];
    QC_UNROLL for (int a = 0; a < NQ * CW; ++a) acc[a] = _mm256_setzero_ps();
    for (int i = 0; i < n; ++i) {
      const uint8_t* row = v + (size_t)i * row_bytes;
      __m256 vv[CW];
      QC_UNROLL for (int c = 0; c < CW; ++c) vv[c] = load8_q<VT>(row, d + 8 * c);
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        const __m256 pj = _mm256_broadcast_ss(p + j * n + i);
        QC_UNROLL for (int c = 0; c < CW; ++c) acc[j * CW + c] = _mm256_fmadd_ps(pj, vv[c], acc[j * CW + c]);
      }
    }
    QC_UNROLL for (int j = 0; j < NQ; ++j)
      QC_UNROLL for (int c = 0; c < CW; ++c) _mm256_storeu_ps(out + j * head_dim + d + 8 * c, acc[j * CW + c]);
  }
}
typedef void (*values_q_fn)(float*, const float*, int, const uint8_t*, size_t, int);
template <int32_t T>
struct QValueFns {
  static constexpr values_q_fn values[5] = {nullptr, values_q<1, T>, values_q<2, T>, values_q<3, T>, values_q<4, T>};
};

typedef void (*scores_fn)(float*, int64_t, const float*, const void*, int64_t, int, float);
typedef void (*values_fn)(float*, const float*, int64_t, const void*, int64_t, int);

template <bool F16>
struct GroupFns {
  static constexpr scores_fn scores[9] = {nullptr, scores_block<1, F16>, scores_block<2, F16>, scores_block<3, F16>,
                                          scores_block<4, F16>, scores_block<5, F16>, scores_block<6, F16>,
                                          scores_block<7, F16>, scores_block<8, F16>};
  static constexpr values_fn values[9] = {nullptr, values_block<1, F16>, values_block<2, F16>, values_block<3, F16>,
                                          values_block<4, F16>, values_block<5, F16>, values_block<6, F16>,
                                          values_block<7, F16>, values_block<8, F16>};
};

// x (n) = exp(x - mx); returns the sum (the online softmax's block step)
float exp_sum(float* x, int n, float mx) {
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    const __m256 e = _mm256_and_ps(exp_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vmx)), _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + i, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum(sum);
}

// attn_fn (kernels.h): the tiled loop of attn_groups.h over this file's score and value kernels,
// queries in groups of up to 8 (q8_0/q4_0 K: quantized once per call, QueryQ8; q8_0/q4_0 V rows
// dequantized in registers, queries in groups of 4).
template <int32_t KT, int32_t VT>
void attn(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v, size_t v_row_bytes,
          int64_t n_keys, int head_dim, float scale, float* m, float* l, float* acc, float* scratch) {
  QueryQ8 Q{};
  if constexpr (kv_quantized<KT>) {
    Q = query_q8_in(scratch, n_q, head_dim);
    quantize_queries_q8(q, n_q, head_dim, Q);
  }
  attn_online<8, KT, VT, kv_quantized<KT>, kv_quantized<VT>>(
      q, n_q, k, k_row_bytes, v, v_row_bytes, n_keys, head_dim, m, l, acc, scratch,
      [&](int nq, float* s, const float* qg, const void* rows, int n) {
        if constexpr (kv_quantized<KT>)
          QFns<KT>::scores[nq](s, n, Q, (int)((qg - q) / head_dim), static_cast<const uint8_t*>(rows), k_row_bytes,
                               head_dim, scale);
        else
          GroupFns<kv_rows_f16<KT>>::scores[nq](s, n, qg, rows, head_dim, head_dim, scale);
      },
      exp_sum,
      [&](int nq, float* out, const float* p, const void* rows, int n) {
        if constexpr (kv_quantized<VT>) {
          for (int j0 = 0; j0 < nq; j0 += 4) {
            const int g = nq - j0 < 4 ? nq - j0 : 4;
            QValueFns<VT>::values[g](out + j0 * head_dim, p + j0 * n, n, static_cast<const uint8_t*>(rows), v_row_bytes,
                                     head_dim);
          }
        } else {
          for (int64_t e = 0; e < (int64_t)nq * head_dim; ++e) out[e] = 0.0f;
          GroupFns<kv_rows_f16<VT>>::values[nq](out, p, n, rows, head_dim, head_dim);
        }
      });
}

#include "attn_tiles.h"

// y (n) = x rounded to binary16 by F16C (round to nearest even; NaN quieted, payload truncated)
void fp32_to_fp16_row(const float* x, half_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

}  // namespace
}  // namespace avx2

#define QC_KERNEL_PREFIX "avx2::"

void register_op_kernels_avx2(Kernels& k) {
  k.rmsnorm = avx2::rmsnorm;
  k.softmax = avx2::softmax;
  k.swiglu = avx2::swiglu;
  k.add = avx2::add;
  k.rope = avx2::rope;
  using namespace avx2;
  QC_SET_ATTN_ALL(k);
  QC_SET_ATTN_FLOAT(k, FusedTiles)  // float caches: the fused tiles
  QC_SET_ATTN_Q8_QUERY(k);
  k.fp32_to_fp16_row = avx2::fp32_to_fp16_row;
}

}  // namespace qc
