// AVX-512 attention kernels (attn_fn in kernels.h): the tiled loop of attn_groups.h over 16-lane
// score and value kernels. Every other op kernel (RMSNorm, softmax, RoPE, ...) is the AVX2 one the
// table inherits (dispatch.cpp starts it as a copy of the AVX2 table): they take a small share of
// a step. Attention at long contexts does not: per key and query head it is head_dim FMAs for the
// score and head_dim for the value, so the lanes count. Rows whose length is not a multiple of 16
// are finished with masked loads (zeros), so every element takes the same arithmetic.
#include "simd512.h"

#include <cmath>

#include "../attn_groups.h"

#if defined(__clang__)
#define QC_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define QC_UNROLL _Pragma("GCC unroll 16")
#else
#define QC_UNROLL
#endif

namespace qc {
namespace avx512 {
namespace {

// e^x per lane: the AVX2 table's exp (csrc/avx2/ops.cpp: Cody-Waite reduction, Cephes' degree-7
// polynomial, 2^n in the exponent bits; below -87.34 gives 0, above 88 saturates) in 16 lanes.
static inline __m512 exp_ps(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f), hi = _mm512_set1_ps(88.0f);
  const __mmask16 flush = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps(~flush, p, _mm512_castsi512_ps(e));
}

// x (n) = exp(x - mx); returns the sum (the online softmax's block step)
float exp_sum(float* x, int n, float mx) {
  const __m512 vmx = _mm512_set1_ps(mx);
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmx)));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// Lanes of the 16-element chunk of a row at column d (all 16 but in a row's last, partial chunk).
static inline __mmask16 chunk_mask(int head_dim, int d) {
  const int r = head_dim - d;
  return r >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << r) - 1);
}

// 16 elements of a row (f16 or f32) from element idx as floats, lanes outside m zero.
template <bool F16>
static inline __m512 load16(const void* base, int64_t idx, __mmask16 m) {
  if constexpr (F16)
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const half_t*>(base) + idx));
  else
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + idx);
}

// dot[a] = the sum of the lanes of acc[a], a < A (<= 16): halves added, then 8 at a time by hadd.
template <int A>
static inline void hsum_many(const __m512* acc, float* dot) {
  __m256 h[16];
  QC_UNROLL for (int a = 0; a < 16; ++a)
    h[a] = a < A ? _mm256_add_ps(_mm512_castps512_ps256(acc[a]), _mm512_extractf32x8_ps(acc[a], 1)) : _mm256_setzero_ps();
  QC_UNROLL for (int g = 0; g < (A + 7) / 8; ++g) {
    const __m256* x = h + 8 * g;
    const __m256 t0 = _mm256_hadd_ps(x[0], x[1]), t1 = _mm256_hadd_ps(x[2], x[3]);
    const __m256 t2 = _mm256_hadd_ps(x[4], x[5]), t3 = _mm256_hadd_ps(x[6], x[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    _mm256_storeu_ps(dot + 8 * g,
                     _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)));
  }
}

// s[j * n + i] = scale * q_j . k_i for NQ (<= 4) queries and keys 0 .. n-1 (rows head_dim
// elements apart), KB keys per step: NQ * KB accumulators, reduced together.
template <int NQ, bool F16>
void scores(float* s, int n, const float* q, const void* k, int head_dim, float scale) {
  constexpr int KB = NQ == 1 ? 8 : 4;
  for (int i = 0; i < n; i += KB) {
    const int nk = n - i < KB ? n - i : KB;
    int64_t row[KB];
    QC_UNROLL for (int b = 0; b < KB; ++b) row[b] = (int64_t)(i + (b < nk ? b : 0)) * head_dim;  // past the end: key i again
    __m512 acc[NQ * KB];
    QC_UNROLL for (int a = 0; a < NQ * KB; ++a) acc[a] = _mm512_setzero_ps();
    for (int d = 0; d < head_dim; d += 16) {
      const __mmask16 m = chunk_mask(head_dim, d);
      __m512 kv[KB];
      QC_UNROLL for (int b = 0; b < KB; ++b) kv[b] = load16<F16>(k, row[b] + d, m);
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        const __m512 qv = _mm512_maskz_loadu_ps(m, q + j * head_dim + d);
        QC_UNROLL for (int b = 0; b < KB; ++b) acc[b * NQ + j] = _mm512_fmadd_ps(qv, kv[b], acc[b * NQ + j]);
      }
    }
    alignas(32) float dot[16];
    hsum_many<NQ * KB>(acc, dot);  // dot[b * NQ + j]: query j, key i + b
    for (int b = 0; b < nk; ++b)
      for (int j = 0; j < NQ; ++j) s[j * n + i + b] = dot[b * NQ + j] * scale;
  }
}

// out (NQ, head_dim) columns [d, d + 16 CW) = sum_i p[j * n + i] * v_i there: NQ * CW accumulators.
template <int NQ, int CW, bool F16>
static inline void values_cols(float* out, const float* p, int n, const void* v, int head_dim, int d) {
  __mmask16 m[CW];
  QC_UNROLL for (int c = 0; c < CW; ++c) m[c] = chunk_mask(head_dim, d + 16 * c);
  __m512 acc[NQ * CW];
  QC_UNROLL for (int a = 0; a < NQ * CW; ++a) acc[a] = _mm512_setzero_ps();
  for (int i = 0; i < n; ++i) {
    __m512 vv[CW];
    QC_UNROLL for (int c = 0; c < CW; ++c) vv[c] = load16<F16>(v, (int64_t)i * head_dim + d + 16 * c, m[c]);
    QC_UNROLL for (int j = 0; j < NQ; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j * n + i]);
      QC_UNROLL for (int c = 0; c < CW; ++c) acc[j * CW + c] = _mm512_fmadd_ps(pj, vv[c], acc[j * CW + c]);
    }
  }
  QC_UNROLL for (int j = 0; j < NQ; ++j)
    QC_UNROLL for (int c = 0; c < CW; ++c) _mm512_mask_storeu_ps(out + j * head_dim + d + 16 * c, m[c], acc[j * CW + c]);
}

// out (NQ, head_dim) = sum_i p[j * n + i] * v_i for NQ (<= 4) queries: 64 columns per pass over
// the rows while they last, then 16 (the last one masked).
template <int NQ, bool F16>
void values(float* out, const float* p, int n, const void* v, int head_dim) {
  int d = 0;
  for (; d + 64 <= head_dim; d += 64) values_cols<NQ, 4, F16>(out, p, n, v, head_dim, d);
  for (; d < head_dim; d += 16) values_cols<NQ, 1, F16>(out, p, n, v, head_dim, d);
}

typedef void (*scores_fn)(float*, int, const float*, const void*, int, float);
typedef void (*values_fn)(float*, const float*, int, const void*, int);
template <bool F16>
struct Fns {
  static constexpr scores_fn scores[5] = {nullptr, avx512::scores<1, F16>, avx512::scores<2, F16>,
                                          avx512::scores<3, F16>, avx512::scores<4, F16>};
  static constexpr values_fn values[5] = {nullptr, avx512::values<1, F16>, avx512::values<2, F16>,
                                          avx512::values<3, F16>, avx512::values<4, F16>};
};

// attn_fn (kernels.h): the tiled loop of attn_groups.h, queries in groups of up to 8 taken as two
// groups of 4 over the same block of rows (in L1 by then).
template <int32_t KT, int32_t VT>
void attn(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v, size_t v_row_bytes,
          int64_t n_keys, int head_dim, float scale, float* m, float* l, float* acc, float* scratch) {
  attn_online<8, KT, VT>(
      q, n_q, k, k_row_bytes, v, v_row_bytes, n_keys, head_dim, m, l, acc, scratch,
      [&](int nq, float* s, const float* qg, const void* rows, int n) {
        for (int j0 = 0; j0 < nq; j0 += 4) {
          const int g = nq - j0 < 4 ? nq - j0 : 4;
          Fns<kv_rows_f16<KT>>::scores[g](s + j0 * n, n, qg + j0 * head_dim, rows, head_dim, scale);
        }
      },
      exp_sum,
      [&](int nq, float* out, const float* p, const void* rows, int n) {
        for (int j0 = 0; j0 < nq; j0 += 4) {
          const int g = nq - j0 < 4 ? nq - j0 : 4;
          Fns<kv_rows_f16<VT>>::values[g](out + j0 * head_dim, p + j0 * n, n, rows, head_dim);
        }
      });
}

}  // namespace
}  // namespace avx512

void register_op_kernels_avx512(Kernels& k) {
  using namespace avx512;
  QC_SET_ATTN_ALL(k);
}

}  // namespace qc
