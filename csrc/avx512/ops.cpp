// AVX-512 element-wise and attention ops: none on purpose. The op kernels (RMSNorm, softmax,
// RoPE, attention, ...) take a small share of a step next to the quantized matrix products,
// which is where the AVX-512 work went (quants*.cpp); the AVX-512 table keeps the AVX2 ops it
// inherits (dispatch.cpp starts it as a copy of the AVX2 table).
#include "../kernels.h"

namespace qc {

void register_op_kernels_avx512(Kernels& k) { (void)k; }

}  // namespace qc
