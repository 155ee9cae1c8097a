// AVX2 dot products of the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against their
// 8-bit activation formats, the float weight types (F32, F16, BF16) against float activations,
// and the Q8_0 / Q8_1 activation quantizers (bytes identical to the scalar ones: same float
// operations, round to nearest even by _mm256_cvtps_epi32 under the default rounding mode).
//
// Each block's integer dot product is exact (AVX2: maddubs/madd; VNNI: vpdpbusd, see block_u8i8);
// the per-block scale products are accumulated as floats with FMA in two independent accumulators
// (two blocks per iteration), with one horizontal sum at the end.
#include <algorithm>

#include "simd.h"
#include "../x86/min_dot.h"

#include <cmath>

namespace qc {
namespace QC_AVX2_NS {

// ---- activation quantizers ---------------------------------------------------------------

// One block of 32 floats x -> 32 int8 at qs, rounded to nearest even; returns the scale d
// (before rounding to f16) and, through sum, the sum of the 32 quantized values.
static inline float quantize_block_32(const float* x, int8_t* qs, int32_t* sum) {
  const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
  const __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
  const __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(v0), abs_ps(v1)), _mm256_max_ps(abs_ps(v2), abs_ps(v3)));
  const float amax = hmax_ps(m);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m256 s = _mm256_set1_ps(id);
  const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, s)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, s));
  const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, s)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, s));
  if (sum) *sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
  // packs works per 128-bit lane: the dwords come out as (0,4,1,5,2,6,3,7) groups of 4 values
  const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  const __m256i ordered = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), ordered);
  return d;
}

static inline half_t f2h(float f) {
  return (half_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
}

// y (n / 32 blocks of block_q8_0) = Q8_0(x (n))
void quantize_row_q8_0(const float* x, void* vy, int64_t n) {
  block_q8_0* y = static_cast<block_q8_0*>(vy);
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const float d = quantize_block_32(x + i * QK8_0, y[i].qs, nullptr);
    y[i].d = f2h(d);
  }
}

// y (n / 32 blocks of block_q8_1) = Q8_1(x (n)): Q8_0 plus s = d * sum(q) for the weight min terms
void quantize_row_q8_1(const float* x, void* vy, int64_t n) {
  block_q8_1* y = static_cast<block_q8_1*>(vy);
  for (int64_t i = 0; i < n / QK8_1; ++i) {
    int32_t sum = 0;
    const float d = quantize_block_32(x + i * QK8_1, y[i].qs, &sum);
    y[i].d = f2h(d);
    y[i].s = f2h(d * (float)sum);
  }
}

// ---- float weights -----------------------------------------------------------------------

// out[t] = sum over i < n of w[i] * a[t][i] for R activation rows at once (R <= 3: 4R accumulators
// and the weight vector in the 16 registers), load(i) the weights i..i+7 as floats, elem(i) the
// weight i as a float. Each weight vector is converted once for all R rows, and each row gets the
// arithmetic of the one-row form: 4 accumulators (32 elements per step, then steps of 8 into the
// first), one horizontal sum, the last n % 8 elements by fused multiply-adds in order. So row t's
// value is bit for bit the R = 1 value of a[t] alone, which vec_dot and the gemv return.
template <int R, class Load, class Elem>
static inline void dot_float_rows(int64_t n, const float* const* a, Load load, Elem elem, float* out) {
  static_assert(R >= 1 && R <= 3, "dot_float_rows: 1 to 3 rows");
  // Named accumulators (row t, accumulator j: s<t><j>) rather than an array, which the compiler
  // kept in memory around the loops: a row of SmolLM2 is only 18 steps of 32.
  const float* a0 = a[0];
  const float* a1 = R > 1 ? a[1] : a[0];
  const float* a2 = R > 2 ? a[2] : a[0];
  __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00, s13 = s00,
         s20 = s00, s21 = s00, s22 = s00, s23 = s00;
#define QC_FMA_ROWS(j, i)                                                                  \
  s0##j = _mm256_fmadd_ps(w, _mm256_loadu_ps(a0 + (i)), s0##j);                            \
  if constexpr (R > 1) s1##j = _mm256_fmadd_ps(w, _mm256_loadu_ps(a1 + (i)), s1##j);       \
  if constexpr (R > 2) s2##j = _mm256_fmadd_ps(w, _mm256_loadu_ps(a2 + (i)), s2##j);
  const int64_t n8 = n & ~int64_t(7);
  int64_t i = 0;
  for (; i + 32 <= n8; i += 32) {
    __m256 w = load(i);
    QC_FMA_ROWS(0, i)
    w = load(i + 8);
    QC_FMA_ROWS(1, i + 8)
    w = load(i + 16);
    QC_FMA_ROWS(2, i + 16)
    w = load(i + 24);
    QC_FMA_ROWS(3, i + 24)
  }
  for (; i < n8; i += 8) {
    const __m256 w = load(i);
    QC_FMA_ROWS(0, i)
  }
#undef QC_FMA_ROWS
  auto sum4 = [](__m256 x0, __m256 x1, __m256 x2, __m256 x3) {
    return hsum_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)));
  };
  out[0] = sum4(s00, s01, s02, s03);
  if constexpr (R > 1) out[1] = sum4(s10, s11, s12, s13);
  if constexpr (R > 2) out[2] = sum4(s20, s21, s22, s23);
  for (; i < n; ++i) {
    const float w = elem(i);
    out[0] = std::fma(w, a0[i], out[0]);
    if constexpr (R > 1) out[1] = std::fma(w, a1[i], out[1]);
    if constexpr (R > 2) out[2] = std::fma(w, a2[i], out[2]);
  }
}

// The element access of each float weight type: load(w, i) 8 weights from i as floats, elem(w, i) one.
struct F32W {
  typedef float T;
  static __m256 load(const float* w, int64_t i) { return _mm256_loadu_ps(w + i); }
  static float elem(const float* w, int64_t i) { return w[i]; }
};
struct F16W {
  typedef half_t T;
  static __m256 load(const half_t* w, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
  }
  static float elem(const half_t* w, int64_t i) { return h2f(w[i]); }
};
struct BF16W {
  typedef bf16_t T;
  static __m256 load(const bf16_t* w, int64_t i) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  static float elem(const bf16_t* w, int64_t i) { return bf16_to_fp32(w[i]); }
};

// out[t] = weight row w (n values of W) . a[t] (n floats) for t < R.
template <class W, int R>
static inline void dot_rows(int64_t n, const void* vw, const float* const* a, float* out) {
  const typename W::T* w = static_cast<const typename W::T*>(vw);
  dot_float_rows<R>(n, a, [w](int64_t i) { return W::load(w, i); }, [w](int64_t i) { return W::elem(w, i); }, out);
}

template <class W>
static float vec_dot_float(int64_t n, const void* w, const void* a) {
  const float* ap[1] = {static_cast<const float*>(a)};
  float y;
  dot_rows<W, 1>(n, w, ap, &y);
  return y;
}

// w (n floats) . a (n floats)
float vec_dot_f32(int64_t n, const void* w, const void* a) { return vec_dot_float<F32W>(n, w, a); }
// w (n binary16) . a (n floats)
float vec_dot_f16(int64_t n, const void* w, const void* a) { return vec_dot_float<F16W>(n, w, a); }
// w (n bfloat16) . a (n floats)
float vec_dot_bf16(int64_t n, const void* w, const void* a) { return vec_dot_float<BF16W>(n, w, a); }

// The decode form of the float types (gemv_fn; float activations): y[r] = vec_dot of weight row r.
template <class W>
static void gemv_float(int64_t n, const void* vw, size_t wrb, int n_rows, const void* a, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  for (int r = 0; r < n_rows; ++r) y[r] = vec_dot_float<W>(n, w + r * wrb, a);
}
// Their several-row decode (gemv_rows_fn) and prefill (gemm_fn) forms: tiles of weight rows (up to
// 16 rows, 64 KB: cached after the first pass) while the activation rows pass three at a time, each weight
// vector converted once for the three, every value bit for bit vec_dot's (dot_float_rows), so
// prefill == decode == verification. On the F16 files of a small model the conversion and the FMA
// chains, not memory, bound a row (bench/README.md, "Speculative decoding"): an extra activation row
// costs a fraction of one alone; prefill through vec_dot converted every weight vector once per
// token (bench/README.md, "Float weights on Zen 4").
template <class W>
static void gemm_float(int64_t n, const void* vw, size_t wrb, int n_w, const void* va, size_t arb, int n_a, float* y,
                       size_t ys) {
  constexpr size_t kTileBytes = 64 * 1024;
  const int rows = (int)std::clamp<size_t>(kTileBytes / wrb, 1, 16);
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  for (int r0 = 0; r0 < n_w; r0 += rows) {
    const int r1 = n_w - r0 < rows ? n_w : r0 + rows;
    for (int t0 = 0; t0 < n_a; t0 += 3) {
      const int m = n_a - t0 < 3 ? n_a - t0 : 3;
      const float* ap[3];
      for (int t = 0; t < m; ++t) ap[t] = reinterpret_cast<const float*>(a + (size_t)(t0 + t) * arb);
      for (int r = r0; r < r1; ++r) {
        float out[3];
        if (m == 3)
          dot_rows<W, 3>(n, w + r * wrb, ap, out);
        else if (m == 2)
          dot_rows<W, 2>(n, w + r * wrb, ap, out);
        else
          dot_rows<W, 1>(n, w + r * wrb, ap, out);
        for (int t = 0; t < m; ++t) y[(size_t)(t0 + t) * ys + r] = out[t];
      }
    }
  }
}

#define QC_AVX2_FLOAT_GEMV(t, W)                                                                                \
  void gemv_##t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {                  \
    gemv_float<W>(n, w, wrb, n_rows, a, y);                                                                    \
  }                                                                                                            \
  void gemm_##t(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,    \
                size_t ys) {                                                                                   \
    gemm_float<W>(n, w, wrb, n_w, a, arb, n_a, y, ys);                                                         \
  }                                                                                                            \
  void gemv_##t##_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a,   \
                       float* y, size_t ys) {                                                                  \
    gemm_float<W>(n, w, wrb, n_rows, a, arb, n_a, y, ys);                                                      \
  }
QC_AVX2_FLOAT_GEMV(f32, F32W) QC_AVX2_FLOAT_GEMV(f16, F16W) QC_AVX2_FLOAT_GEMV(bf16, BF16W)
#undef QC_AVX2_FLOAT_GEMV

// ---- 32-element block weights ------------------------------------------------------------

// One block's 32 byte products as the partial sums dot_blocks folds and converts. AVX2: 16 int16
// sums of adjacent products (vpmaddubsw), which cannot saturate while u <= 128 and |s| <= 127.
// VNNI: 8 int32 sums of 4 (vpdpbusd), exact.
static inline __m256i block_u8i8(__m256i u, __m256i s) {
#ifdef QC_DOT_VNNI
  return dpbusd(_mm256_setzero_si256(), u, s);
#else
  return _mm256_maddubs_epi16(u, s);
#endif
}
// The same for two signed sides (the signs of w moved onto a); needs a[i] != -128, which the
// activation formats guarantee (their values lie in -127..127).
static inline __m256i block_i8i8(__m256i w, __m256i a) {
  return block_u8i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}
// x - y of two such partial sums
static inline __m256i block_sub(__m256i x, __m256i y) {
#ifdef QC_DOT_VNNI
  return _mm256_sub_epi32(x, y);
#else
  return _mm256_sub_epi16(x, y);
#endif
}
// The partial sums as 8 int32 lanes
static inline __m256i block_i32(__m256i p) {
#ifdef QC_DOT_VNNI
  return p;
#else
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}
// Two blocks' partial sums as one vector of int32: lanes 0, 1, 4, 5 from p0, 2, 3, 6, 7 from p1.
// kSmall (AVX2): the int16 sums are at most 16383 in magnitude, so two may be added in int16 first.
template <bool kSmall>
static inline __m256i block_fold(__m256i p0, __m256i p1) {
#ifdef QC_DOT_VNNI
  return _mm256_hadd_epi32(p0, p1);
#else
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (kSmall) return _mm256_madd_epi16(_mm256_hadd_epi16(p0, p1), ones);
  return _mm256_hadd_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones));
#endif
}

// The loop shared by the block types W (weights) and A (activations), both starting with their
// f16 scale d: block_dot(i) returns block i's partial sums of byte products (block_u8i8).
// Four blocks per iteration: the four scale products take one f16 conversion per side, and the
// partial sums of two blocks are folded into one vector of int32 (block_fold) before a single
// conversion and FMA. kSmall: see block_fold.
// For the types with a min (Q4_1, Q5_1: kMin) the block term m * s, outside the integer dot, is
// accumulated four blocks at a time too.
template <bool kMin, bool kSmall, typename W, typename A, typename BlockDot>
static inline float dot_blocks(int64_t nb, const W* x, const A* y, BlockDot block_dot) {
  const __m256i lanes01 = _mm256_setr_epi32(0, 0, 1, 1, 0, 0, 1, 1);
  const __m256i lanes23 = _mm256_setr_epi32(2, 2, 3, 3, 2, 2, 3, 3);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m128 acc_min = _mm_setzero_ps();
  int64_t i = 0;
  for (; i + 4 <= nb; i += 4) {
    const __m256 d = _mm256_castps128_ps256(_mm_mul_ps(load4_h(&x[i].d, sizeof(W)), load4_h(&y[i].d, sizeof(A))));
    const __m256i p01 = block_fold<kSmall>(block_dot(i), block_dot(i + 1));
    const __m256i p23 = block_fold<kSmall>(block_dot(i + 2), block_dot(i + 3));
    acc0 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d, lanes01), _mm256_cvtepi32_ps(p01), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d, lanes23), _mm256_cvtepi32_ps(p23), acc1);
    if constexpr (kMin) acc_min = _mm_fmadd_ps(load4_h(&x[i].m, sizeof(W)), load4_h(&y[i].s, sizeof(A)), acc_min);
  }
  float min_tail = 0.0f;
  for (; i < nb; ++i) {
    const __m256i p = block_i32(block_dot(i));
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d)), _mm256_cvtepi32_ps(p), acc0);
    if constexpr (kMin) min_tail += h2f(x[i].m) * h2f(y[i].s);
  }
  float s = hsum_ps(_mm256_add_ps(acc0, acc1));
  if constexpr (kMin) s += hsum128_ps(acc_min) + min_tail;
  return s;
}

// w (n / 32 blocks of block_q4_0) . a (n / 32 blocks of block_q8_0)
float vec_dot_q4_0(int64_t n, const void* vw, const void* va) {
  const block_q4_0* x = static_cast<const block_q4_0*>(vw);
  const block_q8_0* y = static_cast<const block_q8_0*>(va);
  return dot_blocks<false, true>(n / QK4_0, x, y, [x, y](int64_t i) {
    const __m256i q = unpack_nibbles_32(x[i].qs);
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
    // (q - 8) a = q a - 8 a; in int16 pair sums (AVX2) |q a| <= 2 * 15 * 127, the result <= 2 * 8 * 127
    return block_sub(block_u8i8(q, a), block_u8i8(_mm256_set1_epi8(8), a));
  });
}

// The types with a min (Q4_1, Q5_1): each block's exact integer dot (block_dot, four at a time),
// then the float sums in the order the prefill tile uses too (min_dot.h).
template <typename W, typename A, typename BlockDot>
static inline float dot_blocks_min(int64_t nb, const W* x, const A* y, BlockDot block_dot) {
  alignas(16) int32_t isum[kMinDotSegment];
  float total = 0.0f;
  for (int64_t s0 = 0; s0 < nb; s0 += kMinDotSegment) {
    const int ns = nb - s0 < kMinDotSegment ? (int)(nb - s0) : kMinDotSegment;
    int b = 0;
    for (; b + 4 <= ns; b += 4) {
      // block_fold: lanes 0, 1, 4, 5 of block b, 2, 3, 6, 7 of b + 1; one hadd and a fold of the
      // halves leave one int32 per block
      const __m256i h = _mm256_hadd_epi32(block_fold<true>(block_dot(s0 + b), block_dot(s0 + b + 1)),
                                          block_fold<true>(block_dot(s0 + b + 2), block_dot(s0 + b + 3)));
      _mm_store_si128(reinterpret_cast<__m128i*>(isum + b),
                      _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
    }
    for (; b < ns; ++b) isum[b] = hsum_epi32(block_i32(block_dot(s0 + b)));
    total = total + min_dot_segment(isum, x + s0, y + s0, ns);
  }
  return total;
}

// w (n / 32 blocks of block_q4_1) . a (n / 32 blocks of block_q8_1)
float vec_dot_q4_1(int64_t n, const void* vw, const void* va) {
  const block_q4_1* x = static_cast<const block_q4_1*>(vw);
  const block_q8_1* y = static_cast<const block_q8_1*>(va);
  return dot_blocks_min(n / QK4_1, x, y, [x, y](int64_t i) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
    return block_u8i8(unpack_nibbles_32(x[i].qs), a);  // <= 2 * 15 * 127
  });
}

// w (n / 32 blocks of block_q5_0) . a (n / 32 blocks of block_q8_0)
float vec_dot_q5_0(int64_t n, const void* vw, const void* va) {
  const block_q5_0* x = static_cast<const block_q5_0*>(vw);
  const block_q8_0* y = static_cast<const block_q8_0*>(va);
  return dot_blocks<false, true>(n / QK5_0, x, y, [x, y](int64_t i) {
    // q - 16 = nibble where the 5th bit is set, nibble - 16 (high nibble 0xf0) where it is clear
    const __m256i hi = _mm256_andnot_si256(bits_to_bytes_32(x[i].qh), _mm256_set1_epi8((char)0xf0));
    const __m256i q = _mm256_or_si256(unpack_nibbles_32(x[i].qs), hi);
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
    return block_i8i8(q, a);  // <= 2 * 16 * 127
  });
}

// w (n / 32 blocks of block_q5_1) . a (n / 32 blocks of block_q8_1)
float vec_dot_q5_1(int64_t n, const void* vw, const void* va) {
  const block_q5_1* x = static_cast<const block_q5_1*>(vw);
  const block_q8_1* y = static_cast<const block_q8_1*>(va);
  return dot_blocks_min(n / QK5_1, x, y, [x, y](int64_t i) {
    const __m256i hi = _mm256_and_si256(bits_to_bytes_32(x[i].qh), _mm256_set1_epi8(0x10));
    const __m256i q = _mm256_or_si256(unpack_nibbles_32(x[i].qs), hi);  // 0..31
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
    return block_u8i8(q, a);  // <= 2 * 31 * 127
  });
}

// w (n / 32 blocks of block_q8_0) . a (n / 32 blocks of block_q8_0)
float vec_dot_q8_0(int64_t n, const void* vw, const void* va) {
  const block_q8_0* x = static_cast<const block_q8_0*>(vw);
  const block_q8_0* y = static_cast<const block_q8_0*>(va);
  return dot_blocks<false, false>(n / QK8_0, x, y, [x, y](int64_t i) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs));
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
    return block_i8i8(w, a);  // <= 2 * 128 * 127: too large to add two in int16
  });
}

}  // namespace QC_AVX2_NS
}  // namespace qc
