// The scalar reference of WeightKernels::gemm: each output is the scalar vec_dot of one weight
// row with one activation row, so the matrix-matrix path of the scalar table computes exactly
// what its matrix-vector path does. The SIMD gemm kernels are tested against this (through the
// scalar path of matmul) and against their own table's vec_dot.
#include "quants.h"

namespace qc {
namespace scalar {
namespace {

// y[i * y_stride + j] = Dot(w row j, a row i); w (n_w, w_row_bytes), a (n_a, a_row_bytes),
// y (n_a, y_stride). Weight row outer: the row stays in cache while the activation rows pass.
template <vec_dot_fn Dot>
void by_vec_dot(int64_t n, const void* vw, size_t w_row_bytes, int n_w, const void* va, size_t a_row_bytes, int n_a,
                float* y, size_t y_stride) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  for (int j = 0; j < n_w; ++j)
    for (int i = 0; i < n_a; ++i) y[i * y_stride + j] = Dot(n, w + j * w_row_bytes, a + i * a_row_bytes);
}

}  // namespace

#define QC_SCALAR_GEMM(t, dot)                                                                                 \
  void gemm_##t(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, \
                size_t ldy) {                                                                                \
    by_vec_dot<dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);                                                    \
  }
QC_SCALAR_GEMM(f32, vec_dot_f32) QC_SCALAR_GEMM(f16, vec_dot_f16) QC_SCALAR_GEMM(bf16, vec_dot_bf16)
QC_SCALAR_GEMM(q4_0, vec_dot_q4_0_q8_0) QC_SCALAR_GEMM(q4_1, vec_dot_q4_1_q8_1)
QC_SCALAR_GEMM(q5_0, vec_dot_q5_0_q8_0) QC_SCALAR_GEMM(q5_1, vec_dot_q5_1_q8_1)
QC_SCALAR_GEMM(q8_0, vec_dot_q8_0_q8_0)
QC_SCALAR_GEMM(q2_K, vec_dot_q2_K_q8_K) QC_SCALAR_GEMM(q3_K, vec_dot_q3_K_q8_K) QC_SCALAR_GEMM(q4_K, vec_dot_q4_K_q8_K)
QC_SCALAR_GEMM(q5_K, vec_dot_q5_K_q8_K) QC_SCALAR_GEMM(q6_K, vec_dot_q6_K_q8_K)
#undef QC_SCALAR_GEMM

}  // namespace scalar
}  // namespace qc
