// SSE4.2 (+POPCNT) helpers shared by the 128-bit kernels of csrc/sse42/. Only included by
// translation units compiled with -msse4.2 -mpopcnt (SSE2..SSE4.2: pshufb and pmaddubsw from
// SSSE3, pmovzx/pmovsx, pminsd and roundps from SSE4.1); everything is `static inline` so that
// none of it reaches the baseline through the linker.
//
// This tier serves Nehalem/Westmere and also Sandy/Ivy Bridge: AVX1 has no 256-bit integer
// operations, so the int8 dot products gain nothing from it, and without FMA or F16C the float
// kernels would gain little; one 128-bit table covers both generations.
#pragma once
#include <nmmintrin.h>  // SSE4.2 and everything below it

#include <cstdint>
#include <cstring>

#include "../kernels.h"
#include "../x86/scales.h"

#undef QC_KERNEL_PREFIX
#define QC_KERNEL_PREFIX "sse42::"  // kernel names (kernels.h, QC_FN)

namespace qc {
namespace sse42 {

// The kernels each translation unit exports, listed by the table (quants.cpp). Only these are
// global: the ISA object check (.ci/test-x86-baseline) holds it.
#define QC_SSE42_VEC_DOT(t) float vec_dot_##t(int64_t n, const void* w, const void* a);
QC_SSE42_VEC_DOT(f32) QC_SSE42_VEC_DOT(f16) QC_SSE42_VEC_DOT(bf16)  // quants_32.cpp
QC_SSE42_VEC_DOT(q4_0) QC_SSE42_VEC_DOT(q4_1) QC_SSE42_VEC_DOT(q5_0) QC_SSE42_VEC_DOT(q5_1) QC_SSE42_VEC_DOT(q8_0)
QC_SSE42_VEC_DOT(q2_K) QC_SSE42_VEC_DOT(q3_K) QC_SSE42_VEC_DOT(q4_K) QC_SSE42_VEC_DOT(q5_K)  // quants_k.cpp
QC_SSE42_VEC_DOT(q6_K)
#undef QC_SSE42_VEC_DOT
void quantize_row_q8_0(const float* x, void* y, int64_t n);  // quants_32.cpp
void quantize_row_q8_1(const float* x, void* y, int64_t n);
void quantize_row_q8_K(const float* x, void* y, int64_t n);  // quants_k.cpp

static inline float hsum_ps(__m128 v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

static inline float hmax_ps(__m128 v) {
  v = _mm_max_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_max_ss(v, _mm_movehdup_ps(v)));
}

static inline int32_t hsum_epi32(__m128i v) {
  v = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
  return _mm_cvtsi128_si32(v);
}

static inline __m128 abs_ps(__m128 v) { return _mm_andnot_ps(_mm_set1_ps(-0.0f), v); }

static inline __m128i load128(const void* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// 4 binary16 values (the low 16 bits of each int32 lane, upper bits ignored) -> 4 floats, exact
// (no F16C on these CPUs). The magnitude bits moved to the float's exponent/mantissa position
// read as 2^-112 times the value for normal and subnormal halves alike (a subnormal half becomes
// a subnormal float), so one multiply by 2^112 rescales them; infinities and NaN get the float's
// all-ones exponent instead.
static inline __m128 h2f_4(__m128i h) {
  const __m128i mag = _mm_and_si128(h, _mm_set1_epi32(0x7fff));
  const __m128i sign = _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x8000)), 16);
  __m128 f = _mm_mul_ps(_mm_castsi128_ps(_mm_slli_epi32(mag, 13)), _mm_castsi128_ps(_mm_set1_epi32(0x77800000)));
  const __m128i special = _mm_cmpgt_epi32(mag, _mm_set1_epi32(0x7bff));  // exponent 31: inf or NaN
  f = _mm_or_ps(f, _mm_and_ps(_mm_castsi128_ps(special), _mm_castsi128_ps(_mm_set1_epi32(0x7f800000))));
  return _mm_or_ps(f, _mm_castsi128_ps(sign));
}

// 8 binary16 values at p -> two vectors of 4 floats (elements 0..3, 4..7).
static inline void h2f_8(const half_t* p, __m128* lo, __m128* hi) {
  const __m128i v = load128(p);
  *lo = h2f_4(_mm_unpacklo_epi16(v, _mm_setzero_si128()));
  *hi = h2f_4(_mm_unpackhi_epi16(v, _mm_setzero_si128()));
}

// The binary16 at p, p + stride, p + 2 stride, p + 3 stride bytes, as 4 floats.
static inline __m128 load4_h(const half_t* p, size_t stride) {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(p);
  half_t h[4];
  for (int j = 0; j < 4; ++j) std::memcpy(&h[j], b + j * stride, 2);
  return h2f_4(_mm_setr_epi32(h[0], h[1], h[2], h[3]));
}

// The 4 int32 sums of the lanes of p0..p3 (lane j = sum of pj's lanes).
static inline __m128i hsum4_epi32(__m128i p0, __m128i p1, __m128i p2, __m128i p3) {
  return _mm_hadd_epi32(_mm_hadd_epi32(p0, p1), _mm_hadd_epi32(p2, p3));
}

// Bits 8 t .. 8 t + 15 of the little-endian 32-bit word w (t = 0 or 2) -> byte j = 0xff if bit
// 8 t + j is set, 0 otherwise.
static inline __m128i bits_to_bytes_16(uint32_t w, int t) {
  const __m128i spread = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)w),
                                          _mm_set_epi64x(0x0101010101010101ll * (t + 1), 0x0101010101010101ll * t));
  const __m128i bit = _mm_set1_epi64x((int64_t)0x8040201008040201ull);
  return _mm_cmpeq_epi8(_mm_and_si128(spread, bit), bit);
}

// The 8 int16 sums of adjacent byte products for two signed sides (the signs of w moved onto a);
// needs a != -128, which the activation formats guarantee (their values lie in -127..127).
static inline __m128i pairs_i8i8(__m128i w, __m128i a) {
  return _mm_maddubs_epi16(_mm_sign_epi8(w, w), _mm_sign_epi8(a, w));
}

using x86::k4_scales_mins;  // csrc/x86/scales.h
using x86::q3_K_scales;

// pshufb masks spreading int16 word j (j < 8) of a vector over all 8 words.
struct WordMasks {
  __m128i m[8];
  WordMasks() {
    for (int j = 0; j < 8; ++j) m[j] = _mm_set1_epi16((short)(2 * j | (2 * j + 1) << 8));
  }
};

}  // namespace sse42
}  // namespace qc
