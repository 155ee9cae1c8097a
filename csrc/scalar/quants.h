// Shared pieces of the scalar quantized kernels (csrc/scalar/quants*.cpp, gemm.cpp): the kernels
// each file exports, and the unpacking of the packed K-quant scales, which SIMD kernels may
// include too (those are `static inline`, so each translation unit gets its own copy compiled
// with its own flags).
#pragma once
#include <cstdint>

#include "../kernels.h"

namespace qc {

// Q3_K: 16 signed 6-bit sub-block scales (-32..31) packed in 12 bytes:
//   low 4 bits of scale i: byte i % 8, nibble i / 8;
//   high 2 bits of scale i: byte 8 + i % 4, bit pair i / 4.
// scales (12 bytes) -> out (16)
static inline void unpack_q3_K_scales(const uint8_t* scales, int8_t* out) {
  for (int i = 0; i < 16; ++i) {
    const int lo = (scales[i % 8] >> (4 * (i / 8))) & 0x0f;
    const int hi = (scales[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    out[i] = (int8_t)((lo | (hi << 4)) - 32);
  }
}

// Q4_K / Q5_K: 8 unsigned 6-bit scales and 8 unsigned 6-bit mins packed in 12 bytes:
//   j < 4:  scale = bytes[j] & 63,                        min = bytes[j + 4] & 63;
//   j >= 4: scale = (bytes[j + 4] & 15) | (bytes[j - 4] >> 6) << 4,
//           min   = (bytes[j + 4] >> 4) | (bytes[j] >> 6) << 4.
// scales (12 bytes) -> sc (8), mn (8)
static inline void unpack_q4_K_scales(const uint8_t* scales, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = scales[j] & 63;
    mn[j] = scales[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    sc[j] = (uint8_t)((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4));
    mn[j] = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

namespace scalar {
// The kernels of the scalar table (quants.cpp), one per weight type each.
void dequantize_row_f32(const void* x, float* y, int64_t n);  // quants_32.cpp
void dequantize_row_f16(const void* x, float* y, int64_t n);
void dequantize_row_bf16(const void* x, float* y, int64_t n);
#define QC_SCALAR_DEQ(t) void dequantize_row_##t(const void* x, float* y, int64_t n);
#define QC_SCALAR_DOT(t) float vec_dot_##t(int64_t n, const void* w, const void* a);
#define QC_SCALAR_GEMM(t) \
  void gemm_##t(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy);
QC_SCALAR_DEQ(q4_0) QC_SCALAR_DEQ(q4_1) QC_SCALAR_DEQ(q5_0) QC_SCALAR_DEQ(q5_1) QC_SCALAR_DEQ(q8_0)  // quants_32.cpp
QC_SCALAR_DEQ(q2_K) QC_SCALAR_DEQ(q3_K) QC_SCALAR_DEQ(q4_K) QC_SCALAR_DEQ(q5_K) QC_SCALAR_DEQ(q6_K)  // quants_k.cpp
QC_SCALAR_DOT(f32) QC_SCALAR_DOT(f16) QC_SCALAR_DOT(bf16)  // quants_32.cpp
QC_SCALAR_DOT(q4_0_q8_0) QC_SCALAR_DOT(q4_1_q8_1) QC_SCALAR_DOT(q5_0_q8_0) QC_SCALAR_DOT(q5_1_q8_1)
QC_SCALAR_DOT(q8_0_q8_0)
QC_SCALAR_DOT(q2_K_q8_K) QC_SCALAR_DOT(q3_K_q8_K) QC_SCALAR_DOT(q4_K_q8_K) QC_SCALAR_DOT(q5_K_q8_K)  // quants_k.cpp
QC_SCALAR_DOT(q6_K_q8_K)
// gemm.cpp: y[i * ldy + j] = the vec_dot above of weight row j with activation row i
QC_SCALAR_GEMM(f32) QC_SCALAR_GEMM(f16) QC_SCALAR_GEMM(bf16)
QC_SCALAR_GEMM(q4_0) QC_SCALAR_GEMM(q4_1) QC_SCALAR_GEMM(q5_0) QC_SCALAR_GEMM(q5_1) QC_SCALAR_GEMM(q8_0)
QC_SCALAR_GEMM(q2_K) QC_SCALAR_GEMM(q3_K) QC_SCALAR_GEMM(q4_K) QC_SCALAR_GEMM(q5_K) QC_SCALAR_GEMM(q6_K)
// quants_32.cpp: the float types' decode forms, y[r] = the vec_dot above of weight row r
void gemv_f32(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y);
void gemv_f16(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y);
void gemv_bf16(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y);
#define QC_SCALAR_GEMV_ROWS(t) \
  void gemv_##t##_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y, size_t ys);
QC_SCALAR_GEMV_ROWS(f32) QC_SCALAR_GEMV_ROWS(f16) QC_SCALAR_GEMV_ROWS(bf16)
#undef QC_SCALAR_GEMV_ROWS
#undef QC_SCALAR_DEQ
#undef QC_SCALAR_DOT
#undef QC_SCALAR_GEMM
}  // namespace scalar

}  // namespace qc
