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
  static inline int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }
};

}  // namespace

void register_quants_int_dotprod(Kernels& k) { register_int_kernels<DotProd>(k); }

}  // namespace neon
}  // namespace qc

#if defined(__clang__)
#pragma clang attribute pop
#endif
