// AVX-512 (F, BW, VL, DQ) helpers for the AVX-512 quantized kernels. Only included by
// translation units compiled with the AVX-512 flags; everything is `static inline`. The kernels
// also use AVX512-VNNI (vpdpbusd, vpdpwssd), which dispatch.cpp does not require: functions
// that use it carry QC_VNNI and are registered only where dispatch.cpp's probe found it (quants.cpp).
#pragma once
// GCC 12 reports the self-initialised placeholders of _mm512_undefined_* (used inside many
// AVX-512 intrinsics) as uninitialised once they are inlined into functions with a target
// attribute (QC_VNNI below); the values are don't-care by design.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "../kernels.h"
#include "../x86/simd256.h"  // the 256-bit helpers (hsum_ps, scale decoders), compiled here with these flags

#define QC_VNNI __attribute__((target("avx512vnni")))
#undef QC_KERNEL_PREFIX
#define QC_KERNEL_PREFIX "avx512::"  // kernel names (kernels.h, QC_FN)

namespace qc {
namespace avx512 {

using x86::h2f;
using x86::hsum_ps;
using x86::load4_h;
using x86::hsum128_ps;

// The kernels each translation unit exports, listed by the table (table.cpp); QC_VNNI ones need
// AVX512-VNNI. Only these are global: the ISA object check (.ci/test-x86-baseline) holds it.
float vec_dot_f32(int64_t n, const void* w, const void* a);   // quants_float.cpp
float vec_dot_f16(int64_t n, const void* w, const void* a);
float vec_dot_bf16(int64_t n, const void* w, const void* a);
#define QC_AVX512_VEC_DOT(t) QC_VNNI float vec_dot_##t(int64_t n, const void* w, const void* a);
QC_AVX512_VEC_DOT(q4_0) QC_AVX512_VEC_DOT(q4_1) QC_AVX512_VEC_DOT(q5_0) QC_AVX512_VEC_DOT(q5_1)  // quants_32.cpp
QC_AVX512_VEC_DOT(q8_0)
QC_AVX512_VEC_DOT(q2_K) QC_AVX512_VEC_DOT(q3_K) QC_AVX512_VEC_DOT(q4_K) QC_AVX512_VEC_DOT(q5_K)  // quants_k.cpp
QC_AVX512_VEC_DOT(q6_K)
#undef QC_AVX512_VEC_DOT
#define QC_AVX512_GEMV(t) QC_VNNI void gemv_##t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y);
QC_AVX512_GEMV(q4_K) QC_AVX512_GEMV(q4_K_r4) QC_AVX512_GEMV(q5_K)  // gemv_k.cpp
QC_AVX512_GEMV(q6_K)                             // quants_k.cpp
QC_AVX512_GEMV(q5_0_r4t) QC_AVX512_GEMV(q8_0_r4t)  // gemv.cpp
QC_AVX512_GEMV(q4_1_r4t) QC_AVX512_GEMV(q5_1_r4t) QC_AVX512_GEMV(q4_0_r16)
#undef QC_AVX512_GEMV
#define QC_AVX512_GEMV_ROWS(t)                                                                        \
  QC_VNNI void gemv_##t##_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, \
                               int n_a, float* y, size_t y_stride);
QC_AVX512_GEMV_ROWS(q4_K_r4) QC_AVX512_GEMV_ROWS(q5_K)     // gemv_k.cpp
QC_AVX512_GEMV_ROWS(q6_K)                                 // quants_k.cpp
QC_AVX512_GEMV_ROWS(q5_0_r4t) QC_AVX512_GEMV_ROWS(q8_0_r4t)  // gemv.cpp
QC_AVX512_GEMV_ROWS(q4_1_r4t) QC_AVX512_GEMV_ROWS(q5_1_r4t) QC_AVX512_GEMV_ROWS(q4_0_r16)
#undef QC_AVX512_GEMV_ROWS
#define QC_AVX512_GEMM(t)                                                                                  \
  QC_VNNI void gemm_##t(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, \
                        float* y, size_t ldy);
QC_AVX512_GEMM(q4_0) QC_AVX512_GEMM(q4_1) QC_AVX512_GEMM(q5_0) QC_AVX512_GEMM(q5_1) QC_AVX512_GEMM(q8_0)  // gemm.cpp
QC_AVX512_GEMM(q8_0_r4t) QC_AVX512_GEMM(q4_0_r16) QC_AVX512_GEMM(q4_1_r4t)  // gemm.cpp: over the layouts
QC_AVX512_GEMM(q5_0_r4t) QC_AVX512_GEMM(q5_1_r4t)
QC_AVX512_GEMM(q4_K) QC_AVX512_GEMM(q5_K) QC_AVX512_GEMM(q6_K) QC_AVX512_GEMM(q4_K_r4)  // gemm_k.cpp
#undef QC_AVX512_GEMM

static inline __m256i load256(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
static inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }

// The 4 bytes at p in every int32 lane (vpbroadcastd from memory)
static inline __m512i bcast4_512(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// 32 bytes at p0 in the low half, 32 bytes at p1 in the high half.
static inline __m512i load_2x32(const void* p0, const void* p1) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load256(p0)), load256(p1), 1);
}

}  // namespace avx512
}  // namespace qc
