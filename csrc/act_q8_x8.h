// Q8_X8: the activation layout of the prefill kernels over 8 interleaved weight rows (gemm_x8,
// csrc/x86/gemm_impl.h), WeightKernels::gemm_act. Not a GGUF type: it exists only in the
// activation scratch of a matrix product of several tokens.
//
// Why: those kernels multiply bytes with vpdpbusd / vpmaddubsw, which want one unsigned side; the
// repacked weights are signed, so the activations go in as a + 128, and each block's f16 scales
// are wanted as floats. Done inside the kernel, that preparation was repeated for every tile of 8
// weight rows (once per token, block and tile), a quarter of a Q4_0 or Q8_0 prefill product. In
// this layout it is done once per token, when the activations are quantized.
//
// The values are exactly those of Q8_1 (same rounding; Q8_0's d and qs are the same numbers):
// d and s as the float values of its f16 fields, the bytes with their top bit flipped.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "blocks.h"

namespace qc {

struct block_q8_x8 {
  float d;        // the Q8_1 (= Q8_0) block scale, as float
  float s;        // d * sum(q) as Q8_1 stores it (f16), as float; for the types with a min term
  uint8_t u[32];  // q + 128 (q ^ 0x80)
};
static_assert(sizeof(block_q8_x8) == 40, "block_q8_x8 size");
constexpr int QK8_X8 = 32;

// x (n, a multiple of 32) -> y (n / 32 blocks), through the instruction set's own Q8_1
// quantizer Q8_1 (so the values are bit-identical to its Q8_0 and Q8_1 activations).
template <void (*Q8_1)(const float*, void*, int64_t)>
static void quantize_row_q8_x8(const float* x, void* vy, int64_t n) {
  block_q8_x8* y = static_cast<block_q8_x8*>(vy);
  constexpr int64_t kStep = 8;  // blocks per call of Q8_1
  block_q8_1 tmp[kStep];
  for (int64_t i = 0; i < n / 32; i += kStep) {
    const int64_t nb = n / 32 - i < kStep ? n / 32 - i : kStep;
    Q8_1(x + 32 * i, tmp, 32 * nb);
    for (int64_t k = 0; k < nb; ++k) {
      y[i + k].d = fp16_to_fp32(tmp[k].d);
      y[i + k].s = fp16_to_fp32(tmp[k].s);
      for (int j = 0; j < 32; ++j) y[i + k].u[j] = (uint8_t)(tmp[k].qs[j] ^ 0x80);
    }
  }
}

// Q8_0F: the activation layout of the AVX2 Q8_0 prefill kernel (csrc/avx2/gemm.cpp, which keeps
// the signed bytes: their products with Q8_0's signed weights go through vpsignb), Q8_0 with its
// scale as a float, converted once per token instead of once per call of the kernel.
struct block_q8_0f {
  float d;         // the Q8_0 block scale, as float
  int8_t qs[32];   // Q8_0's values
};
static_assert(sizeof(block_q8_0f) == 36, "block_q8_0f size");
constexpr int QK8_0F = 32;

// x (n, a multiple of 32) -> y (n / 32 blocks), through the instruction set's own Q8_0 quantizer
template <void (*Q8_0)(const float*, void*, int64_t)>
static void quantize_row_q8_0f(const float* x, void* vy, int64_t n) {
  block_q8_0f* y = static_cast<block_q8_0f*>(vy);
  constexpr int64_t kStep = 8;  // blocks per call of Q8_0
  block_q8_0 tmp[kStep];
  for (int64_t i = 0; i < n / 32; i += kStep) {
    const int64_t nb = n / 32 - i < kStep ? n / 32 - i : kStep;
    Q8_0(x + 32 * i, tmp, 32 * nb);
    for (int64_t k = 0; k < nb; ++k) {
      y[i + k].d = fp16_to_fp32(tmp[k].d);
      std::memcpy(y[i + k].qs, tmp[k].qs, 32);
    }
  }
}

}  // namespace qc
