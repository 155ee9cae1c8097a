// The AVX-512 table, weight type by weight type. dispatch.cpp builds it only on CPUs with AVX-512
// F/BW/VL/DQ, as a copy of the AVX2 table. The float-weight kernels need nothing more; the
// quantized ones use AVX512-VNNI as well (one instruction for the byte or word dot products
// and their accumulation), so they replace the AVX2 ones only when the CPU has it -- without
// VNNI the table keeps the AVX2 kernels for those types. The activation quantizers and the
// dequantizers stay the inherited ones.
#include "simd512.h"

namespace qc {

void register_quant_kernels_avx512(Kernels& k, const CpuFeatures& cpu) {
  using namespace avx512;
  // tokens per prefill call at least for the Q8_0 and K-quant tiles: their per-call repacking
  // costs more than the activations spilling out of L2 (bench/README.md, "Kernel design measurements")
  constexpr int kLongChunk = 256;
  constexpr int kTileRows = 16;  // gemm.cpp, gemm_k.cpp
  // The float types' vec_dot, decode and prefill kernels come from one table (prefill == decode
  // exactness, kernels.h): where 512-bit operations run as two halves (Zen 4) the inherited avx2
  // ones, whose decode ran a quarter faster there (bench/README.md, "Float weights on Zen 4")
  if (!cpu.avx512_halves) {
    set_vec_dot(k, GGML_F32, QC_FN(vec_dot_f32), GGML_F32);
    set_vec_dot(k, GGML_F16, QC_FN(vec_dot_f16), GGML_F32);
    set_vec_dot(k, GGML_BF16, QC_FN(vec_dot_bf16), GGML_F32);
  }
  if (!cpu.avx512vnni) return;

  set_vec_dot(k, GGML_Q4_0, QC_FN(vec_dot_q4_0), GGML_Q8_0);
  set_gemm(k, GGML_Q4_0, QC_FN(gemm_q4_0), QC_ACT_Q8_X8, kGemmMinTokens, kTileRows);

  set_vec_dot(k, GGML_Q4_1, QC_FN(vec_dot_q4_1), GGML_Q8_1);
  set_gemm(k, GGML_Q4_1, QC_FN(gemm_q4_1), QC_ACT_Q8_X8, kGemmMinTokens, kTileRows);
  set_layout_gemm(k, QC_LAYOUT_Q4_1_R4T, QC_FN(gemm_q4_1_r4t));  // over the avx2 decode tiles kept (keep_decode)

  set_vec_dot(k, GGML_Q5_0, QC_FN(vec_dot_q5_0), GGML_Q8_0);
  set_gemm(k, GGML_Q5_0, QC_FN(gemm_q5_0), QC_ACT_Q8_X8, kGemmMinTokens, kTileRows);
  set_layout_gemm(k, QC_LAYOUT_Q5_0_R4T, QC_FN(gemm_q5_0_r4t));

  set_vec_dot(k, GGML_Q5_1, QC_FN(vec_dot_q5_1), GGML_Q8_1);
  set_gemm(k, GGML_Q5_1, QC_FN(gemm_q5_1), QC_ACT_Q8_X8, kGemmMinTokens, kTileRows);
  set_layout_gemm(k, QC_LAYOUT_Q5_1_R4T, QC_FN(gemm_q5_1_r4t));

  set_vec_dot(k, GGML_Q8_0, QC_FN(vec_dot_q8_0), GGML_Q8_0);
  set_gemm(k, GGML_Q8_0, QC_FN(gemm_q8_0), QC_ACT_Q8_X8, kLongChunk, kTileRows);
  set_layout_gemm(k, QC_LAYOUT_Q8_0_R4T, QC_FN(gemm_q8_0_r4t));  // over the avx2 decode tiles kept (keep_decode)

  set_vec_dot(k, GGML_Q2_K, QC_FN(vec_dot_q2_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q3_K, QC_FN(vec_dot_q3_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q4_K, QC_FN(vec_dot_q4_K), GGML_Q8_K);
  set_gemv(k, GGML_Q4_K, QC_FN(gemv_q4_K), GGML_Q8_K);
  set_layout_gemv(k, QC_LAYOUT_Q4_K_R4, QC_FN(gemv_q4_K_r4), GGML_Q8_K, gemv_q4_K_r4_rows, 2);
  set_vec_dot(k, GGML_Q5_K, QC_FN(vec_dot_q5_K), GGML_Q8_K);
  set_gemv(k, GGML_Q5_K, QC_FN(gemv_q5_K), GGML_Q8_K, gemv_q5_K_rows, true);
  set_vec_dot(k, GGML_Q6_K, QC_FN(vec_dot_q6_K), GGML_Q8_K);
  set_gemm(k, GGML_Q4_K, QC_FN(gemm_q4_K), -1, kLongChunk, kTileRows);
  set_layout_gemm(k, QC_LAYOUT_Q4_K_R4, QC_FN(gemm_q4_K_r4));
  set_gemm(k, GGML_Q5_K, QC_FN(gemm_q5_K), -1, kLongChunk, kTileRows);
  set_gemm(k, GGML_Q6_K, QC_FN(gemm_q6_K), -1, kLongChunk, kTileRows);
  set_gemv(k, GGML_Q6_K, QC_FN(gemv_q6_K), GGML_Q8_K, gemv_q6_K_rows, true);
}

// After dispatch.cpp's keep_decode has given these types the avx2 table's decode kernels: Q4_0 in
// 16-row bands (Q4_0_R16: an activation group broadcast to 16 rows straight from memory; the same
// values as the avx2 table's Q4_0_R4T; bench/README.md, "Q4_0 in 16-row bands"), the other R4T
// layouts' gemv and gemv_rows in 512 bits (gemv.cpp), the avx2 Quad arithmetic bit for bit, so
// decode equals the stored rows' avx2 gemv and, for Q4_1/Q5_1, vec_dot. Where 512-bit operations
// run in two halves (Zen 4), one Q8_0_R4T row stays with the avx2 gemv, which reads it faster there
// (bench/README.md, "Q8_0 on Zen 4").
void register_decode_avx512(Kernels& k, const CpuFeatures& cpu) {
  using namespace avx512;
  if (!cpu.avx512vnni) return;
  set_layout_gemv(k, QC_LAYOUT_Q4_0_R16, QC_FN(gemv_q4_0_r16), QC_ACT_Q8_0X4, gemv_q4_0_r16_rows);
  set_layout_gemm(k, QC_LAYOUT_Q4_0_R16, QC_FN(gemm_q4_0_r16));  // gemm_q4_0's kernel over the bands
  set_layout_gemv(k, QC_LAYOUT_Q5_0_R4T, QC_FN(gemv_q5_0_r4t), QC_ACT_Q8_0X4, gemv_q5_0_r4t_rows);
  if (cpu.avx512_halves)
    set_layout_gemv_rows(k, QC_LAYOUT_Q8_0_R4T, gemv_q8_0_r4t_rows);
  else
    set_layout_gemv(k, QC_LAYOUT_Q8_0_R4T, QC_FN(gemv_q8_0_r4t), QC_ACT_Q8_0X4, gemv_q8_0_r4t_rows);
  set_layout_gemv(k, QC_LAYOUT_Q4_1_R4T, QC_FN(gemv_q4_1_r4t), GGML_Q8_1, gemv_q4_1_r4t_rows);
  set_layout_gemv(k, QC_LAYOUT_Q5_1_R4T, QC_FN(gemv_q5_1_r4t), GGML_Q8_1, gemv_q5_1_r4t_rows);
}

}  // namespace qc
