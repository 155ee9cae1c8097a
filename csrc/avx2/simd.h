// AVX2 + FMA + F16C helpers shared by the AVX2 quantized kernels (quants_32.cpp, quants_k.cpp).
// Only included by translation units compiled with -mavx2 -mfma -mf16c; everything is
// `static inline` so no AVX2 code can leak into the baseline through the linker.
//
// The quantized-kernel sources of this directory (quants*.cpp, gemm.cpp) are compiled more than once
// (CMakeLists.txt), each time into its own namespace and kernel table, with QC_DOT_VNNI choosing
// the integer dot-product instructions:
//   (unset)  namespace avx2:         vpmaddubsw + vpmaddwd (AVX2), the "avx2" table;
//   1        namespace avxvnni:      VEX vpdpbusd / vpdpwssd (AVX-VNNI, -mavxvnni): the "avxvnni"
//                                    table for Alder Lake and later Intel client cores and Zen 5;
//   2        namespace avxvnni_evex: the same two instructions EVEX-encoded (AVX512-VNNI + VL), a
//                                    test twin of 1 (see dpbusd below).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "../kernels.h"

#if !defined(QC_DOT_VNNI)
#define QC_AVX2_NS avx2
#elif QC_DOT_VNNI == 1
#define QC_AVX2_NS avxvnni
#elif QC_DOT_VNNI == 2
#define QC_AVX2_NS avxvnni_evex
#else
#error "QC_DOT_VNNI must be 1 (VEX) or 2 (EVEX test twin)"
#endif
// The global entry points of each compilation: name##_avx2, name##_avxvnni, name##_avxvnni_evex.
#define QC_AVX2_CAT2(a, b) a##_##b
#define QC_AVX2_CAT(a, b) QC_AVX2_CAT2(a, b)
#define QC_AVX2_ENTRY(name) QC_AVX2_CAT(name, QC_AVX2_NS)

namespace qc {
namespace QC_AVX2_NS {

// Registration of each group of kernels (one per translation unit), called by
// register_quant_kernels_avx2 / _avxvnni / _avxvnni_evex (quants.cpp).
void register_quants_32(Kernels& k);  // F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; Q8_0/Q8_1 activations
void register_quants_k(Kernels& k);   // Q2_K .. Q6_K; Q8_K activations
void register_gemv(Kernels& k);       // decode forms (WeightKernels::gemv), after the vec_dots: Q4_0, Q5_0, repacked Q4_0/Q8_0
void register_gemv_k(Kernels& k);     // and Q4_K

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

#ifdef QC_DOT_VNNI
// The VNNI dot-product primitives. dpbusd: acc + 8 int32 lanes, lane i the sum of the 4 byte
// products u[4i+k] * s[4i+k] (u unsigned, s signed), exact (no intermediate saturation).
// dpwssd: acc + 8 int32 lanes, lane i = x[2i] y[2i] + x[2i+1] y[2i+1] (int16 words).
#if QC_DOT_VNNI == 1
static inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
static inline __m256i dpwssd(__m256i acc, __m256i x, __m256i y) { return _mm256_dpwssd_avx_epi32(acc, x, y); }
#else
// Test twin: our development machine (Zen 4) has no AVX-VNNI and qemu's TCG does not emulate it,
// so the kernels of this directory are also built with the EVEX form of the same instructions (AVX512-VNNI +
// AVX512VL: the identical operation on ymm registers) and run wherever the CPU has those. Written
// as assembly, so that this object is compiled with the AVX2 flags only: everything else in it is
// the VEX code of the shipped variant, in the 16 registers the VEX encoding can name ("x"
// operands are ymm0-15). The shipped variant's own binary is only checked statically
// (.ci/test-x86-baseline).
static inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
  __asm__("%{evex%} vpdpbusd {%2, %1, %0|%0, %1, %2}" : "+x"(acc) : "x"(u), "xm"(s));
  return acc;
}
static inline __m256i dpwssd(__m256i acc, __m256i x, __m256i y) {
  __asm__("%{evex%} vpdpwssd {%2, %1, %0|%0, %1, %2}" : "+x"(acc) : "x"(x), "xm"(y));
  return acc;
}
#endif
#endif

// The 16 6-bit scales of a Q3_K block (12 packed bytes) as int8 scale - 32.
static inline __m128i q3_K_scales(const uint8_t* p) {
  uint32_t w[3];
  std::memcpy(w, p, 12);
  // scale i: low 4 bits from byte i % 8 (low nibble for i < 8, high for i >= 8),
  // high 2 bits from byte 8 + i % 4 at bit 2 * (i / 4)
  const uint32_t s0 = (w[0] & 0x0f0f0f0f) | (((w[2] >> 0) & 0x03030303) << 4);
  const uint32_t s1 = (w[1] & 0x0f0f0f0f) | (((w[2] >> 2) & 0x03030303) << 4);
  const uint32_t s2 = ((w[0] >> 4) & 0x0f0f0f0f) | (((w[2] >> 4) & 0x03030303) << 4);
  const uint32_t s3 = ((w[1] >> 4) & 0x0f0f0f0f) | (((w[2] >> 6) & 0x03030303) << 4);
  return _mm_sub_epi8(_mm_setr_epi32((int)s0, (int)s1, (int)s2, (int)s3), _mm_set1_epi8(32));
}

// The 8 6-bit scales and 8 6-bit mins of a Q4_K/Q5_K block (12 packed bytes) as 16 bytes:
// scales in bytes 0..7, mins in bytes 8..15.
static inline __m128i k4_scales_mins(const uint8_t* p) {
  uint32_t w[3];
  std::memcpy(w, p, 12);
  // sub-blocks 0..3: 6 bits in bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7: low 4 bits
  // from the nibbles of bytes 8..11, high 2 bits from the top bits of bytes 0..3 / 4..7.
  const uint32_t sc_lo = w[0] & 0x3f3f3f3f, mn_lo = w[1] & 0x3f3f3f3f;
  const uint32_t sc_hi = (w[2] & 0x0f0f0f0f) | (((w[0] >> 6) & 0x03030303) << 4);
  const uint32_t mn_hi = ((w[2] >> 4) & 0x0f0f0f0f) | (((w[1] >> 6) & 0x03030303) << 4);
  return _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi);
}

}  // namespace QC_AVX2_NS
#ifdef QC_DOT_VNNI
namespace avx2 = QC_AVX2_NS;  // gemm_impl.h names these helpers avx2::
#endif
}  // namespace qc
