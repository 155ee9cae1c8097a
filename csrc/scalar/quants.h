// Shared pieces of the scalar quantized kernels (csrc/scalar/quants*.cpp): the per-file
// registration hooks, and the unpacking of the packed K-quant scales, which SIMD kernels may
// include too (everything here is `static inline`, so each translation unit gets its own copy
// compiled with its own flags).
#pragma once
#include <cstdint>

#include "../kernels.h"

namespace qc {

// Q3_K: 16 signed 6-bit sub-block scales (-32..31) packed in 12 bytes:
//   low 4 bits of scale i: byte i % 8, nibble i / 8;
//   high 2 bits of scale i: byte 8 + i % 4, bit pair i / 4.
// scales (12 bytes) -> out (16)
static inline void unpack_q3_K_scales(const uint8_t* scales, int8_t* out) {
  for (int i = 0; i < 16; ++i) {
    const int lo = (scales[i % 8] >> (4 * (i / 8))) & 0x0f;
    const int hi = (scales[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    out[i] = (int8_t)((lo | (hi << 4)) - 32);
  }
}

// Q4_K / Q5_K: 8 unsigned 6-bit scales and 8 unsigned 6-bit mins packed in 12 bytes:
//   j < 4:  scale = bytes[j] & 63,                        min = bytes[j + 4] & 63;
//   j >= 4: scale = (bytes[j + 4] & 15) | (bytes[j - 4] >> 6) << 4,
//           min   = (bytes[j + 4] >> 4) | (bytes[j] >> 6) << 4.
// scales (12 bytes) -> sc (8), mn (8)
static inline void unpack_q4_K_scales(const uint8_t* scales, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = scales[j] & 63;
    mn[j] = scales[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    sc[j] = (uint8_t)((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4));
    mn[j] = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

namespace scalar {
// Each fills its part of the table; register_quant_kernels_scalar (quants.cpp) calls all of them.
void register_quants_32(Kernels& k);  // F32, F16, BF16 and the 32-element block types (quants_32.cpp)
void register_quants_k(Kernels& k);   // Q2_K .. Q6_K (quants_k.cpp)
}  // namespace scalar

}  // namespace qc
