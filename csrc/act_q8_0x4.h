// Q8_0x4: the activation layout of the decode (one-token) Q4_0 kernels, WeightKernels::gemv.
// Not a GGUF type: it exists only in the activation scratch of a matrix-vector product.
//
// Why: a Q4_0 weight block stores element j in the low nibble of byte j and element 16 + j in
// the high nibble. Four weight blocks' 64 bytes, masked and shifted, give two vectors of 64 bytes:
// elements 0..15 and 16..31 of each of the four blocks. With the activations stored in that same
// order, one byte dot-product instruction per vector (vpdpbusd; maddubs on AVX2) covers them
// without rearranging weight bytes, and the two terms every Q4_0 x Q8_0 block product needs apart
// from the weights -- the activation scales and 8 * sum(a), the offset of the unsigned nibbles --
// are computed once per token here instead of once per weight row.
//
// The values are exactly those of Q8_0 (same rounding, the f16 scale kept as its float value), so
// a gemv over this layout equals vec_dot over Q8_0 up to the order of the float sums.
//
// The offset is split by int32 lane: a 4-byte dot product instruction sums bytes 4j..4j+3 of lo
// and of hi into lane j, and sum8 holds 8 times the sum of exactly those 8 activation bytes, so each
// lane minus its sum8 is the exact partial dot of the weights q - 8 over its 8 values. Converted to
// float lane by lane, the rounding error stays relative to the true terms (a block of zero weights,
// all nibbles 8, gives exactly 0), not to the larger (q + 8) * a products.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "blocks.h"

namespace qc {

// Four consecutive Q8_0 blocks b0..b3 of one activation row (128 elements).
struct block_q8_0x4 {
  int8_t lo[64];      // lo[16k + j] = b_k.qs[j]       (j < 16)
  int8_t hi[64];      // hi[16k + j] = b_k.qs[16 + j]
  float d[16];        // d[4k + j]   = b_k.d as float  (j < 4: one per int32 lane of block k)
  int32_t sum8[16];   // sum8[4k + j] = 8 * sum of lo[16k + 4j .. + 3] and hi[16k + 4j .. + 3]
};
static_assert(sizeof(block_q8_0x4) == 256, "block_q8_0x4 size");
constexpr int QK8_0X4 = 128;

// src: 4 Q8_0 blocks -> dst
static inline void q8_0x4_from_q8_0(const block_q8_0* src, block_q8_0x4* dst) {
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 16; ++j) {
      dst->lo[16 * k + j] = src[k].qs[j];
      dst->hi[16 * k + j] = src[k].qs[16 + j];
    }
    const float d = fp16_to_fp32(src[k].d);
    for (int j = 0; j < 4; ++j) {
      int32_t sum = 0;
      for (int i = 4 * j; i < 4 * j + 4; ++i) sum += src[k].qs[i] + src[k].qs[16 + i];  // lo, hi bytes of lane j
      dst->d[4 * k + j] = d;
      dst->sum8[4 * k + j] = 8 * sum;
    }
  }
}

// x (n, a multiple of 32) -> y (n / 128 blocks of block_q8_0x4, rounded up: a last group of fewer
// blocks has zero blocks after them), through the instruction set's own Q8_0 quantizer Q8 (so the
// values are bit-identical to its Q8_0 activations).
template <void (*Q8)(const float*, void*, int64_t)>
static void quantize_row_q8_0x4(const float* x, void* vy, int64_t n) {
  block_q8_0x4* y = static_cast<block_q8_0x4*>(vy);
  block_q8_0 tmp[4];
  for (int64_t g = 0; g * QK8_0X4 < n; ++g) {
    const int64_t m = n - g * QK8_0X4 < QK8_0X4 ? n - g * QK8_0X4 : QK8_0X4;
    if (m < QK8_0X4) std::memset(tmp, 0, sizeof(tmp));  // a last group's blocks padded with zeros
    Q8(x + g * QK8_0X4, tmp, m);
    q8_0x4_from_q8_0(tmp, y + g);
  }
}

}  // namespace qc
