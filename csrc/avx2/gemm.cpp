// AVX2 matrix-matrix kernels (WeightKernels::gemm) of the quantized weight types: the templates of
// gemm_impl.h with the integer dot products of this compilation (simd.h): vpmaddubsw + vpmaddwd
// (avx2), or vpdpbusd (avxvnni, avxvnni_evex).
//
// AVX2: most types use the 8-interleaved-rows kernels (gemm_x8, gemm_kx8). Q8_0 cannot (its byte
// products with a + 128 overflow vpmaddubsw's int16 pairs) and uses the R x C tile, 4 x 2 for
// the 16 ymm registers: 8 float accumulators plus 4 unpacked weight blocks live across the
// block loop. The 8-row kernels ran 2-3x the R x C tiles' speed (bench/README.md, "Kernel design measurements").
// VNNI: vpdpbusd sums 4 byte products into int32 with no int16 stage, so every type, Q8_0
// included, takes the 8-row kernels (as csrc/avx512/gemm.cpp does, but with 4 tokens per pass:
// the VEX encoding names only 16 ymm registers).
#define QC_GEMM_ATTR
#include "simd.h"
#include "../x86/gemm_impl.h"

namespace qc {
namespace QC_AVX2_NS {
namespace {

#ifndef QC_DOT_VNNI
struct Dot {
  // tokens per pass of gemm_x8 over a repacked block: 4 int32 sums, 4 float accumulators and 2
  // weight vectors within the 16 ymm registers
  static constexpr int kTokens = 4;
  // acc + 8 int32 lanes, each the sum of 4 adjacent byte products u * s (u unsigned, s signed;
  // vpmaddubsw's int16 pair sums cannot saturate while u * |s| <= 16383, true of every caller)
  static inline __m256i udot_acc(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
  // acc + u0 * s0 + u1 * s1 summed by 4 into the int32 lanes; the int16 sums of the two
  // vpmaddubsw must stay below 2^15: callers have u <= 255, |s| <= 31 (4 * 255 * 31 < 2^15)
  static inline __m256i dot2(__m256i acc, __m256i u0, __m256i s0, __m256i u1, __m256i s1) {
    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(u0, s0), _mm256_maddubs_epi16(u1, s1));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
};
constexpr int kR32 = 4, kC32 = 2;  // Q8_0's tile
#else
struct Dot {
  static constexpr int kTokens = 4;  // as above: 16 ymm registers
  // acc + 8 int32 lanes, each the sum of 4 adjacent byte products u * s (exact)
  static inline __m256i udot_acc(__m256i acc, __m256i u, __m256i s) { return dpbusd(acc, u, s); }
  static inline __m256i dot2(__m256i acc, __m256i u0, __m256i s0, __m256i u1, __m256i s1) {
    return dpbusd(dpbusd(acc, u0, s0), u1, s1);
  }
};
#endif

}  // namespace

// WeightKernels::gemm of the quantized types: 8 rows interleaved where |q - offset| <= 31 (AVX2:
// the products fit vpmaddubsw's int16 pairs)
void gemm_q4_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q4_0W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q4_1(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q4_1W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q5_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q5_0W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q5_1(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q5_1W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
#ifdef QC_DOT_VNNI
void gemm_q8_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q8_0W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
#else
// Q8_0's |w| <= 128 times a + 128 <= 255 would saturate them: R x C tiles with the signs moved
void gemm_q8_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_32<gemm::Q8_0W, Dot, kR32, kC32>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
#endif
void gemm_q4_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_kx8<gemm::Q4_KW, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q5_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_kx8<gemm::Q5_KW, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q6_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_kx8<gemm::Q6_KW, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}

}  // namespace QC_AVX2_NS
}  // namespace qc
