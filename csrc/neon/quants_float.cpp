// NEON dot products of the float weight types (F32, F16, BF16) against float activations, and
// the activation quantizers Q8_0, Q8_1, Q8_K. The quantizers produce the scalar path's bytes
// exactly: the same float operations in the same order (abs max, one division, x * (1/d)),
// FCVTNS rounding to nearest even (what lrintf does under the default rounding mode), and
// vmaxnm for the abs max so that NaN inputs are skipped as the scalar comparison skips them.
#include "neon.h"

namespace qc {
namespace neon {

// ---- float weights -----------------------------------------------------------------------

// sum over i < n of load(i..i+3) * a[i..i+3] with 4 accumulators (FMA latency), then the
// remaining n % 4 elements by tail(i) one at a time.
template <typename Load, typename Tail>
static inline float dot_float(int64_t n, const float* a, Load load, Tail tail) {
  float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = vfmaq_f32(s0, load(i), vld1q_f32(a + i));
    s1 = vfmaq_f32(s1, load(i + 4), vld1q_f32(a + i + 4));
    s2 = vfmaq_f32(s2, load(i + 8), vld1q_f32(a + i + 8));
    s3 = vfmaq_f32(s3, load(i + 12), vld1q_f32(a + i + 12));
  }
  for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, load(i), vld1q_f32(a + i));
  float sum = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
  for (; i < n; ++i) sum += tail(i) * a[i];
  return sum;
}

// w (n floats) . a (n floats)
float vec_dot_f32(int64_t n, const void* vw, const void* va) {
  const float* w = static_cast<const float*>(vw);
  return dot_float(
      n, static_cast<const float*>(va), [w](int64_t i) { return vld1q_f32(w + i); }, [w](int64_t i) { return w[i]; });
}

// w (n halves) . a (n floats)
float vec_dot_f16(int64_t n, const void* vw, const void* va) {
  const half_t* w = static_cast<const half_t*>(vw);
  return dot_float(
      n, static_cast<const float*>(va), [w](int64_t i) { return load4_f16(w + i); },
      [w](int64_t i) { return h2f(w[i]); });
}

// w (n bfloat16) . a (n floats)
float vec_dot_bf16(int64_t n, const void* vw, const void* va) {
  const bf16_t* w = static_cast<const bf16_t*>(vw);
  return dot_float(
      n, static_cast<const float*>(va), [w](int64_t i) { return load4_bf16(w + i); },
      [w](int64_t i) { return bf16_to_fp32(w[i]); });
}

// ---- activation quantizers ---------------------------------------------------------------

// max |x[i]| over n (a multiple of 16) values; NaN lanes lose every comparison (vmaxnm).
static inline float abs_max(const float* x, int n) {
  float32x4_t m0 = vdupq_n_f32(0.0f), m1 = m0, m2 = m0, m3 = m0;
  for (int i = 0; i < n; i += 16) {
    m0 = vmaxnmq_f32(m0, vabsq_f32(vld1q_f32(x + i)));
    m1 = vmaxnmq_f32(m1, vabsq_f32(vld1q_f32(x + i + 4)));
    m2 = vmaxnmq_f32(m2, vabsq_f32(vld1q_f32(x + i + 8)));
    m3 = vmaxnmq_f32(m3, vabsq_f32(vld1q_f32(x + i + 12)));
  }
  return vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(m0, m1), vmaxnmq_f32(m2, m3)));
}

// 16 floats x * s rounded to nearest even -> 16 int8 at q. |x * s| <= amax * (127 / amax), at
// most a rounding above 127, so the saturating narrows give the scalar path's values (including
// its min(127, .) for Q8_K). Returns 8 int16 lanes whose total is the sum of the 16 quants.
static inline int16x8_t quantize_16(const float* x, float32x4_t s, int8_t* q) {
  const int32x4_t i0 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x), s));
  const int32x4_t i1 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + 4), s));
  const int32x4_t i2 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + 8), s));
  const int32x4_t i3 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + 12), s));
  const int16x8_t h0 = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
  const int16x8_t h1 = vcombine_s16(vqmovn_s32(i2), vqmovn_s32(i3));
  vst1q_s8(q, vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1)));
  return vaddq_s16(h0, h1);
}

// One Q8_0 block of 32 floats -> qs (32); returns d = amax / 127 before rounding to f16 and,
// through sum, the sum of the 32 quants.
static inline float quantize_block_32(const float* x, int8_t* qs, int32_t* sum) {
  const float d = abs_max(x, 32) / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const float32x4_t s = vdupq_n_f32(id);
  const int16x8_t p = vaddq_s16(quantize_16(x, s, qs), quantize_16(x + 16, s, qs + 16));
  *sum = vaddlvq_s16(p);
  return d;
}

// x (n) -> y (n / 32 blocks of block_q8_0)
void quantize_row_q8_0(const float* x, void* vy, int64_t n) {
  block_q8_0* y = static_cast<block_q8_0*>(vy);
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    int32_t sum;
    y[i].d = f2h(quantize_block_32(x + i * QK8_0, y[i].qs, &sum));
  }
}

// x (n) -> y (n / 32 blocks of block_q8_1): Q8_0 plus s = d * sum(q) with d before rounding.
void quantize_row_q8_1(const float* x, void* vy, int64_t n) {
  block_q8_1* y = static_cast<block_q8_1*>(vy);
  for (int64_t i = 0; i < n / QK8_1; ++i) {
    int32_t sum;
    const float d = quantize_block_32(x + i * QK8_1, y[i].qs, &sum);
    y[i].d = f2h(d);
    y[i].s = f2h(d * (float)sum);
  }
}

// x (n) -> y (n / 256 blocks of block_q8_K): iscale = 127 / amax, q = min(127, round(x * iscale))
// (see quantize_16), d = 1 / iscale as float, bsums of each 16 quants; an all-zero block is all
// zero bytes.
void quantize_row_q8_K(const float* x, void* vy, int64_t n) {
  block_q8_K* y = static_cast<block_q8_K*>(vy);
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    const float amax = abs_max(x, QK_K);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(block_q8_K));
      continue;
    }
    const float iscale = 127.0f / amax;
    y[i].d = 1.0f / iscale;
    const float32x4_t s = vdupq_n_f32(iscale);
    for (int j = 0; j < QK_K / 16; ++j)
      y[i].bsums[j] = (int16_t)vaddvq_s16(quantize_16(x + 16 * j, s, y[i].qs + 16 * j));
  }
}

// x (n) -> y (n floats)
void quantize_row_f32(const float* x, void* y, int64_t n) { std::memcpy(y, x, (size_t)n * sizeof(float)); }

}  // namespace neon
}  // namespace qc
