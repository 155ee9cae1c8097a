// The NEON tables, weight type by weight type: dot products of every weight type we read against
// its activation format, the decode gemvs with theirs, and the activation quantizers (bytes
// identical to the scalar ones). No gemm of its own (dispatch.cpp does not inherit the scalar
// ones): the matmul driver loops over these vec_dots. Dequantization stays the inherited scalar
// one (embedding lookups and offline conversion, never a matrix product). The "neon_dotprod" table
// (dispatch.cpp, only where the CPU has FEAT_DotProd) is the same with every integer kernel
// replaced by its SDOT version (neon::dotprod).
#include "neon.h"

#include "../act_q8_0x4.h"

namespace qc {

void register_quant_kernels_neon(Kernels& k) {
  using namespace neon;
  k.quantize_act[GGML_F32] = quantize_row_f32;
  k.quantize_act[GGML_Q8_0] = quantize_row_q8_0;
  k.quantize_act[GGML_Q8_1] = quantize_row_q8_1;
  k.quantize_act[GGML_Q8_K] = quantize_row_q8_K;
  k.quantize_act[QC_ACT_Q8_0X4] = quantize_row_q8_0x4<quantize_row_q8_0>;  // the decode gemvs'

  set_vec_dot(k, GGML_F32, QC_FN(vec_dot_f32), GGML_F32);
  set_vec_dot(k, GGML_F16, QC_FN(vec_dot_f16), GGML_F32);
  set_vec_dot(k, GGML_BF16, QC_FN(vec_dot_bf16), GGML_F32);

  set_vec_dot(k, GGML_Q4_0, QC_FN(vec_dot_q4_0), GGML_Q8_0);
  set_gemv(k, GGML_Q4_0, QC_FN(gemv_q4_0), QC_ACT_Q8_0X4);
  set_layout_gemv(k, QC_LAYOUT_Q4_0_R4, QC_FN(gemv_q4_0_r4), QC_ACT_Q8_0X4);
  set_vec_dot(k, GGML_Q4_1, QC_FN(vec_dot_q4_1), GGML_Q8_1);
  set_vec_dot(k, GGML_Q5_0, QC_FN(vec_dot_q5_0), GGML_Q8_0);
  set_vec_dot(k, GGML_Q5_1, QC_FN(vec_dot_q5_1), GGML_Q8_1);
  set_vec_dot(k, GGML_Q8_0, QC_FN(vec_dot_q8_0), GGML_Q8_0);
  set_layout_gemv(k, QC_LAYOUT_Q8_0_R4, QC_FN(gemv_q8_0_r4), QC_ACT_Q8_0X4);

  set_vec_dot(k, GGML_Q2_K, QC_FN(vec_dot_q2_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q3_K, QC_FN(vec_dot_q3_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q4_K, QC_FN(vec_dot_q4_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q5_K, QC_FN(vec_dot_q5_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q6_K, QC_FN(vec_dot_q6_K), GGML_Q8_K);
}

void register_quant_kernels_neon_dotprod(Kernels& k) {
  register_quant_kernels_neon(k);
  using namespace neon;
  set_vec_dot(k, GGML_Q4_0, QC_FN(dotprod::vec_dot_q4_0), GGML_Q8_0);
  set_gemv(k, GGML_Q4_0, QC_FN(dotprod::gemv_q4_0), QC_ACT_Q8_0X4);
  set_layout_gemv(k, QC_LAYOUT_Q4_0_R4, QC_FN(dotprod::gemv_q4_0_r4), QC_ACT_Q8_0X4);
  set_vec_dot(k, GGML_Q4_1, QC_FN(dotprod::vec_dot_q4_1), GGML_Q8_1);
  set_vec_dot(k, GGML_Q5_0, QC_FN(dotprod::vec_dot_q5_0), GGML_Q8_0);
  set_vec_dot(k, GGML_Q5_1, QC_FN(dotprod::vec_dot_q5_1), GGML_Q8_1);
  set_vec_dot(k, GGML_Q8_0, QC_FN(dotprod::vec_dot_q8_0), GGML_Q8_0);
  set_layout_gemv(k, QC_LAYOUT_Q8_0_R4, QC_FN(dotprod::gemv_q8_0_r4), QC_ACT_Q8_0X4);
  set_vec_dot(k, GGML_Q2_K, QC_FN(dotprod::vec_dot_q2_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q3_K, QC_FN(dotprod::vec_dot_q3_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q4_K, QC_FN(dotprod::vec_dot_q4_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q5_K, QC_FN(dotprod::vec_dot_q5_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q6_K, QC_FN(dotprod::vec_dot_q6_K), GGML_Q8_K);
}

}  // namespace qc
