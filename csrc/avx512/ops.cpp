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

// 64 elements (blocks b, b + 1 of a q8_0/q4_0 row; with one = true only block b, the rest zero)
// of a K row as bytes for the integer dot products: q8_0 as |k| (unsigned) with the mask of its
// negative elements, q4_0 as the nibbles 0..15 in element order (mask unused); *dk the lanes'
// block scales (8 lanes of 4 elements per block).
template <int32_t KT>
static inline __m512i k_bytes(const uint8_t* row, int b, bool one, __mmask64* neg, __m512* dk) {
  constexpr int bs = KT == GGML_Q8_0 ? (int)sizeof(block_q8_0) : (int)sizeof(block_q4_0);
  const uint8_t* x0 = row + b * bs;
  const uint8_t* x1 = one ? x0 : x0 + bs;
  const float d0 = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(x0));
  const float d1 = one ? 0.0f : _cvtsh_ss(*reinterpret_cast<const uint16_t*>(x1));
  *dk = _mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1);
  if constexpr (KT == GGML_Q8_0) {
    const __m256i hi = one ? _mm256_setzero_si256() : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x1 + 2));
    const __m512i k = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x0 + 2))), hi, 1);
    *neg = _mm512_movepi8_mask(k);
    return _mm512_abs_epi8(k);
  } else {
    const __m128i hi = one ? _mm_setzero_si128() : _mm_loadu_si128(reinterpret_cast<const __m128i*>(x1 + 2));
    const __m256i x = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x0 + 2))), hi, 1);
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(x), _mm256_srli_epi16(x, 4), 1);
    // 128-bit lanes [b qs, b+1 qs, b qs >> 4, b+1 qs >> 4] -> [b lo, b hi, b+1 lo, b+1 hi]
    *neg = 0;
    return _mm512_and_si512(_mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(15));
  }
}

// s[j * n + i] = scale * q_j . k_i for NQ (<= 8) queries, Q's queries j0 .. (QueryQ8), against
// the q8_0/q4_0 K rows 0 .. n-1 (row_bytes apart): per 4 elements the exact integer dot product
// (avx512bw: vpmaddubsw of |k| with q signed as k, vpmaddwd), times K's block scale and the lane's query scale, summed
// in floats. Each (query, key) takes the same instructions in every group: decode and batched
// or verifying passes give the same scores. KB keys per step: NQ * KB <= 16 accumulators.
template <int NQ, int32_t KT>
void scores_q8(float* s, int n, const QueryQ8& Q, int j0, const uint8_t* k, size_t row_bytes, int head_dim, float scale) {
  constexpr int KB = NQ > 8 ? 1 : 16 / NQ > 8 ? 8 : 16 / NQ;
  const int nb = head_dim / 32, lanes = head_dim / 4;
  const __m512i ones = _mm512_set1_epi16(1);
  for (int i = 0; i < n; i += KB) {
    const int nk = n - i < KB ? n - i : KB;
    __m512 acc[NQ * KB];
    QC_UNROLL for (int a = 0; a < NQ * KB; ++a) acc[a] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 2) {
      const bool one = b + 1 == nb;
      const __mmask64 mq = one ? (__mmask64)0xffffffffu : ~(__mmask64)0;
      const __mmask16 ml = one ? (__mmask16)0xff : (__mmask16)0xffff;
      __m512i kv[KB];
      __mmask64 neg[KB];
      __m512 dk[KB];
      QC_UNROLL for (int c = 0; c < KB; ++c)
        kv[c] = k_bytes<KT>(k + (size_t)(i + (c < nk ? c : 0)) * row_bytes, b, one, &neg[c], &dk[c]);  // past the end: key i again
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        const __m512i qv = _mm512_maskz_loadu_epi8(mq, Q.qs + (int64_t)(j0 + j) * head_dim + b * 32);
        const __m512 dq = _mm512_maskz_loadu_ps(ml, Q.dq + (int64_t)(j0 + j) * lanes + b * 8);
        __m512i corr = _mm512_setzero_si512();
        if constexpr (KT == GGML_Q4_0) corr = _mm512_maskz_loadu_epi32(ml, Q.corr + (int64_t)(j0 + j) * lanes + b * 8);
        QC_UNROLL for (int c = 0; c < KB; ++c) {
          const __m512i sq = KT == GGML_Q8_0 ? _mm512_mask_sub_epi8(qv, neg[c], _mm512_setzero_si512(), qv) : qv;
          __m512i dot = _mm512_madd_epi16(_mm512_maddubs_epi16(kv[c], sq), ones);
          if constexpr (KT == GGML_Q4_0) dot = _mm512_add_epi32(dot, corr);
          acc[c * NQ + j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dk[c], dq), acc[c * NQ + j]);
        }
      }
    }
    alignas(64) float dot[16];
    hsum_many<NQ * KB>(acc, dot);  // dot[c * NQ + j]: query j, key i + c
    for (int c = 0; c < nk; ++c)
      for (int j = 0; j < NQ; ++j) s[j * n + i + c] = dot[c * NQ + j] * scale;
  }
}

// scores_q8 with AVX512-VNNI: vpdpbusd of K's bytes as unsigned (q8_0: k + 128, by a flip of the
// sign bit; q4_0: the nibbles) with q, from the offset's correction (-128 or -8 times the lane's
// q sum) as the starting value: one instruction per 64 elements for the integer dot product.
// The same sums as scores_q8's (exact integers), so the same scores.
template <int NQ, int32_t KT>
QC_VNNI void scores_q8_vnni(float* s, int n, const QueryQ8& Q, int j0, const uint8_t* k, size_t row_bytes, int head_dim,
                            float scale) {
  constexpr int KB = NQ > 8 ? 1 : 16 / NQ > 8 ? 8 : 16 / NQ;
  const int nb = head_dim / 32, lanes = head_dim / 4;
  for (int i = 0; i < n; i += KB) {
    const int nk = n - i < KB ? n - i : KB;
    __m512 acc[NQ * KB];
    QC_UNROLL for (int a = 0; a < NQ * KB; ++a) acc[a] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 2) {
      const bool one = b + 1 == nb;
      const __mmask64 mq = one ? (__mmask64)0xffffffffu : ~(__mmask64)0;
      const __mmask16 ml = one ? (__mmask16)0xff : (__mmask16)0xffff;
      __m512i kv[KB];
      __mmask64 neg;
      __m512 dk[KB];
      QC_UNROLL for (int c = 0; c < KB; ++c) {
        kv[c] = k_bytes<KT>(k + (size_t)(i + (c < nk ? c : 0)) * row_bytes, b, one, &neg, &dk[c]);  // past the end: key i again
        // q8_0: k + 128 from |k| and its signs (-k where negative: 128 - |k|; else |k| + 128)
        if constexpr (KT == GGML_Q8_0)
          kv[c] = _mm512_mask_sub_epi8(_mm512_add_epi8(kv[c], _mm512_set1_epi8((char)0x80)), neg, _mm512_set1_epi8((char)0x80), kv[c]);
      }
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        const __m512i qv = _mm512_maskz_loadu_epi8(mq, Q.qs + (int64_t)(j0 + j) * head_dim + b * 32);
        const __m512 dq = _mm512_maskz_loadu_ps(ml, Q.dq + (int64_t)(j0 + j) * lanes + b * 8);
        __m512i corr = _mm512_maskz_loadu_epi32(ml, Q.corr + (int64_t)(j0 + j) * lanes + b * 8);
        if constexpr (KT == GGML_Q8_0) corr = _mm512_slli_epi32(corr, 4);  // -8 * 16 = -128 times the q sum
        QC_UNROLL for (int c = 0; c < KB; ++c) {
          const __m512i dot = _mm512_dpbusd_epi32(corr, kv[c], qv);
          acc[c * NQ + j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dk[c], dq), acc[c * NQ + j]);
        }
      }
    }
    alignas(64) float dot[16];
    hsum_many<NQ * KB>(acc, dot);  // dot[c * NQ + j]: query j, key i + c
    for (int c = 0; c < nk; ++c)
      for (int j = 0; j < NQ; ++j) s[j * n + i + c] = dot[c * NQ + j] * scale;
  }
}

// 16 elements of a q8_0/q4_0 V row from element d (a multiple of 16) as floats, dequantized.
template <int32_t VT>
static inline __m512 load16_q(const uint8_t* row, int d) {
  if constexpr (VT == GGML_Q8_0) {
    const block_q8_0* x = reinterpret_cast<const block_q8_0*>(row) + d / 32;
    const __m512i e = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x->qs + d % 32)));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(e), _mm512_set1_ps(_cvtsh_ss(x->d)));
  } else {
    const block_q4_0* x = reinterpret_cast<const block_q4_0*>(row) + d / 32;
    __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x->qs)));
    if (d % 32) e = _mm512_srli_epi32(e, 4);
    e = _mm512_sub_epi32(_mm512_and_si512(e, _mm512_set1_epi32(15)), _mm512_set1_epi32(8));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(e), _mm512_set1_ps(_cvtsh_ss(x->d)));
  }
}

// values() for a q8_0/q4_0 V cache read as stored (rows row_bytes apart, head_dim a multiple of
// 32), each row dequantized in registers once for the NQ (<= 4) queries: 64 columns per pass,
// then 32.
template <int NQ, int32_t VT>
void values_q(float* out, const float* p, int n, const uint8_t* v, size_t row_bytes, int head_dim) {
  for (int d = 0; d < head_dim; d += 64) {
    const int CW = head_dim - d >= 64 ? 4 : 2;
    __m512 acc[NQ * 4];
    QC_UNROLL for (int a = 0; a < NQ * 4; ++a) acc[a] = _mm512_setzero_ps();
    if (CW == 4) {
      for (int i = 0; i < n; ++i) {
        const uint8_t* row = v + (size_t)i * row_bytes;
        __m512 vv[4];
        QC_UNROLL for (int c = 0; c < 4; ++c) vv[c] = load16_q<VT>(row, d + 16 * c);
        QC_UNROLL for (int j = 0; j < NQ; ++j) {
          const __m512 pj = _mm512_set1_ps(p[j * n + i]);
          QC_UNROLL for (int c = 0; c < 4; ++c) acc[j * 4 + c] = _mm512_fmadd_ps(pj, vv[c], acc[j * 4 + c]);
        }
      }
    } else {
      for (int i = 0; i < n; ++i) {
        const uint8_t* row = v + (size_t)i * row_bytes;
        __m512 vv[2];
        QC_UNROLL for (int c = 0; c < 2; ++c) vv[c] = load16_q<VT>(row, d + 16 * c);
        QC_UNROLL for (int j = 0; j < NQ; ++j) {
          const __m512 pj = _mm512_set1_ps(p[j * n + i]);
          QC_UNROLL for (int c = 0; c < 2; ++c) acc[j * 4 + c] = _mm512_fmadd_ps(pj, vv[c], acc[j * 4 + c]);
        }
      }
    }
    QC_UNROLL for (int j = 0; j < NQ; ++j)
      for (int c = 0; c < CW; ++c) _mm512_storeu_ps(out + j * head_dim + d + 16 * c, acc[j * 4 + c]);
  }
}

template <int32_t T>
constexpr bool kv_quantized = T == GGML_Q8_0 || T == GGML_Q4_0;

typedef void (*scores_fn)(float*, int, const float*, const void*, int, float);
typedef void (*values_fn)(float*, const float*, int, const void*, int);
template <bool F16>
struct Fns {
  static constexpr scores_fn scores[5] = {nullptr, avx512::scores<1, F16>, avx512::scores<2, F16>,
                                          avx512::scores<3, F16>, avx512::scores<4, F16>};
  static constexpr values_fn values[5] = {nullptr, avx512::values<1, F16>, avx512::values<2, F16>,
                                          avx512::values<3, F16>, avx512::values<4, F16>};
};

typedef void (*scores_q8_fn)(float*, int, const QueryQ8&, int, const uint8_t*, size_t, int, float);
typedef void (*values_q_fn)(float*, const float*, int, const uint8_t*, size_t, int);
template <int32_t T, bool VNNI>
struct QFns {
  static constexpr scores_q8_fn scores[9] = {nullptr, scores_q8<1, T>, scores_q8<2, T>, scores_q8<3, T>, scores_q8<4, T>,
                                             scores_q8<5, T>, scores_q8<6, T>, scores_q8<7, T>, scores_q8<8, T>};
  static constexpr scores_q8_fn scores_vnni[9] = {
      nullptr, scores_q8_vnni<1, T>, scores_q8_vnni<2, T>, scores_q8_vnni<3, T>, scores_q8_vnni<4, T>,
      scores_q8_vnni<5, T>, scores_q8_vnni<6, T>, scores_q8_vnni<7, T>, scores_q8_vnni<8, T>};
  static constexpr values_q_fn values[5] = {nullptr, values_q<1, T>, values_q<2, T>, values_q<3, T>, values_q<4, T>};
};

// attn_fn (kernels.h): the tiled loop of attn_groups.h, queries in groups of up to 8: float K
// rows' scores as two groups of 4 over the same block of rows (in L1 by then), q8_0/q4_0 K rows'
// with the queries quantized once per call and all 8 per row; values in groups of 4.
template <int32_t KT, int32_t VT, bool VNNI = false>
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
        if constexpr (kv_quantized<KT>) {
          (VNNI ? QFns<KT, VNNI>::scores_vnni : QFns<KT, VNNI>::scores)[nq](s, n, Q, (int)((qg - q) / head_dim), static_cast<const uint8_t*>(rows), k_row_bytes,
                               head_dim, scale);
        } else {
          for (int j0 = 0; j0 < nq; j0 += 4) {
            const int g = nq - j0 < 4 ? nq - j0 : 4;
            Fns<kv_rows_f16<KT>>::scores[g](s + j0 * n, n, qg + j0 * head_dim, rows, head_dim, scale);
          }
        }
      },
      exp_sum,
      [&](int nq, float* out, const float* p, const void* rows, int n) {
        for (int j0 = 0; j0 < nq; j0 += 4) {
          const int g = nq - j0 < 4 ? nq - j0 : 4;
          if constexpr (kv_quantized<VT>)
            QFns<VT, VNNI>::values[g](out + j0 * head_dim, p + j0 * n, n, static_cast<const uint8_t*>(rows), v_row_bytes, head_dim);
          else
            Fns<kv_rows_f16<VT>>::values[g](out + j0 * head_dim, p + j0 * n, n, rows, head_dim);
        }
      });
}

#include "attn_tiles.h"

}  // namespace
}  // namespace avx512

void register_op_kernels_avx512(Kernels& k, const CpuFeatures& cpu) {
  using namespace avx512;
  QC_SET_ATTN_ALL(k);
  QC_SET_ATTN_FLOAT(k, FusedTiles)  // float caches: the fused tiles
  if (cpu.avx512vnni) {  // the q8_0/q4_0 K kernels' vpdpbusd form
#define QC_SET_ATTN_VNNI(KT)                                              \
  set_attn(k, KT, GGML_F32, QC_FN(attn<KT, GGML_F32, true>));            \
  set_attn(k, KT, GGML_F16, QC_FN(attn<KT, GGML_F16, true>));            \
  set_attn(k, KT, GGML_Q8_0, QC_FN(attn<KT, GGML_Q8_0, true>));          \
  set_attn(k, KT, GGML_Q4_0, QC_FN(attn<KT, GGML_Q4_0, true>));
    QC_SET_ATTN_VNNI(GGML_Q8_0)
    QC_SET_ATTN_VNNI(GGML_Q4_0)
#undef QC_SET_ATTN_VNNI
  }
  QC_SET_ATTN_Q8_QUERY(k);
}

}  // namespace qc
