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

// Registration of each group of kernels (one per translation unit).
void register_quants_float(Kernels& k);    // F32, F16, BF16 (no VNNI needed)
void register_quants_32_vnni(Kernels& k);  // Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
void register_quants_k_vnni(Kernels& k);   // Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
void register_gemv_vnni(Kernels& k);       // decode forms (WeightKernels::gemv): Q4_0, Q5_0
void register_gemv_k_vnni(Kernels& k);     // Q4_K
void register_gemv_q8_0_vnni(Kernels& k);  // Q8_0
void register_gemv_r4_vnni(Kernels& k);    // the repacked layouts (repack.h)

static inline __m256i load256(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
static inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }

// 32 bytes at p0 in the low half, 32 bytes at p1 in the high half.
static inline __m512i load_2x32(const void* p0, const void* p1) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load256(p0)), load256(p1), 1);
}

}  // namespace avx512
}  // namespace qc
