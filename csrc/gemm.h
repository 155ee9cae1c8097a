// Registration hooks of the matrix-matrix kernels (WeightKernels::gemm, kernels.h). Each fills
// the gemm entry of the weight types it implements; each is called from the
// register_quant_kernels_* function of its instruction set.
#pragma once
#include "kernels.h"

namespace qc {

// (Declared unconditionally: the instruction-set object libraries are compiled without the
// QWEN_HAVE_* macros; only the translation units that exist define them.)
void register_gemm_kernels_scalar(Kernels& k);  // csrc/scalar/gemm.cpp
void register_gemm_kernels_avx2(Kernels& k);    // csrc/avx2/gemm.cpp
// The same source compiled with the VNNI dot products (csrc/avx2/simd.h, QC_DOT_VNNI).
void register_gemm_kernels_avxvnni(Kernels& k);
void register_gemm_kernels_avxvnni_evex(Kernels& k);
// The 32-element types' VNNI tiles (only on CPUs with AVX512-VNNI).

}  // namespace qc
