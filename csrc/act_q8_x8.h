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

#include "blocks.h"

namespace qc {

struct block_q8_x8 {
  float d;        // the Q8_1 (= Q8_0) block scale, as float
  float s;        // d * sum(q) as Q8_1 stores it (f16), as float; for the types with a min term
  uint8_t u[32];  // q + 128 (q ^ 0x80)
};
static_assert(sizeof(block_q8_x8) == 40, "block_q8_x8 size");
constexpr int QK8_X8 = 32;

// x (n, a multiple of 32) -> y (n / 32 blocks of Out), through the instruction set's own
// quantizer Q of the GGUF blocks In (so the values are bit-identical to its Q8_0 and Q8_1
// activations), each block rewritten by convert(in, out)
template <class In, class Out, void (*Q)(const float*, void*, int64_t), void (*convert)(const In&, Out&)>
static void quantize_row_via(const float* x, void* vy, int64_t n) {
  Out* y = static_cast<Out*>(vy);
  constexpr int64_t kStep = 8;  // blocks per call of Q
  In tmp[kStep];
  for (int64_t i = 0; i < n / 32; i += kStep) {
    const int64_t nb = n / 32 - i < kStep ? n / 32 - i : kStep;
    Q(x + 32 * i, tmp, 32 * nb);
    for (int64_t k = 0; k < nb; ++k) convert(tmp[k], y[i + k]);
  }
}

static inline void q8_x8_from(const block_q8_1& in, block_q8_x8& out) {
  out.d = fp16_to_fp32(in.d);
  out.s = fp16_to_fp32(in.s);
  for (int j = 0; j < 32; ++j) out.u[j] = (uint8_t)(in.qs[j] ^ 0x80);
}
template <void (*Q8_1)(const float*, void*, int64_t)>
static void quantize_row_q8_x8(const float* x, void* vy, int64_t n) {
  quantize_row_via<block_q8_1, block_q8_x8, Q8_1, q8_x8_from>(x, vy, n);
}

// Q8_0F: the activation layout of the AVX2 Q8_0 prefill kernel (csrc/avx2/gemm.cpp, which
// multiplies in int16 with vpmaddwd), Q8_0 with its values widened and its scale as a float,
// converted once per token instead of once per call of the kernel.
struct block_q8_0f {
  float d;          // the Q8_0 block scale, as float
  int16_t qs[32];   // Q8_0's values
};
static_assert(sizeof(block_q8_0f) == 68, "block_q8_0f size");
constexpr int QK8_0F = 32;

static inline void q8_0f_from(const block_q8_0& in, block_q8_0f& out) {
  out.d = fp16_to_fp32(in.d);
  for (int j = 0; j < 32; ++j) out.qs[j] = in.qs[j];
}
template <void (*Q8_0)(const float*, void*, int64_t)>
static void quantize_row_q8_0f(const float* x, void* vy, int64_t n) {
  quantize_row_via<block_q8_0, block_q8_0f, Q8_0, q8_0f_from>(x, vy, n);
}

}  // namespace qc
