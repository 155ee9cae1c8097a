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

// Registration of each group of kernels (one per translation unit), called by
// register_quant_kernels_avx2 / _avxvnni / _avxvnni_evex (quants.cpp).
void register_quants_32(Kernels& k);  // F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; Q8_0/Q8_1 activations
void register_quants_k(Kernels& k);   // Q2_K .. Q6_K; Q8_K activations
void register_gemv(Kernels& k);       // decode forms (WeightKernels::gemv): Q4_0, Q5_0, repacked Q4_0/Q8_0
void register_gemv_k(Kernels& k);     // and Q4_K

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
