// The scalar reference of WeightKernels::gemm: each output is the scalar vec_dot of one weight
// row with one activation row, so the matrix-matrix path of the scalar table computes exactly
// what its matrix-vector path does. The SIMD gemm kernels are tested against this (through the
// scalar path of matmul) and against their own table's vec_dot.
#include "../gemm.h"

#define QC_KERNEL_PREFIX "scalar::"  // kernel names (kernels.h, QC_FN)

namespace qc {
namespace scalar {
namespace {

// The scalar vec_dot of each weight type, captured at registration (the table is built once,
// under the static initialisation of dispatch.cpp, before any kernel runs).
vec_dot_fn g_vec_dot[GGML_TYPE_COUNT] = {};

// y[i * y_stride + j] = vec_dot(w row j, a row i); w (n_w, w_row_bytes), a (n_a, a_row_bytes),
// y (n_a, y_stride). Weight row outer: the row stays in cache while the activation rows pass.
template <int32_t kType>
void gemm_by_vec_dot(int64_t n, const void* vw, size_t w_row_bytes, int n_w, const void* va, size_t a_row_bytes,
                     int n_a, float* y, size_t y_stride) {
  const vec_dot_fn dot = g_vec_dot[kType];
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  for (int j = 0; j < n_w; ++j)
    for (int i = 0; i < n_a; ++i) y[i * y_stride + j] = dot(n, w + j * w_row_bytes, a + i * a_row_bytes);
}

template <int32_t kType>
void add(Kernels& k) {
  g_vec_dot[kType] = k.weight[kType].vec_dot;
  if (g_vec_dot[kType]) set_gemm(k, kType, QC_FN(gemm_by_vec_dot<kType>));
}

}  // namespace
}  // namespace scalar

void register_gemm_kernels_scalar(Kernels& k) {
  scalar::add<GGML_F32>(k);
  scalar::add<GGML_F16>(k);
  scalar::add<GGML_BF16>(k);
  scalar::add<GGML_Q4_0>(k);
  scalar::add<GGML_Q4_1>(k);
  scalar::add<GGML_Q5_0>(k);
  scalar::add<GGML_Q5_1>(k);
  scalar::add<GGML_Q8_0>(k);
  scalar::add<GGML_Q2_K>(k);
  scalar::add<GGML_Q3_K>(k);
  scalar::add<GGML_Q4_K>(k);
  scalar::add<GGML_Q5_K>(k);
  scalar::add<GGML_Q6_K>(k);
}

}  // namespace qc
