// The SSE4.2 quantized kernels: dot products of every weight type we read against its activation
// format, and the activation quantizers. No gemm of its own (dispatch.cpp does not inherit the
// scalar ones): the matmul driver loops over these vec_dots (matmul.cpp, kVecDot), which is what a
// 128-bit tile kernel would mostly do anyway. Dequantization stays the inherited scalar one (embedding lookups only).
#include "simd.h"

namespace qc {

void register_quant_kernels_sse42(Kernels& k) {
  sse42::register_quants_32(k);
  sse42::register_quants_k(k);
}

}  // namespace qc
