// The SSE4.2 table, weight type by weight type: dot products of every weight type we read against
// its activation format. No gemm or gemv of its own (dispatch.cpp does not inherit the scalar
// ones): the matmul driver loops over these vec_dots (matmul.cpp, kVecDot), which is what a
// 128-bit tile kernel would mostly do anyway. Dequantization stays the inherited scalar one
// (embedding lookups only), so do the F32 activations (a plain copy).
#include "simd.h"

namespace qc {

void register_quant_kernels_sse42(Kernels& k) {
  using namespace sse42;
  k.quantize_act[GGML_Q8_0] = quantize_row_q8_0;  // the activation formats of the dots below
  k.quantize_act[GGML_Q8_1] = quantize_row_q8_1;
  k.quantize_act[GGML_Q8_K] = quantize_row_q8_K;
  set_vec_dot(k, GGML_F32, QC_FN(vec_dot_f32), GGML_F32);
  set_vec_dot(k, GGML_F16, QC_FN(vec_dot_f16), GGML_F32);
  set_vec_dot(k, GGML_BF16, QC_FN(vec_dot_bf16), GGML_F32);
  set_vec_dot(k, GGML_Q4_0, QC_FN(vec_dot_q4_0), GGML_Q8_0);
  set_vec_dot(k, GGML_Q4_1, QC_FN(vec_dot_q4_1), GGML_Q8_1);
  set_vec_dot(k, GGML_Q5_0, QC_FN(vec_dot_q5_0), GGML_Q8_0);
  set_vec_dot(k, GGML_Q5_1, QC_FN(vec_dot_q5_1), GGML_Q8_1);
  set_vec_dot(k, GGML_Q8_0, QC_FN(vec_dot_q8_0), GGML_Q8_0);
  set_vec_dot(k, GGML_Q2_K, QC_FN(vec_dot_q2_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q3_K, QC_FN(vec_dot_q3_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q4_K, QC_FN(vec_dot_q4_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q5_K, QC_FN(vec_dot_q5_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q6_K, QC_FN(vec_dot_q6_K), GGML_Q8_K);
}

}  // namespace qc
