// Scalar reference kernels for the K-quants (Q2_K .. Q6_K, super-blocks of 256 values):
// dequantization (bit for bit what gguf-py's gguf.quants.dequantize computes, in the same float32
// operation order) and the dot products with Q8_K activations (integer sums per sub-block,
// weighted by the integer sub-block scales, then the super-block scales applied in float).
//
// Each super-block is first unpacked to its 256 integer quants in element order, so the bit
// layout lives in one function per type and the dequantizer and the dot product share it.
//
// No fused multiply-add here: `dl * q - ml` must round twice, as numpy does.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quants.h"

namespace qc {
namespace scalar {

// ---- unpacking: one super-block -> q (256) in element order --------------------------------

// Q2_K: q in 0..3. Element e = 128 h + 32 s + l (h: half, s: shift, l < 32) is bits 2s..2s+1
// of qs[32 h + l].
static void unpack_q2_K(const block_q2_K& b, int8_t q[QK_K]) {
  for (int e = 0; e < QK_K; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    q[e] = (int8_t)((b.qs[32 * h + l] >> (2 * s)) & 3);
  }
}

// Q3_K: q in -4..3: bits 2s..2s+1 of qs[32 h + l] as for Q2_K, minus 4 unless bit e / 32 of
// hmask[e % 32] is set.
static void unpack_q3_K(const block_q3_K& b, int8_t q[QK_K]) {
  for (int e = 0; e < QK_K; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    const int low = (b.qs[32 * h + l] >> (2 * s)) & 3;
    const int high_set = (b.hmask[l] >> (e / 32)) & 1;
    q[e] = (int8_t)(low - (high_set ? 0 : 4));
  }
}

// Q4_K: q in 0..15. Element e = 64 c + 32 h + l is nibble h (0 low, 1 high) of qs[32 c + l].
static void unpack_q4_K(const uint8_t* qs, int8_t q[QK_K]) {
  for (int e = 0; e < QK_K; ++e) {
    const int c = e / 64, h = (e % 64) / 32, l = e % 32;
    q[e] = (int8_t)((qs[32 * c + l] >> (4 * h)) & 0x0f);
  }
}

// Q5_K: q in 0..31: the Q4_K nibble plus bit e / 32 of qh[e % 32] as bit 4.
static void unpack_q5_K(const block_q5_K& b, int8_t q[QK_K]) {
  unpack_q4_K(b.qs, q);
  for (int e = 0; e < QK_K; ++e) q[e] = (int8_t)(q[e] | (((b.qh[e % 32] >> (e / 32)) & 1) << 4));
}

// Q6_K: q in -32..31. Element e = 128 h + r: low 4 bits are nibble r / 64 of ql[64 h + r % 64],
// high 2 bits are bits 2 (r / 32)..+1 of qh[32 h + r % 32]; minus 32.
static void unpack_q6_K(const block_q6_K& b, int8_t q[QK_K]) {
  for (int e = 0; e < QK_K; ++e) {
    const int h = e / 128, r = e % 128;
    const int low = (b.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
    const int high = (b.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
    q[e] = (int8_t)((low | (high << 4)) - 32);
  }
}

// ---- dequantization ----------------------------------------------------------------------
// x (n / 256 super-blocks) -> y (n)

void dequantize_row_q2_K(const void* x, float* y, int64_t n) {
  const block_q2_K* b = static_cast<const block_q2_K*>(x);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    int8_t q[QK_K];
    unpack_q2_K(b[i], q);
    const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
    for (int e = 0; e < QK_K; ++e) {
      const uint8_t s = b[i].scales[e / 16];  // low nibble: scale, high nibble: min
      const float dl = d * (float)(s & 0x0f), ml = dmin * (float)(s >> 4);
      y[e] = dl * (float)q[e] - ml;
    }
  }
}

void dequantize_row_q3_K(const void* x, float* y, int64_t n) {
  const block_q3_K* b = static_cast<const block_q3_K*>(x);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    int8_t q[QK_K], sc[16];
    unpack_q3_K(b[i], q);
    unpack_q3_K_scales(b[i].scales, sc);
    const float d = fp16_to_fp32(b[i].d);
    for (int e = 0; e < QK_K; ++e) y[e] = (d * (float)sc[e / 16]) * (float)q[e];
  }
}

void dequantize_row_q4_K(const void* x, float* y, int64_t n) {
  const block_q4_K* b = static_cast<const block_q4_K*>(x);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    int8_t q[QK_K];
    uint8_t sc[8], mn[8];
    unpack_q4_K(b[i].qs, q);
    unpack_q4_K_scales(b[i].scales, sc, mn);
    const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
    for (int e = 0; e < QK_K; ++e) {
      const float dl = d * (float)sc[e / 32], ml = dmin * (float)mn[e / 32];
      y[e] = dl * (float)q[e] - ml;
    }
  }
}

void dequantize_row_q5_K(const void* x, float* y, int64_t n) {
  const block_q5_K* b = static_cast<const block_q5_K*>(x);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    int8_t q[QK_K];
    uint8_t sc[8], mn[8];
    unpack_q5_K(b[i], q);
    unpack_q4_K_scales(b[i].scales, sc, mn);
    const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
    for (int e = 0; e < QK_K; ++e) {
      const float dl = d * (float)sc[e / 32], ml = dmin * (float)mn[e / 32];
      y[e] = dl * (float)q[e] - ml;
    }
  }
}

void dequantize_row_q6_K(const void* x, float* y, int64_t n) {
  const block_q6_K* b = static_cast<const block_q6_K*>(x);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    int8_t q[QK_K];
    unpack_q6_K(b[i], q);
    const float d = fp16_to_fp32(b[i].d);
    for (int e = 0; e < QK_K; ++e) y[e] = (d * (float)b[i].scales[e / 16]) * (float)q[e];
  }
}

// ---- dot products with Q8_K activations ----------------------------------------------------
// w (n / 256 weight super-blocks) . a (n / 256 Q8_K blocks). A min term sum(ml * x) over a
// sub-block is ml * (sum of its activation quants), read from the activation's bsums.

// Exact int32 sum of q_w * q_a over len elements.
static inline int32_t dot_i8(const int8_t* q, const int8_t* a, int len) {
  int32_t s = 0;
  for (int j = 0; j < len; ++j) s += q[j] * a[j];
  return s;
}

// Q2_K: 16 sub-blocks of 16, value (d * sc) * q - dmin * m.
float vec_dot_q2_K_q8_K(int64_t n, const void* vw, const void* va) {
  const block_q2_K* w = static_cast<const block_q2_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int8_t q[QK_K];
    unpack_q2_K(w[i], q);
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += (w[i].scales[j] & 0x0f) * dot_i8(q + 16 * j, a[i].qs + 16 * j, 16);
      summ += (w[i].scales[j] >> 4) * a[i].bsums[j];
    }
    sum += a[i].d * fp16_to_fp32(w[i].d) * (float)sumi - a[i].d * fp16_to_fp32(w[i].dmin) * (float)summ;
  }
  return sum;
}

// Q3_K: 16 sub-blocks of 16, value (d * sc) * q with signed sc and q.
float vec_dot_q3_K_q8_K(int64_t n, const void* vw, const void* va) {
  const block_q3_K* w = static_cast<const block_q3_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int8_t q[QK_K], sc[16];
    unpack_q3_K(w[i], q);
    unpack_q3_K_scales(w[i].scales, sc);
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) sumi += sc[j] * dot_i8(q + 16 * j, a[i].qs + 16 * j, 16);
    sum += a[i].d * fp16_to_fp32(w[i].d) * (float)sumi;
  }
  return sum;
}

// Q4_K / Q5_K: 8 sub-blocks of 32, value (d * sc) * q - dmin * m; q already unpacked.
static inline float dot_q45_K_block(const int8_t q[QK_K], const uint8_t* packed_scales, half_t d, half_t dmin,
                                    const block_q8_K& a) {
  uint8_t sc[8], mn[8];
  unpack_q4_K_scales(packed_scales, sc, mn);
  int32_t sumi = 0, summ = 0;
  for (int j = 0; j < 8; ++j) {
    sumi += sc[j] * dot_i8(q + 32 * j, a.qs + 32 * j, 32);
    summ += mn[j] * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
  }
  return a.d * fp16_to_fp32(d) * (float)sumi - a.d * fp16_to_fp32(dmin) * (float)summ;
}

float vec_dot_q4_K_q8_K(int64_t n, const void* vw, const void* va) {
  const block_q4_K* w = static_cast<const block_q4_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int8_t q[QK_K];
    unpack_q4_K(w[i].qs, q);
    sum += dot_q45_K_block(q, w[i].scales, w[i].d, w[i].dmin, a[i]);
  }
  return sum;
}

float vec_dot_q5_K_q8_K(int64_t n, const void* vw, const void* va) {
  const block_q5_K* w = static_cast<const block_q5_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int8_t q[QK_K];
    unpack_q5_K(w[i], q);
    sum += dot_q45_K_block(q, w[i].scales, w[i].d, w[i].dmin, a[i]);
  }
  return sum;
}

// Q6_K: 16 sub-blocks of 16, value (d * sc) * q with int8 sc and q in -32..31.
float vec_dot_q6_K_q8_K(int64_t n, const void* vw, const void* va) {
  const block_q6_K* w = static_cast<const block_q6_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int8_t q[QK_K];
    unpack_q6_K(w[i], q);
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) sumi += w[i].scales[j] * dot_i8(q + 16 * j, a[i].qs + 16 * j, 16);
    sum += a[i].d * fp16_to_fp32(w[i].d) * (float)sumi;
  }
  return sum;
}

}  // namespace scalar
}  // namespace qc
