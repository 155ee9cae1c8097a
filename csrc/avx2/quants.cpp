// The AVX2 (+FMA, F16C) quantized kernels: dot products of every weight type we read against
// its activation format, and the activation quantizers. Dequantization stays the inherited
// scalar one: it serves the embedding lookup (one row per token) and offline conversion, never
// a matrix product.
#include "simd.h"

#include "../gemm.h"

namespace qc {

void register_quant_kernels_avx2(Kernels& k) {
  avx2::register_quants_32(k);
  avx2::register_quants_k(k);
  avx2::register_gemv(k);
  register_gemm_kernels_avx2(k);  // after the vec_dots: assigning a WeightKernels resets gemm
}

}  // namespace qc
