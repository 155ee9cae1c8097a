// AVX-512 table's matrix-matrix tiles (WeightKernels::gemm). The AVX-512 table starts as a copy
// of the AVX2 one and re-registers the vec_dots of the types it has VNNI kernels for, which
// resets their gemm entries. With AVX512-VNNI: the 8-interleaved-rows kernels of
// csrc/avx2/gemm_impl.h (gemm_x8, gemm_kx8) with vpdpbusd (one instruction for 32 byte products
// summed by 4 and accumulated, where AVX2 needs vpmaddubsw + vpmaddwd + vpaddd and cannot take
// Q8_0's full byte range). 256-bit vectors: Zen 4 runs 512-bit ones as two halves, and the
// 8-row lanes fit 256 bits. Without VNNI: the AVX2 kernels again.
#include <cpuid.h>

#include "simd512.h"

#define QC_GEMM_ATTR QC_VNNI
#include "../x86/gemm_impl.h"
#include "../gemm.h"

namespace qc {
namespace avx512 {
namespace {

struct VnniDot {
  // tokens per pass of gemm_x8 over a repacked block (8 int32 sums, 8 float accumulators and 2
  // weight vectors fit the 32 registers; measured 5-10% faster than 4)
  static constexpr int kTokens = 8;
  // acc + 8 int32 lanes, each the sum of 4 adjacent byte products u * s (u unsigned, s signed)
  QC_VNNI static inline __m256i udot_acc(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
  // acc + u0 * s0 + u1 * s1, byte products summed by 4 into the int32 lanes
  QC_VNNI static inline __m256i dot2(__m256i acc, __m256i u0, __m256i s0, __m256i u1, __m256i s1) {
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc, u0, s0), u1, s1);
  }
};

bool cpu_has_vnni() {
  unsigned a, b, c, d;
  // CPUID leaf 7, sub-leaf 0: ECX bit 11 = AVX512_VNNI (the OS support for the AVX-512 state was
  // checked by dispatch.cpp before this table was built)
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 11));
}

}  // namespace
}  // namespace avx512

void register_gemm_kernels_avx512(Kernels& k) {
  register_gemm_kernels_avx2(k);
  if (!avx512::cpu_has_vnni()) return;
  using avx512::VnniDot;
  using namespace gemm;
  k.weight[GGML_Q4_0].gemm = gemm_x8<Q4_0W, VnniDot>;
  k.weight[GGML_Q4_1].gemm = gemm_x8<Q4_1W, VnniDot>;
  k.weight[GGML_Q5_0].gemm = gemm_x8<Q5_0W, VnniDot>;
  k.weight[GGML_Q5_1].gemm = gemm_x8<Q5_1W, VnniDot>;
  k.weight[GGML_Q8_0].gemm = gemm_x8<Q8_0W, VnniDot>;
  for (int32_t type : {GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0}) k.weight[type].gemm_act = QC_ACT_Q8_X8;
  k.weight[GGML_Q4_K].gemm = gemm_kx8<Q4_KW, VnniDot>;
  k.weight[GGML_Q5_K].gemm = gemm_kx8<Q5_KW, VnniDot>;
  k.weight[GGML_Q6_K].gemm = gemm_kx8<Q6_KW, VnniDot>;
}

}  // namespace qc
