// Scalar activation formats (Q8_0, Q8_1, Q8_K, F32) and the registration of every scalar
// quantized kernel. The activation quantizers define the formats: every SIMD quantizer must
// produce the same bytes for the same input (round to nearest even throughout, which is what
// lrintf does under the default rounding mode and what _mm256_cvtps_epi32 does), so that SIMD
// dot products can be tested against these on identical data.
#include <cmath>
#include <cstring>

#include "quants.h"
#include "../act_q8_0x4.h"
#include "../act_q8_x8.h"

#define QC_KERNEL_PREFIX "scalar::"  // kernel names (kernels.h, QC_FN)

namespace qc {
namespace scalar {
namespace {

// Largest |x[i]| over n values (NaN values are skipped by the comparison).
static inline float abs_max(const float* x, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float v = std::fabs(x[i]);
    if (v > amax) amax = v;
  }
  return amax;
}

// Q8_0 block: d = amax / 127, q = round(x / d); d stored as f16, the quants computed from the
// unrounded d. x (32) -> b; returns d before rounding (Q8_1 needs it).
static inline float quantize_block_q8_0(const float* x, int8_t* qs, half_t* d_out) {
  const float d = abs_max(x, QK8_0) / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < QK8_0; ++j) qs[j] = (int8_t)lrintf(x[j] * id);
  *d_out = fp32_to_fp16(d);
  return d;
}

// x (n) -> y (n / 32 blocks)
void quantize_row_q8_0(const float* x, void* vy, int64_t n) {
  block_q8_0* y = static_cast<block_q8_0*>(vy);
  for (int64_t i = 0; i < n / QK8_0; ++i) quantize_block_q8_0(x + i * QK8_0, y[i].qs, &y[i].d);
}

// x (n) -> y (n / 32 blocks): Q8_0 plus s = d * sum(q), the block sum the Q4_1/Q5_1 min needs.
void quantize_row_q8_1(const float* x, void* vy, int64_t n) {
  block_q8_1* y = static_cast<block_q8_1*>(vy);
  for (int64_t i = 0; i < n / QK8_1; ++i) {
    const float d = quantize_block_q8_0(x + i * QK8_1, y[i].qs, &y[i].d);
    int32_t sum = 0;
    for (int j = 0; j < QK8_1; ++j) sum += y[i].qs[j];
    y[i].s = fp32_to_fp16(d * (float)sum);
  }
}

// x (n) -> y (n / 256 blocks): d = amax / 127 kept as float, q clamped to 127 (x * iscale may
// round up past it), bsums[j] = sum of q[16 j .. 16 j + 15].
void quantize_row_q8_K(const float* x, void* vy, int64_t n) {
  block_q8_K* y = static_cast<block_q8_K*>(vy);
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    const float amax = abs_max(x, QK_K);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(block_q8_K));
      continue;
    }
    const float iscale = 127.0f / amax;
    y[i].d = 1.0f / iscale;
    for (int j = 0; j < QK_K; ++j) {
      const long q = lrintf(x[j] * iscale);
      y[i].qs[j] = (int8_t)(q < 127 ? q : 127);
    }
    for (int j = 0; j < QK_K / 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * j + l];
      y[i].bsums[j] = (int16_t)sum;
    }
  }
}

// x (n) -> y (n floats): the activation format of the float weight types.
void quantize_row_f32(const float* x, void* y, int64_t n) { std::memcpy(y, x, (size_t)n * sizeof(float)); }

// Dequantizers of the activation formats (for tests and debugging): value d * q.
// x (n / 32 blocks) -> y (n)
void dequantize_row_q8_1(const void* x, float* y, int64_t n) {
  const block_q8_1* b = static_cast<const block_q8_1*>(x);
  for (int64_t i = 0; i < n / QK8_1; ++i, y += QK8_1) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < QK8_1; ++j) y[j] = (float)b[i].qs[j] * d;
  }
}

// x (n / 256 blocks) -> y (n)
void dequantize_row_q8_K(const void* x, float* y, int64_t n) {
  const block_q8_K* b = static_cast<const block_q8_K*>(x);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K)
    for (int j = 0; j < QK_K; ++j) y[j] = (float)b[i].qs[j] * b[i].d;
}

}  // namespace
}  // namespace scalar

// The scalar table, weight type by weight type: dequantizer, dot product against its activation
// format, and the prefill gemm (one vec_dot per output: the scalar matrix-matrix path computes
// exactly what its matrix-vector path does; the SIMD gemms are tested against it). Scalar gemvs
// only for the float types, with their several-row form (the values of vec_dot); the quantized
// types' would gain nothing here. The SIMD tables start from this one (dispatch.cpp, start_from).
void register_quant_kernels_scalar(Kernels& k) {
  using namespace scalar;
  k.quantize_act[GGML_F32] = quantize_row_f32;
  k.quantize_act[GGML_Q8_0] = quantize_row_q8_0;
  k.quantize_act[GGML_Q8_1] = quantize_row_q8_1;
  k.quantize_act[GGML_Q8_K] = quantize_row_q8_K;
  // The reference for the SIMD paths' decode and prefill layouts.
  k.quantize_act[QC_ACT_Q8_0X4] = quantize_row_q8_0x4<quantize_row_q8_0>;
  k.quantize_act[QC_ACT_Q8_X8] = quantize_row_q8_x8<quantize_row_q8_1>;
  k.quantize_act[QC_ACT_Q8_0F] = quantize_row_q8_0f<quantize_row_q8_0>;
  k.dequantize[GGML_Q8_1] = dequantize_row_q8_1;
  k.dequantize[GGML_Q8_K] = dequantize_row_q8_K;

  k.dequantize[GGML_F32] = dequantize_row_f32;
  set_vec_dot(k, GGML_F32, QC_FN(vec_dot_f32), GGML_F32);
  set_gemm(k, GGML_F32, QC_FN(gemm_f32));
  set_gemv(k, GGML_F32, QC_FN(gemv_f32), GGML_F32, gemv_f32_rows, true);
  k.dequantize[GGML_F16] = dequantize_row_f16;
  set_vec_dot(k, GGML_F16, QC_FN(vec_dot_f16), GGML_F32);
  set_gemm(k, GGML_F16, QC_FN(gemm_f16));
  set_gemv(k, GGML_F16, QC_FN(gemv_f16), GGML_F32, gemv_f16_rows, true);
  k.dequantize[GGML_BF16] = dequantize_row_bf16;
  set_vec_dot(k, GGML_BF16, QC_FN(vec_dot_bf16), GGML_F32);
  set_gemm(k, GGML_BF16, QC_FN(gemm_bf16));
  set_gemv(k, GGML_BF16, QC_FN(gemv_bf16), GGML_F32, gemv_bf16_rows, true);

  k.dequantize[GGML_Q4_0] = dequantize_row_q4_0;
  set_vec_dot(k, GGML_Q4_0, QC_FN(vec_dot_q4_0_q8_0), GGML_Q8_0);
  set_gemm(k, GGML_Q4_0, QC_FN(gemm_q4_0));
  k.dequantize[GGML_Q4_1] = dequantize_row_q4_1;
  set_vec_dot(k, GGML_Q4_1, QC_FN(vec_dot_q4_1_q8_1), GGML_Q8_1);
  set_gemm(k, GGML_Q4_1, QC_FN(gemm_q4_1));
  k.dequantize[GGML_Q5_0] = dequantize_row_q5_0;
  set_vec_dot(k, GGML_Q5_0, QC_FN(vec_dot_q5_0_q8_0), GGML_Q8_0);
  set_gemm(k, GGML_Q5_0, QC_FN(gemm_q5_0));
  k.dequantize[GGML_Q5_1] = dequantize_row_q5_1;
  set_vec_dot(k, GGML_Q5_1, QC_FN(vec_dot_q5_1_q8_1), GGML_Q8_1);
  set_gemm(k, GGML_Q5_1, QC_FN(gemm_q5_1));
  k.dequantize[GGML_Q8_0] = dequantize_row_q8_0;
  set_vec_dot(k, GGML_Q8_0, QC_FN(vec_dot_q8_0_q8_0), GGML_Q8_0);
  set_gemm(k, GGML_Q8_0, QC_FN(gemm_q8_0));

  k.dequantize[GGML_Q2_K] = dequantize_row_q2_K;
  set_vec_dot(k, GGML_Q2_K, QC_FN(vec_dot_q2_K_q8_K), GGML_Q8_K);
  set_gemm(k, GGML_Q2_K, QC_FN(gemm_q2_K));
  k.dequantize[GGML_Q3_K] = dequantize_row_q3_K;
  set_vec_dot(k, GGML_Q3_K, QC_FN(vec_dot_q3_K_q8_K), GGML_Q8_K);
  set_gemm(k, GGML_Q3_K, QC_FN(gemm_q3_K));
  k.dequantize[GGML_Q4_K] = dequantize_row_q4_K;
  set_vec_dot(k, GGML_Q4_K, QC_FN(vec_dot_q4_K_q8_K), GGML_Q8_K);
  set_gemm(k, GGML_Q4_K, QC_FN(gemm_q4_K));
  k.dequantize[GGML_Q5_K] = dequantize_row_q5_K;
  set_vec_dot(k, GGML_Q5_K, QC_FN(vec_dot_q5_K_q8_K), GGML_Q8_K);
  set_gemm(k, GGML_Q5_K, QC_FN(gemm_q5_K));
  k.dequantize[GGML_Q6_K] = dequantize_row_q6_K;
  set_vec_dot(k, GGML_Q6_K, QC_FN(vec_dot_q6_K_q8_K), GGML_Q8_K);
  set_gemm(k, GGML_Q6_K, QC_FN(gemm_q6_K));
}

}  // namespace qc
