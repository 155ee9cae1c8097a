// The AVX-512 table's matrix-matrix tiles (WeightKernels::gemm) of the 32-element types, with
// AVX512-VNNI (registered only where the CPU has it): the 8-interleaved-rows kernels of
// csrc/x86/gemm_impl.h with vpdpbusd (one instruction for 32 byte products summed by 4 and
// accumulated, where AVX2 needs vpmaddubsw + vpmaddwd + vpaddd and cannot take Q8_0's full byte
// range). 256-bit vectors: Zen 4 runs 512-bit ones as two halves, and the 8-row lanes fit 256
// bits; 8 tokens per pass in the 32 registers. The K-quant tiles (16 rows): gemm_k.cpp.
#include "simd512.h"

#define QC_GEMM_ATTR QC_VNNI
#include "../x86/gemm_impl.h"

namespace qc {
namespace avx512 {
namespace {

struct VnniDot {
  // tokens per pass of gemm_x8 over a repacked block (8 int32 sums, 8 float accumulators and 2
  // weight vectors fit the 32 registers; measured 5-10% faster than 4)
  static constexpr int kTokens = 8;
  // acc + u0 * s0 + u1 * s1, byte products summed by 4 into the int32 lanes
  QC_VNNI static inline __m256i dot2(__m256i acc, __m256i u0, __m256i s0, __m256i u1, __m256i s1) {
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc, u0, s0), u1, s1);
  }
};

}  // namespace

// WeightKernels::gemm of the 32-element types (table.cpp)
QC_VNNI void gemm_q4_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm::gemm_x8<gemm::Q4_0W, VnniDot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q4_1(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm::gemm_x8<gemm::Q4_1W, VnniDot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q5_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm::gemm_x8<gemm::Q5_0W, VnniDot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q5_1(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm::gemm_x8<gemm::Q5_1W, VnniDot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q8_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm::gemm_x8<gemm::Q8_0W, VnniDot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}

}  // namespace avx512

}  // namespace qc
