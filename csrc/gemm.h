// Registration hooks of the matrix-matrix kernels (WeightKernels::gemm, kernels.h). Each fills
// the gemm entry of the weight types it implements; each is called from the
// register_quant_kernels_* function of its instruction set.
#pragma once
#include "kernels.h"

namespace qc {

// (Declared unconditionally: the instruction-set object libraries are compiled without the
// QWEN_HAVE_* macros; only the translation units that exist define them.)
void register_gemm_kernels_scalar(Kernels& k);  // csrc/scalar/gemm.cpp

}  // namespace qc
