// The AVX2 (+FMA, F16C) table, weight type by weight type: dot products of every weight type we
// read against its activation format, the prefill gemm and decode gemv with theirs, and the
// activation quantizers. Dequantization stays the inherited scalar one (embedding lookups and
// offline conversion, never a matrix product), so do the F32 activations (a plain copy).
// Compiled once per dot-product variant (simd.h): this defines register_quant_kernels_avx2,
// _avxvnni or _avxvnni_evex (kernels.h), each listing the kernels of its own namespace. The
// variants differ in Q8_0's entries alone: its gemm (see gemm.cpp), chosen there, and its gemv
// (the avx2 table only, below); the Q4_1 and Q5_1 gemvs (gemv_32.cpp) have a VNNI form.
#include "simd.h"

#include "../act_q8_0x4.h"
#include "../act_q8_x8.h"

namespace qc {

void QC_AVX2_ENTRY(register_quant_kernels)(Kernels& k, const CpuFeatures& cpu) {
  using namespace QC_AVX2_NS;
  k.quantize_act[GGML_Q8_0] = quantize_row_q8_0;
  k.quantize_act[GGML_Q8_1] = quantize_row_q8_1;
  k.quantize_act[GGML_Q8_K] = quantize_row_q8_K;
  k.quantize_act[QC_ACT_Q8_0X4] = quantize_row_q8_0x4<quantize_row_q8_0>;  // the decode gemvs'
  k.quantize_act[QC_ACT_Q8_X8] = quantize_row_q8_x8<quantize_row_q8_1>;   // the prefill gemms'
  k.quantize_act[QC_ACT_Q8_0F] = quantize_row_q8_0f<quantize_row_q8_0>;   // gemm_q8_0's without VNNI

  set_vec_dot(k, GGML_F32, QC_FN(vec_dot_f32), GGML_F32);
  set_gemv(k, GGML_F32, QC_FN(gemv_f32), GGML_F32, gemv_f32_rows, true);
  set_gemm(k, GGML_F32, QC_FN(gemm_f32));
  set_vec_dot(k, GGML_F16, QC_FN(vec_dot_f16), GGML_F32);
  set_gemv(k, GGML_F16, QC_FN(gemv_f16), GGML_F32, gemv_f16_rows, true);
  set_gemm(k, GGML_F16, QC_FN(gemm_f16));
  set_vec_dot(k, GGML_BF16, QC_FN(vec_dot_bf16), GGML_F32);
  set_gemv(k, GGML_BF16, QC_FN(gemv_bf16), GGML_F32, gemv_bf16_rows, true);
  set_gemm(k, GGML_BF16, QC_FN(gemm_bf16));

  set_vec_dot(k, GGML_Q4_0, QC_FN(vec_dot_q4_0), GGML_Q8_0);
  set_gemm(k, GGML_Q4_0, QC_FN(gemm_q4_0), QC_ACT_Q8_X8);
  set_gemv(k, GGML_Q4_0, QC_FN(gemv_q4_0), QC_ACT_Q8_0X4, gemv_q4_0_rows, true);
  set_layout_gemv(k, QC_LAYOUT_Q4_0_R4T, QC_FN(gemv_q4_0_r4t), QC_ACT_Q8_0X4, gemv_q4_0_r4t_rows);
  set_layout_gemm(k, QC_LAYOUT_Q4_0_R4T, QC_FN(gemm_q4_0_r4t));  // gemm_q4_0's kernel over the tiles

  set_vec_dot(k, GGML_Q4_1, QC_FN(vec_dot_q4_1), GGML_Q8_1);
  set_gemm(k, GGML_Q4_1, QC_FN(gemm_q4_1), QC_ACT_Q8_X8);
  set_gemv(k, GGML_Q4_1, QC_FN(gemv_q4_1), GGML_Q8_1, gemv_q4_1_rows, true);
  set_layout_gemv(k, QC_LAYOUT_Q4_1_R4T, QC_FN(gemv_q4_1_r4t), GGML_Q8_1, gemv_q4_1_r4t_rows);
  set_layout_gemm(k, QC_LAYOUT_Q4_1_R4T, QC_FN(gemm_q4_1_r4t));

  set_vec_dot(k, GGML_Q5_0, QC_FN(vec_dot_q5_0), GGML_Q8_0);
  set_gemm(k, GGML_Q5_0, QC_FN(gemm_q5_0), QC_ACT_Q8_X8);
  set_gemv(k, GGML_Q5_0, QC_FN(gemv_q5_0), QC_ACT_Q8_0X4, gemv_q5_0_rows, true);
  set_layout_gemv(k, QC_LAYOUT_Q5_0_R4T, QC_FN(gemv_q5_0_r4t), QC_ACT_Q8_0X4, gemv_q5_0_r4t_rows);
  set_layout_gemm(k, QC_LAYOUT_Q5_0_R4T, QC_FN(gemm_q5_0_r4t));

  set_vec_dot(k, GGML_Q5_1, QC_FN(vec_dot_q5_1), GGML_Q8_1);
  set_gemm(k, GGML_Q5_1, QC_FN(gemm_q5_1), QC_ACT_Q8_X8);
  set_gemv(k, GGML_Q5_1, QC_FN(gemv_q5_1), GGML_Q8_1, gemv_q5_1_rows, true);
  set_layout_gemv(k, QC_LAYOUT_Q5_1_R4T, QC_FN(gemv_q5_1_r4t), GGML_Q8_1, gemv_q5_1_r4t_rows);
  set_layout_gemm(k, QC_LAYOUT_Q5_1_R4T, QC_FN(gemm_q5_1_r4t));

  set_vec_dot(k, GGML_Q8_0, QC_FN(vec_dot_q8_0), GGML_Q8_0);
#ifdef QC_DOT_VNNI
  set_gemm(k, GGML_Q8_0, QC_FN(gemm_q8_0), QC_ACT_Q8_X8);
#else
  set_gemm(k, GGML_Q8_0, QC_FN(gemm_q8_0), QC_ACT_Q8_0F, kTileChunk, kTileRows);  // its int16 tile (gemm.cpp)
#endif
#ifndef QC_DOT_VNNI
  // vpmaddubsw form only: unmeasured against the VNNI vec_dot (gemv_32.cpp)
  set_gemv(k, GGML_Q8_0, QC_FN(gemv_q8_0), GGML_Q8_0, gemv_q8_0_rows, true);
#endif
  // Zen 4 (which keeps this one-row gemv in its avx512 table) streams these tiles faster with its
  // hardware prefetchers alone but in rows longer than a panel (bench/README.md, "Column panels")
  if (cpu.avx512_halves)
    set_layout_gemv(k, QC_LAYOUT_Q8_0_R4T, QC_FN(gemv_q8_0_r4t_hw), QC_ACT_Q8_0X4, gemv_q8_0_r4t_rows);
  else
    set_layout_gemv(k, QC_LAYOUT_Q8_0_R4T, QC_FN(gemv_q8_0_r4t), QC_ACT_Q8_0X4, gemv_q8_0_r4t_rows);
  set_layout_gemm(k, QC_LAYOUT_Q8_0_R4T, QC_FN(gemm_q8_0_r4t));  // gemm_q8_0's kernel over the tiles

  set_vec_dot(k, GGML_Q2_K, QC_FN(vec_dot_q2_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q3_K, QC_FN(vec_dot_q3_K), GGML_Q8_K);
  set_vec_dot(k, GGML_Q4_K, QC_FN(vec_dot_q4_K), GGML_Q8_K);
  set_gemm(k, GGML_Q4_K, QC_FN(gemm_q4_K), -1, kTileChunk, kTileRows);
  set_gemv(k, GGML_Q4_K, QC_FN(gemv_q4_K), GGML_Q8_K);
  set_layout_gemv(k, QC_LAYOUT_Q4_K_R4, QC_FN(gemv_q4_K_r4), GGML_Q8_K, gemv_q4_K_r4_rows);
  set_layout_gemm(k, QC_LAYOUT_Q4_K_R4, QC_FN(gemm_q4_K_r4));
  set_vec_dot(k, GGML_Q5_K, QC_FN(vec_dot_q5_K), GGML_Q8_K);
  set_gemm(k, GGML_Q5_K, QC_FN(gemm_q5_K), -1, kTileChunk, kTileRows);
  set_gemv(k, GGML_Q5_K, QC_FN(gemv_q5_K), GGML_Q8_K, gemv_q5_K_rows, true);
  set_layout_gemv(k, QC_LAYOUT_Q5_K_R4, QC_FN(gemv_q5_K_r4), GGML_Q8_K, gemv_q5_K_r4_rows);
  set_layout_gemm(k, QC_LAYOUT_Q5_K_R4, QC_FN(gemm_q5_K_r4));
  set_vec_dot(k, GGML_Q6_K, QC_FN(vec_dot_q6_K), GGML_Q8_K);
  set_gemm(k, GGML_Q6_K, QC_FN(gemm_q6_K), -1, kTileChunk, kTileRows);
  set_gemv(k, GGML_Q6_K, QC_FN(gemv_q6_K), GGML_Q8_K, gemv_q6_K_rows, true);
}

}  // namespace qc
