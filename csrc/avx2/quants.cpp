// The AVX2 (+FMA, F16C) quantized kernels: dot products of every weight type we read against
// its activation format, and the activation quantizers. Dequantization stays the inherited
// scalar one: it serves the embedding lookup (one row per token) and offline conversion, never
// a matrix product. Compiled once per dot-product variant (simd.h): this defines
// register_quant_kernels_avx2, _avxvnni or _avxvnni_evex (kernels.h).
#include "simd.h"

#include "../gemm.h"

namespace qc {

void QC_AVX2_ENTRY(register_quant_kernels)(Kernels& k) {
  QC_AVX2_NS::register_quants_32(k);
  QC_AVX2_NS::register_quants_k(k);
  QC_AVX2_NS::register_gemv(k);
  QC_AVX2_NS::register_gemv_k(k);
  QC_AVX2_ENTRY(register_gemm_kernels)(k);
}

}  // namespace qc
