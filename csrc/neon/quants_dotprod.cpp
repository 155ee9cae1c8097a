// The NEON integer dot products with the ARMv8.2 dot-product extension (FEAT_DotProd: SDOT, four
// int8 products summed into each int32 lane in one instruction): int_kernels.h over DotProd.
// Only this translation unit is compiled for armv8.2-a+dotprod, by the pragma below, so the
// CMake glob of csrc/neon needs no per-file flags; dispatch.cpp registers these only when the
// CPU reports the feature (HWCAP_ASIMDDP on Linux; every Apple silicon core has it).
#include <arm_neon.h>  // before the pragma: the intrinsics carry their own target attributes

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif

#include "int_kernels.h"

namespace qc {
namespace neon {
namespace {

struct DotProd {
  static inline int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD)
    // clang's arm_neon.h declares vdotq_s32 only when the whole translation unit targets dotprod
    // (-march=...+dotprod); here only the functions do, so SDOT is written out.
    __asm__("sdot %0.4s, %1.16b, %2.16b" : "+w"(acc) : "w"(a), "w"(b));
    return acc;
#else
    return vdotq_s32(acc, a, b);
#endif
  }
};

}  // namespace

namespace dotprod {
QC_NEON_INT_DEFINE(DotProd)
}  // namespace dotprod

}  // namespace neon
}  // namespace qc

#if defined(__clang__)
#pragma clang attribute pop
#endif
