// AVX-512 table's matrix-matrix tiles (WeightKernels::gemm). The AVX-512 table starts as a copy
// of the AVX2 one and re-registers the vec_dots of the types it has VNNI kernels for, which
// resets their gemm entries: the AVX2 tiles are registered again (they compute the same exact
// block dot products as any vec_dot of the table, only the float summation order differs).
#include "../gemm.h"

namespace qc {

void register_gemm_kernels_avx512(Kernels& k) { register_gemm_kernels_avx2(k); }

}  // namespace qc
