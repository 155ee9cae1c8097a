// NEON (AArch64 Advanced SIMD, ARMv8.0 baseline) helpers shared by csrc/neon/*.cpp, and the
// kernels they export. Every helper here is `static inline` so each translation unit gets its own
// copy compiled with its own target (quants_dotprod.cpp is compiled for ARMv8.2 + dotprod and
// must not lend code to the baseline).
#pragma once
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "../kernels.h"

#undef QC_KERNEL_PREFIX
#define QC_KERNEL_PREFIX "neon::"  // kernel names (kernels.h, QC_FN)

namespace qc {
namespace neon {

// The kernels each translation unit exports, listed by the tables (quants.cpp).
void quantize_row_f32(const float* x, void* y, int64_t n);  // quants_float.cpp
void quantize_row_q8_0(const float* x, void* y, int64_t n);
void quantize_row_q8_1(const float* x, void* y, int64_t n);
void quantize_row_q8_K(const float* x, void* y, int64_t n);
float vec_dot_f32(int64_t n, const void* w, const void* a);
float vec_dot_f16(int64_t n, const void* w, const void* a);
float vec_dot_bf16(int64_t n, const void* w, const void* a);
// The integer dot products and decode kernels (int_kernels.h): ARMv8.0 ones in neon (quants_int.cpp),
// SDOT ones in neon::dotprod (quants_dotprod.cpp, ARMv8.2 + dotprod only).
#define QC_NEON_INT_KERNELS                                                                     \
  float vec_dot_q4_0(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q4_1(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q5_0(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q5_1(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q8_0(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q2_K(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q3_K(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q4_K(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q5_K(int64_t n, const void* w, const void* a);                                  \
  float vec_dot_q6_K(int64_t n, const void* w, const void* a);                                  \
  void gemv_q4_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y);    \
  void gemv_q4_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y); \
  void gemv_q8_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y);
QC_NEON_INT_KERNELS
namespace dotprod {
QC_NEON_INT_KERNELS
}  // namespace dotprod

// One binary16 value to float: FCVT, exact (AArch64 has half conversions in the base ISA).
static inline float h2f(half_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

// float to binary16, round to nearest even under the default FPCR (as fp32_to_fp16 in blocks.h
// for every non-NaN input).
static inline half_t f2h(float f) {
  return vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(f))), 0);
}

// 4 binary16 at p -> 4 floats
static inline float32x4_t load4_f16(const half_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

// 4 bfloat16 at p -> 4 floats (bf16 is the top half of a float)
static inline float32x4_t load4_bf16(const bf16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }

// 16 bytes at p, element j of a 32-element block in the low nibble of byte j and element j + 16
// in the high nibble -> (elements 0..15, elements 16..31) as bytes 0..15.
static inline uint8x16x2_t unpack_nibbles_32(const uint8_t* p) {
  const uint8x16_t b = vld1q_u8(p);
  uint8x16x2_t r;
  r.val[0] = vandq_u8(b, vdupq_n_u8(0x0f));
  r.val[1] = vshrq_n_u8(b, 4);
  return r;
}

// Bits 0..31 of the little-endian u32 at p -> (bytes 0..15, bytes 16..31), byte j = 0xff if bit
// j is set, 0 otherwise (the fifth bits of Q5_0 / Q5_1).
static inline uint8x16x2_t bits_to_bytes_32(const uint8_t* p) {
  static const uint8_t bit_of[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t sel = vld1q_u8(bit_of);
  uint8x16x2_t r;
  r.val[0] = vtstq_u8(vcombine_u8(vdup_n_u8(p[0]), vdup_n_u8(p[1])), sel);
  r.val[1] = vtstq_u8(vcombine_u8(vdup_n_u8(p[2]), vdup_n_u8(p[3])), sel);
  return r;
}

// The products of two int8 vectors summed into acc, 4 of the 16 products per int32 lane (which
// products go to which lane is unspecified: callers only use the lane total). ARMv8.0 version:
// widening multiplies to int16 (|product| <= 128 * 128 fits), pairwise widening adds to int32.
struct DotBase {
  static inline int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
  }
};

}  // namespace neon
}  // namespace qc
