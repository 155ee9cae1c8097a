// AVX2 + FMA + F16C helpers shared by the 256-bit kernels of csrc/avx2 and csrc/avx512 (and the
// prefill tiles of gemm_impl.h). Only included by translation units compiled with at least -mavx2
// -mfma -mf16c; everything is `static inline`, so each includer gets its own copy compiled with
// its own flags and nothing reaches the baseline through the linker.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../blocks.h"
#include "scales.h"

namespace qc {
namespace x86 {

static inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline float hsum128_ps(__m128 v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

static inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

static inline float hmax_ps(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// One binary16 scalar to float (F16C, exact).
static inline float h2f(half_t h) { return _cvtsh_ss(h); }

// The binary16 scales of 4 consecutive blocks: the half at p, p + stride, p + 2 stride,
// p + 3 stride bytes, as 4 floats (one conversion instead of four).
static inline __m128 load4_h(const half_t* p, size_t stride) {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(p);
  half_t h[4];
  for (int j = 0; j < 4; ++j) std::memcpy(&h[j], b + j * stride, 2);
  return _mm_cvtph_ps(_mm_setr_epi16((short)h[0], (short)h[1], (short)h[2], (short)h[3], 0, 0, 0, 0));
}

// Lane j of v (j in 0..3) in all 8 lanes.
static inline __m256 lane_ps(__m128 v, int j) {
  return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(v), _mm256_set1_epi32(j));
}

// 32 bytes: q (32) at 16 bytes, element j in the low nibble of byte j, j + 16 in the high one
// -> unsigned bytes 0..15 in element order (the Q4_0/Q4_1/Q5_* nibble layout).
static inline __m256i unpack_nibbles_32(const uint8_t* q) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// Bit j of w -> byte j = 0xff if set, 0 otherwise.
static inline __m256i bits_to_bytes_32(uint32_t w) {
  // Byte j takes the source byte j / 8, then tests bit j % 8 of it.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32((int32_t)w),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201ull);
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// The same for the little-endian 32-bit word at p.
static inline __m256i bits_to_bytes_32(const uint8_t* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  return bits_to_bytes_32(w);
}

// vpdpbusd / vpdpwssd on ymm registers in their EVEX encoding (AVX512-VNNI + AVX512VL): acc + 8
// int32 lanes, lane i the sum of the 4 byte products u[4i+k] * s[4i+k] (u unsigned, s signed),
// exact; or of the 2 word products x[2i+k] * y[2i+k]. Written as assembly so that the includer
// needs the AVX2 flags only, and the rest of its code stays VEX-encoded in ymm0-15 ("x" operands).
// Needs an assembler that takes {evex} (CMakeLists.txt: QWEN_ASM_HAS_EVEX_VNNI).
static inline __m256i dpbusd_evex(__m256i acc, __m256i u, __m256i s) {
  __asm__("%{evex%} vpdpbusd {%2, %1, %0|%0, %1, %2}" : "+x"(acc) : "x"(u), "xm"(s));
  return acc;
}
static inline __m256i dpwssd_evex(__m256i acc, __m256i x, __m256i y) {
  __asm__("%{evex%} vpdpwssd {%2, %1, %0|%0, %1, %2}" : "+x"(acc) : "x"(x), "xm"(y));
  return acc;
}

}  // namespace x86
}  // namespace qc
