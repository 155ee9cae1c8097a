// The AVX2 kernels' per-compilation pieces: the namespace and entry names of each dot-product
// variant and its VNNI primitives (the ISA-neutral 256-bit helpers: csrc/x86/simd256.h).
// Only included by translation units compiled with -mavx2 -mfma -mf16c; everything is
// `static inline` so no AVX2 code can leak into the baseline through the linker.
//
// The quantized-kernel sources of this directory (quants*.cpp, gemm.cpp) are compiled more than once
// (CMakeLists.txt), each time into its own namespace and kernel table, with QC_DOT_VNNI choosing
// the integer dot-product instructions:
//   (unset)  namespace avx2:         vpmaddubsw + vpmaddwd (AVX2), the "avx2" table;
//   1        namespace avxvnni:      VEX vpdpbusd / vpdpwssd (AVX-VNNI, -mavxvnni): the "avxvnni"
//                                    table for Alder Lake and later Intel client cores and Zen 5;
//   2        namespace avxvnni_evex: the same two instructions EVEX-encoded (AVX512-VNNI + VL), a
//                                    test twin of 1 (see dpbusd below).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "../kernels.h"
#include "../x86/simd256.h"

#if !defined(QC_DOT_VNNI)
#define QC_AVX2_NS avx2
#elif QC_DOT_VNNI == 1
#define QC_AVX2_NS avxvnni
#elif QC_DOT_VNNI == 2
#define QC_AVX2_NS avxvnni_evex
#else
#error "QC_DOT_VNNI must be 1 (VEX) or 2 (EVEX test twin)"
#endif
// The global entry points of each compilation: name##_avx2, name##_avxvnni, name##_avxvnni_evex.
#define QC_AVX2_CAT2(a, b) a##_##b
#define QC_AVX2_CAT(a, b) QC_AVX2_CAT2(a, b)
#define QC_AVX2_ENTRY(name) QC_AVX2_CAT(name, QC_AVX2_NS)
#define QC_AVX2_STR2(x) #x
#define QC_AVX2_STR(x) QC_AVX2_STR2(x)
#undef QC_KERNEL_PREFIX
#define QC_KERNEL_PREFIX QC_AVX2_STR(QC_AVX2_NS) "::"  // kernel names (kernels.h, QC_FN)

namespace qc {
namespace QC_AVX2_NS {

using namespace x86;  // the 256-bit helpers shared with csrc/avx512 (csrc/x86/simd256.h)

// The kernels each translation unit exports, listed by the table (quants.cpp). Only these are
// global, each in this compilation's own namespace: the ISA object check (.ci/test-x86-baseline) holds it.
void quantize_row_q8_0(const float* x, void* y, int64_t n);  // quants_32.cpp
void quantize_row_q8_1(const float* x, void* y, int64_t n);
void quantize_row_q8_K(const float* x, void* y, int64_t n);  // quants_k.cpp
#define QC_AVX2_VEC_DOT(t) float vec_dot_##t(int64_t n, const void* w, const void* a);
QC_AVX2_VEC_DOT(f32) QC_AVX2_VEC_DOT(f16) QC_AVX2_VEC_DOT(bf16)                             // quants_32.cpp
QC_AVX2_VEC_DOT(q4_0) QC_AVX2_VEC_DOT(q4_1) QC_AVX2_VEC_DOT(q5_0) QC_AVX2_VEC_DOT(q5_1) QC_AVX2_VEC_DOT(q8_0)
QC_AVX2_VEC_DOT(q2_K) QC_AVX2_VEC_DOT(q3_K) QC_AVX2_VEC_DOT(q4_K) QC_AVX2_VEC_DOT(q5_K)  // quants_k.cpp
QC_AVX2_VEC_DOT(q6_K)
#undef QC_AVX2_VEC_DOT
#define QC_AVX2_GEMV(t) void gemv_##t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y);
QC_AVX2_GEMV(f32) QC_AVX2_GEMV(f16) QC_AVX2_GEMV(bf16)                             // quants_32.cpp
QC_AVX2_GEMV(q4_0) QC_AVX2_GEMV(q5_0) QC_AVX2_GEMV(q4_0_r4t) QC_AVX2_GEMV(q5_0_r4t)  // gemv.cpp
QC_AVX2_GEMV(q8_0_r4t) QC_AVX2_GEMV(q8_0_r4t_hw)                                     // gemv.cpp
QC_AVX2_GEMV(q4_K) QC_AVX2_GEMV(q4_K_r4) QC_AVX2_GEMV(q5_K) QC_AVX2_GEMV(q5_K_r4) QC_AVX2_GEMV(q6_K)  // gemv_k.cpp
QC_AVX2_GEMV(q4_1) QC_AVX2_GEMV(q4_1_r4t) QC_AVX2_GEMV(q5_1) QC_AVX2_GEMV(q5_1_r4t)  // gemv_32.cpp
QC_AVX2_GEMV(q8_0)
#undef QC_AVX2_GEMV
#define QC_AVX2_GEMV_ROWS(t) \
  void gemv_##t##_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y, size_t ys);
QC_AVX2_GEMV_ROWS(f32) QC_AVX2_GEMV_ROWS(f16) QC_AVX2_GEMV_ROWS(bf16)                   // quants_32.cpp
QC_AVX2_GEMV_ROWS(q4_0) QC_AVX2_GEMV_ROWS(q5_0) QC_AVX2_GEMV_ROWS(q4_0_r4t) QC_AVX2_GEMV_ROWS(q5_0_r4t)  // gemv.cpp
QC_AVX2_GEMV_ROWS(q8_0_r4t)                                                                    // gemv.cpp
QC_AVX2_GEMV_ROWS(q4_K_r4) QC_AVX2_GEMV_ROWS(q5_K) QC_AVX2_GEMV_ROWS(q5_K_r4) QC_AVX2_GEMV_ROWS(q6_K)  // gemv_k.cpp
QC_AVX2_GEMV_ROWS(q4_1) QC_AVX2_GEMV_ROWS(q4_1_r4t) QC_AVX2_GEMV_ROWS(q5_1)          // gemv_32.cpp
QC_AVX2_GEMV_ROWS(q5_1_r4t) QC_AVX2_GEMV_ROWS(q8_0)
#undef QC_AVX2_GEMV_ROWS
#define QC_AVX2_GEMM(t) \
  void gemm_##t(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy);
QC_AVX2_GEMM(f32) QC_AVX2_GEMM(f16) QC_AVX2_GEMM(bf16)  // quants_32.cpp
QC_AVX2_GEMM(q4_0) QC_AVX2_GEMM(q4_1) QC_AVX2_GEMM(q5_0) QC_AVX2_GEMM(q5_1) QC_AVX2_GEMM(q8_0)  // gemm.cpp
QC_AVX2_GEMM(q4_K) QC_AVX2_GEMM(q5_K) QC_AVX2_GEMM(q6_K)
QC_AVX2_GEMM(q8_0_r4t) QC_AVX2_GEMM(q4_0_r4t) QC_AVX2_GEMM(q4_1_r4t)  // gemm.cpp: over the R4T layouts
QC_AVX2_GEMM(q5_0_r4t) QC_AVX2_GEMM(q5_1_r4t) QC_AVX2_GEMM(q4_K_r4) QC_AVX2_GEMM(q5_K_r4)
#undef QC_AVX2_GEMM
// Weight rows per tile and tokens per call at least of the K-quant and Q8_0 gemms (gemm.cpp), which
// the table registers (quants.cpp): their AVX2 tiles (gemm_k_int_rows, gemm_q8_0_wide) are 16 rows,
// repacked once per call, hence 128 tokens (bench/README.md, "The AVX2 K-quant tile, 16 rows"); the
// VNNI compilations' gemm_kx8 and gemm_x8 take the defaults.
#ifdef QC_DOT_VNNI
constexpr int kTileRows = kGemmRows, kTileChunk = kGemmMinTokens;
#else
constexpr int kTileRows = 16, kTileChunk = 128;
#endif

// An empty asm on each updated int32 sum: GCC otherwise reassociates a chain of vpaddd (integer
// adds are associative), keeps every product of the chain live at once and spills them to the
// stack (bench/README.md, "Kernel design measurements"). On a named variable: gcc keeps an array
// element under it on the stack.
static inline void keep_order(__m256i& sum) { __asm__("" : "+v"(sum)); }

// The regrouping of the decode kernels' "Quad" form (gemv.cpp, gemv_32.cpp), which puts four
// weight rows side by side, one per 32-bit lane: v[r] row r's 32 bytes (16 of block k, 16 of
// block k + 1) -> out[j]: bytes 4j .. 4j + 3 of rows 0, 1, 2, 3 in each half.
static inline void transpose4(const __m256i v[4], __m256i out[4]) {
  const __m256i a = _mm256_unpacklo_epi32(v[0], v[1]), b = _mm256_unpackhi_epi32(v[0], v[1]);
  const __m256i c = _mm256_unpacklo_epi32(v[2], v[3]), e = _mm256_unpackhi_epi32(v[2], v[3]);
  out[0] = _mm256_unpacklo_epi64(a, c), out[1] = _mm256_unpackhi_epi64(a, c);
  out[2] = _mm256_unpacklo_epi64(b, e), out[3] = _mm256_unpackhi_epi64(b, e);
}
// The 5th bits of an R4T layout's pair of blocks (repack.h: Q5_0_R4T, Q5_1_R4T) OR-ed into its
// Quad values as 0x10: p the pair's bit planes, bit j of each byte for lo[j], bit 4 + j for hi[j],
// each moved to bit 4 by one shift.
static inline void or_fifth_bits(__m256i p, __m256i lo[4], __m256i hi[4]) {
  const __m256i fifth = _mm256_set1_epi8(0x10);
  const __m256i lo5[4] = {_mm256_slli_epi16(p, 4), _mm256_slli_epi16(p, 3), _mm256_slli_epi16(p, 2),
                          _mm256_slli_epi16(p, 1)};
  const __m256i hi5[4] = {p, _mm256_srli_epi16(p, 1), _mm256_srli_epi16(p, 2), _mm256_srli_epi16(p, 3)};
  for (int j = 0; j < 4; ++j) {
    lo[j] = _mm256_or_si256(lo[j], _mm256_and_si256(lo5[j], fifth));
    hi[j] = _mm256_or_si256(hi[j], _mm256_and_si256(hi5[j], fifth));
  }
}
// int32 lane J of each 128-bit half of x in all four lanes of that half
template <int J>
static inline __m256i bcast32(__m256i x) {
  return _mm256_shuffle_epi32(x, J * 0x55);
}

#ifdef QC_DOT_VNNI
// The VNNI dot-product primitives. dpbusd: acc + 8 int32 lanes, lane i the sum of the 4 byte
// products u[4i+k] * s[4i+k] (u unsigned, s signed), exact (no intermediate saturation).
// dpwssd: acc + 8 int32 lanes, lane i = x[2i] y[2i] + x[2i+1] y[2i+1] (int16 words).
#if QC_DOT_VNNI == 1
static inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
static inline __m256i dpwssd(__m256i acc, __m256i x, __m256i y) { return _mm256_dpwssd_avx_epi32(acc, x, y); }
#else
// Test twin: AVX-VNNI is rare on the machines we test on (docs/cpus.md) and qemu's TCG does not emulate it,
// so the kernels of this directory are also built with the EVEX form of the same instructions
// (csrc/x86/simd256.h) and run wherever the CPU has AVX512-VNNI + VL. Everything else in this
// object is the VEX code of the shipped variant. The shipped variant's own binary is only checked
// statically (.ci/test-x86-baseline).
static inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) { return dpbusd_evex(acc, u, s); }
static inline __m256i dpwssd(__m256i acc, __m256i x, __m256i y) { return dpwssd_evex(acc, x, y); }
#endif
#endif

}  // namespace QC_AVX2_NS
}  // namespace qc
