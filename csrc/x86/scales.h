// Unpacking of the K-quant packed 6-bit scales into 128-bit vectors, shared by the SSE4.2, AVX2
// and AVX-512 kernels (the bit layout: scalar/quants.h). SSE2 instructions only, so every x86
// tier can include it; `static inline`, so each includer compiles its own copy with its own flags.
#pragma once
#include <emmintrin.h>

#include <cstdint>
#include <cstring>

namespace qc {
namespace x86 {

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

}  // namespace x86
}  // namespace qc
