// The NEON dot products of the quantized weight types against their 8-bit activation formats,
// written once over the int8 dot step `D::dot` (neon.h: DotBase, ARMv8.0 widening multiplies;
// quants_dotprod.cpp: SDOT). Included by exactly two translation units, quants_int.cpp and
// quants_dotprod.cpp, each defining the kernels neon.h declares over its own D and target
// (QC_NEON_INT_DEFINE, in namespaces neon and neon::dotprod); everything else is in an unnamed
// namespace (or static inline), so the two instantiations never merge at link time.
//
// Every block's integer sum is exact (int32 lanes), as in the scalar reference; only the float
// accumulation of the per-block terms is ordered differently (vector lanes, FMA).
#pragma once
#include "../act_q8_0x4.h"
#include "../repack.h"
#include "../scalar/quants.h"
#include "neon.h"

namespace qc {
namespace neon {
namespace {

// ---- 32-element blocks -------------------------------------------------------------------
// Each block type B gives: isum<D>(w, a), the int32x4 whose lane total is sum(q_w * q_a);
// scale(w, a), the float multiplying it; offset(w, a), the min term added per block (or 0).

struct Q4_0Block {
  typedef block_q4_0 W;
  typedef block_q8_0 A;
  template <class D>
  static inline int32x4_t isum(const W& w, const A& a) {
    const uint8x16x2_t q = unpack_nibbles_32(w.qs);
    const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(q.val[0]), vdupq_n_s8(8));
    const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(q.val[1]), vdupq_n_s8(8));
    return D::dot(D::dot(vdupq_n_s32(0), lo, vld1q_s8(a.qs)), hi, vld1q_s8(a.qs + 16));
  }
  static inline float offset(const W&, const A&) { return 0.0f; }
};

struct Q4_1Block {
  typedef block_q4_1 W;
  typedef block_q8_1 A;
  template <class D>
  static inline int32x4_t isum(const W& w, const A& a) {
    const uint8x16x2_t q = unpack_nibbles_32(w.qs);
    return D::dot(D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(q.val[0]), vld1q_s8(a.qs)),
                  vreinterpretq_s8_u8(q.val[1]), vld1q_s8(a.qs + 16));
  }
  // sum(m * x) over the block is m * s (s = d_a * sum(q_a), stored in the activation block)
  static inline float offset(const W& w, const A& a) { return h2f(w.m) * h2f(a.s); }
};

// Q5_0: q - 16 = nibble + 16 * fifth bit - 16, i.e. the nibble minus 16 where the bit is clear.
struct Q5_0Block {
  typedef block_q5_0 W;
  typedef block_q8_0 A;
  template <class D>
  static inline int32x4_t isum(const W& w, const A& a) {
    const uint8x16x2_t q = unpack_nibbles_32(w.qs);
    const uint8x16x2_t h = bits_to_bytes_32(w.qh);
    const uint8x16_t sixteen = vdupq_n_u8(16);
    const int8x16_t lo = vreinterpretq_s8_u8(vsubq_u8(q.val[0], vbicq_u8(sixteen, h.val[0])));
    const int8x16_t hi = vreinterpretq_s8_u8(vsubq_u8(q.val[1], vbicq_u8(sixteen, h.val[1])));
    return D::dot(D::dot(vdupq_n_s32(0), lo, vld1q_s8(a.qs)), hi, vld1q_s8(a.qs + 16));
  }
  static inline float offset(const W&, const A&) { return 0.0f; }
};

struct Q5_1Block {
  typedef block_q5_1 W;
  typedef block_q8_1 A;
  template <class D>
  static inline int32x4_t isum(const W& w, const A& a) {
    const uint8x16x2_t q = unpack_nibbles_32(w.qs);
    const uint8x16x2_t h = bits_to_bytes_32(w.qh);
    const uint8x16_t sixteen = vdupq_n_u8(16);
    const int8x16_t lo = vreinterpretq_s8_u8(vorrq_u8(q.val[0], vandq_u8(sixteen, h.val[0])));
    const int8x16_t hi = vreinterpretq_s8_u8(vorrq_u8(q.val[1], vandq_u8(sixteen, h.val[1])));
    return D::dot(D::dot(vdupq_n_s32(0), lo, vld1q_s8(a.qs)), hi, vld1q_s8(a.qs + 16));
  }
  static inline float offset(const W& w, const A& a) { return h2f(w.m) * h2f(a.s); }
};

struct Q8_0Block {
  typedef block_q8_0 W;
  typedef block_q8_0 A;
  template <class D>
  static inline int32x4_t isum(const W& w, const A& a) {
    return D::dot(D::dot(vdupq_n_s32(0), vld1q_s8(w.qs), vld1q_s8(a.qs)), vld1q_s8(w.qs + 16), vld1q_s8(a.qs + 16));
  }
  static inline float offset(const W&, const A&) { return 0.0f; }
};

// w (n / 32 blocks of B::W) . a (n / 32 blocks of B::A): two blocks per iteration into two float
// accumulators (independent dependency chains), one horizontal sum at the end.
template <class D, class B>
float vec_dot_32(int64_t n, const void* vw, const void* va) {
  const typename B::W* w = static_cast<const typename B::W*>(vw);
  const typename B::A* a = static_cast<const typename B::A*>(va);
  const int64_t nb = n / 32;
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  float off = 0.0f;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const int32x4_t s0 = B::template isum<D>(w[i], a[i]);
    const int32x4_t s1 = B::template isum<D>(w[i + 1], a[i + 1]);
    acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(s0), h2f(w[i].d) * h2f(a[i].d));
    acc1 = vfmaq_n_f32(acc1, vcvtq_f32_s32(s1), h2f(w[i + 1].d) * h2f(a[i + 1].d));
    off += B::offset(w[i], a[i]) + B::offset(w[i + 1], a[i + 1]);
  }
  if (i < nb) {
    acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(B::template isum<D>(w[i], a[i])), h2f(w[i].d) * h2f(a[i].d));
    off += B::offset(w[i], a[i]);
  }
  return vaddvq_f32(vaddq_f32(acc0, acc1)) + off;
}

// The decode form of Q4_0 (WeightKernels::gemv): rows of Q4_0 . one activation row in the
// Q8_0x4 layout (act_q8_0x4.h). The nibbles enter the dot products unshifted (0..15) and the
// activation's precomputed 8 * sum(a) is subtracted per block in int32, instead of subtracting 8
// from every weight byte. D::dot's lanes need not be the layout's (DotBase pairs other bytes than
// SDOT), so each block's lanes are summed to its exact integer before the scale. One row per pass.
template <class D>
float gemv_row_q4_0(int64_t n, const block_q4_0* w, const block_q8_0x4* a) {
  float acc0 = 0.0f, acc1 = 0.0f;
  for (int64_t g = 0; g < n / QK8_0X4; ++g, w += 4, ++a)
    for (int k = 0; k < 4; ++k) {
      const uint8x16_t q = vld1q_u8(w[k].qs);
      const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
      const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
      const int32x4_t s = D::dot(D::dot(vdupq_n_s32(0), lo, vld1q_s8(a->lo + 16 * k)), hi, vld1q_s8(a->hi + 16 * k));
      const int32_t isum = vaddvq_s32(vsubq_s32(s, vld1q_s32(a->sum8 + 4 * k)));
      if (k % 2) acc1 += (float)isum * (a->d[4 * k] * h2f(w[k].d));
      else acc0 += (float)isum * (a->d[4 * k] * h2f(w[k].d));
    }
  return acc0 + acc1;
}

template <class D>
void decode_q4_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  for (int r = 0; r < n_rows; ++r)
    y[r] = gemv_row_q4_0<D>(n, reinterpret_cast<const block_q4_0*>(static_cast<const uint8_t*>(w) + r * wrb),
                            static_cast<const block_q8_0x4*>(a));
}

// ---- the repacked layouts Q4_0_R4 and Q8_0_R4 (repack.h) ----------------------------------
// LayoutKernels::gemv over one Q8_0x4 activation row, the tiles of each quad of rows read in
// order. Per tile row: the 4 blocks' int32 lanes summed to one exact integer per block by two
// pairwise adds (D::dot's lanes need not be the layout's), the offset of the unsigned Q4_0
// nibbles taken off per block in int32 (8 * sum(a), shared by the 4 rows), then one conversion
// and one FMA against the 4 blocks' scale products.

// Q4_0_R4: row r's block k nibbles at tile + 64r + 16k (q + 8); scales at tile + 256.
struct Q4_0R4 {
  static constexpr size_t kTile = 288, kScales = 256;
  static constexpr bool kOffset = true;
  template <class D>
  static inline int32x4_t block(const uint8_t* tile, int r, int k, const block_q8_0x4& a) {
    const uint8x16_t q = vld1q_u8(tile + 64 * r + 16 * k);
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
    return D::dot(D::dot(vdupq_n_s32(0), lo, vld1q_s8(a.lo + 16 * k)), hi, vld1q_s8(a.hi + 16 * k));
  }
};

// Q8_0_R4: row r's block k at tile + 128r + 16k (lo) and + 64 (hi), as q + 128; scales at + 512.
struct Q8_0R4 {
  static constexpr size_t kTile = 544, kScales = 512;
  static constexpr bool kOffset = false;
  template <class D>
  static inline int32x4_t block(const uint8_t* tile, int r, int k, const block_q8_0x4& a) {
    const uint8_t* p = tile + 128 * r + 16 * k;
    const int8x16_t lo = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p), vdupq_n_u8(0x80)));  // back to q
    const int8x16_t hi = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p + 64), vdupq_n_u8(0x80)));
    return D::dot(D::dot(vdupq_n_s32(0), lo, vld1q_s8(a.lo + 16 * k)), hi, vld1q_s8(a.hi + 16 * k));
  }
};

// lane k = the total of s[k]'s 4 lanes
static inline int32x4_t block_totals(int32x4_t s0, int32x4_t s1, int32x4_t s2, int32x4_t s3) {
  return vpaddq_s32(vpaddq_s32(s0, s1), vpaddq_s32(s2, s3));
}

template <class D, class L>
void gemv_r4(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const block_q8_0x4* a = static_cast<const block_q8_0x4*>(va);
  for (int quad = 0; quad < n_rows / 4; ++quad) {
    const uint8_t* tile = w + (size_t)quad * 4 * wrb;
    float32x4_t acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = vdupq_n_f32(0.0f);
    for (int64_t g = 0; g < n / QK8_0X4; ++g, tile += L::kTile) {
      const block_q8_0x4& ag = a[g];
      const float32x4_t da = vld4q_f32(ag.d).val[0];  // d[0], d[4], d[8], d[12]: one per block
      int32x4_t off = vdupq_n_s32(0);
      if (L::kOffset)
        off = block_totals(vld1q_s32(ag.sum8), vld1q_s32(ag.sum8 + 4), vld1q_s32(ag.sum8 + 8), vld1q_s32(ag.sum8 + 12));
      const uint16_t* scales = reinterpret_cast<const uint16_t*>(tile + L::kScales);
      for (int r = 0; r < 4; ++r) {
        const int32x4_t isum = vsubq_s32(block_totals(L::template block<D>(tile, r, 0, ag), L::template block<D>(tile, r, 1, ag),
                                                      L::template block<D>(tile, r, 2, ag), L::template block<D>(tile, r, 3, ag)),
                                         off);
        const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(scales + 4 * r)));
        acc[r] = vfmaq_f32(acc[r], vcvtq_f32_s32(isum), vmulq_f32(dw, da));
      }
    }
    for (int r = 0; r < 4; ++r) y[4 * quad + r] = vaddvq_f32(acc[r]);
  }
}

// ---- K-quants (super-blocks of 256) with Q8_K activations --------------------------------
// The sub-block scales multiply the int32 sub-block sums (vmlaq_n_s32), the mins the
// activation's precomputed 16-value sums (bsums); the super-block scales are applied in float.

// sum over the 16 sub-blocks of (scales[j] >> 4) * bsums[j] (the Q2_K min term)
static inline int32_t q2_K_min_sum(const uint8_t* scales, const int16_t* bsums) {
  const uint8x16_t m = vshrq_n_u8(vld1q_u8(scales), 4);
  const int16x8_t m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m)));
  const int16x8_t m1 = vreinterpretq_s16_u16(vmovl_high_u8(m));
  const int16x8_t b0 = vld1q_s16(bsums), b1 = vld1q_s16(bsums + 8);
  int32x4_t s = vmull_s16(vget_low_s16(m0), vget_low_s16(b0));
  s = vmlal_high_s16(s, m0, b0);
  s = vmlal_s16(s, vget_low_s16(m1), vget_low_s16(b1));
  s = vmlal_high_s16(s, m1, b1);
  return vaddvq_s32(s);
}

// Q2_K: value (d * sc) * q - dmin * m, q in 0..3. Element 128 h + 32 s + l (l < 32) is bits
// 2s..2s+1 of qs[32 h + l]; sub-block j = 8 h + 2 s + l / 16.
template <class D>
float dot_q2_K(int64_t n, const void* vw, const void* va) {
  const block_q2_K* w = static_cast<const block_q2_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  const uint8x16_t three = vdupq_n_u8(3);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const uint8_t* sc = w[i].scales;
    const int8_t* aq = a[i].qs;
    int32x4_t acc = vdupq_n_s32(0);
    for (int h = 0; h < 2; ++h) {
      const uint8x16_t q0 = vld1q_u8(w[i].qs + 32 * h), q1 = vld1q_u8(w[i].qs + 32 * h + 16);
      for (int s = 0; s < 4; ++s, aq += 32) {
        const int j = 8 * h + 2 * s;
        const int8x16_t w0 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(q0, vdupq_n_s8((int8_t)(-2 * s))), three));
        const int8x16_t w1 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(q1, vdupq_n_s8((int8_t)(-2 * s))), three));
        acc = vmlaq_n_s32(acc, D::dot(vdupq_n_s32(0), w0, vld1q_s8(aq)), sc[j] & 0x0f);
        acc = vmlaq_n_s32(acc, D::dot(vdupq_n_s32(0), w1, vld1q_s8(aq + 16)), sc[j + 1] & 0x0f);
      }
    }
    const int32_t sumi = vaddvq_s32(acc), summ = q2_K_min_sum(sc, a[i].bsums);
    sum += a[i].d * h2f(w[i].d) * (float)sumi - a[i].d * h2f(w[i].dmin) * (float)summ;
  }
  return sum;
}

// Q3_K: value (d * sc) * q with sc signed 6-bit and q = 2 low bits - 4 unless the high bit is
// set. Element 128 h + 32 s + l: low bits as Q2_K, high bit = bit 4 h + s of hmask[l].
template <class D>
float dot_q3_K(int64_t n, const void* vw, const void* va) {
  const block_q3_K* w = static_cast<const block_q3_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  const uint8x16_t three = vdupq_n_u8(3), four = vdupq_n_u8(4);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int8_t sc[16];
    unpack_q3_K_scales(w[i].scales, sc);
    const uint8x16_t m0 = vld1q_u8(w[i].hmask), m1 = vld1q_u8(w[i].hmask + 16);
    const int8_t* aq = a[i].qs;
    int32x4_t acc = vdupq_n_s32(0);
    for (int h = 0; h < 2; ++h) {
      const uint8x16_t q0 = vld1q_u8(w[i].qs + 32 * h), q1 = vld1q_u8(w[i].qs + 32 * h + 16);
      for (int s = 0; s < 4; ++s, aq += 32) {
        const int j = 8 * h + 2 * s;
        const int8x16_t shift = vdupq_n_s8((int8_t)(-2 * s));
        const uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << (4 * h + s)));
        // 4 where the high bit is clear, subtracted from the 2 low bits
        const uint8x16_t sub0 = vbicq_u8(four, vtstq_u8(m0, bit)), sub1 = vbicq_u8(four, vtstq_u8(m1, bit));
        const int8x16_t w0 = vreinterpretq_s8_u8(vsubq_u8(vandq_u8(vshlq_u8(q0, shift), three), sub0));
        const int8x16_t w1 = vreinterpretq_s8_u8(vsubq_u8(vandq_u8(vshlq_u8(q1, shift), three), sub1));
        acc = vmlaq_n_s32(acc, D::dot(vdupq_n_s32(0), w0, vld1q_s8(aq)), sc[j]);
        acc = vmlaq_n_s32(acc, D::dot(vdupq_n_s32(0), w1, vld1q_s8(aq + 16)), sc[j + 1]);
      }
    }
    sum += a[i].d * h2f(w[i].d) * (float)vaddvq_s32(acc);
  }
  return sum;
}

// sum over the 8 sub-blocks of 32 of mn[j] * (bsums[2j] + bsums[2j+1]) (the Q4_K / Q5_K min term)
static inline int32_t q45_K_min_sum(const uint8_t* mn, const int16_t* bsums) {
  const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));  // 8 sums of 32 values
  const int16x8_t m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
  return vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(m), vget_low_s16(pairs)), m, pairs));
}

// Q4_K / Q5_K: value (d * sc) * q - dmin * m over 8 sub-blocks of 32. Element 64 c + 32 t + l is
// nibble t of qs[32 c + l] (sub-block 2 c + t); Q5_K adds bit 2 c + t of qh[l] as bit 4.
template <class D, bool Q5>
static inline float dot_q45_K_block(const uint8_t* qs, const uint8_t* qh, const uint8_t* packed_scales, half_t d,
                                    half_t dmin, const block_q8_K& a) {
  uint8_t sc[8], mn[8];
  unpack_q4_K_scales(packed_scales, sc, mn);
  const uint8x16_t low4 = vdupq_n_u8(0x0f), sixteen = vdupq_n_u8(16);
  uint8x16_t h0 = vdupq_n_u8(0), h1 = vdupq_n_u8(0);
  if (Q5) h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
  const int8_t* aq = a.qs;
  int32x4_t acc = vdupq_n_s32(0);
  for (int c = 0; c < 4; ++c, aq += 64) {
    const uint8x16_t q0 = vld1q_u8(qs + 32 * c), q1 = vld1q_u8(qs + 32 * c + 16);
    uint8x16_t l0 = vandq_u8(q0, low4), l1 = vandq_u8(q1, low4);  // sub-block 2c
    uint8x16_t u0 = vshrq_n_u8(q0, 4), u1 = vshrq_n_u8(q1, 4);    // sub-block 2c + 1
    if (Q5) {
      const uint8x16_t bl = vdupq_n_u8((uint8_t)(1u << (2 * c))), bu = vdupq_n_u8((uint8_t)(2u << (2 * c)));
      l0 = vorrq_u8(l0, vandq_u8(vtstq_u8(h0, bl), sixteen));
      l1 = vorrq_u8(l1, vandq_u8(vtstq_u8(h1, bl), sixteen));
      u0 = vorrq_u8(u0, vandq_u8(vtstq_u8(h0, bu), sixteen));
      u1 = vorrq_u8(u1, vandq_u8(vtstq_u8(h1, bu), sixteen));
    }
    int32x4_t s = D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(l0), vld1q_s8(aq));
    s = D::dot(s, vreinterpretq_s8_u8(l1), vld1q_s8(aq + 16));
    acc = vmlaq_n_s32(acc, s, sc[2 * c]);
    s = D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(u0), vld1q_s8(aq + 32));
    s = D::dot(s, vreinterpretq_s8_u8(u1), vld1q_s8(aq + 48));
    acc = vmlaq_n_s32(acc, s, sc[2 * c + 1]);
  }
  const int32_t sumi = vaddvq_s32(acc), summ = q45_K_min_sum(mn, a.bsums);
  return a.d * h2f(d) * (float)sumi - a.d * h2f(dmin) * (float)summ;
}

template <class D>
float dot_q4_K(int64_t n, const void* vw, const void* va) {
  const block_q4_K* w = static_cast<const block_q4_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i)
    sum += dot_q45_K_block<D, false>(w[i].qs, nullptr, w[i].scales, w[i].d, w[i].dmin, a[i]);
  return sum;
}

template <class D>
float dot_q5_K(int64_t n, const void* vw, const void* va) {
  const block_q5_K* w = static_cast<const block_q5_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i)
    sum += dot_q45_K_block<D, true>(w[i].qs, w[i].qh, w[i].scales, w[i].d, w[i].dmin, a[i]);
  return sum;
}

// Q6_K: value (d * sc) * (q - 32), sc int8, 16 sub-blocks of 16. In each half h (128 values),
// the 16 values at 128 h + 32 u + 16 k (u < 4, k < 2) take their low 4 bits from nibble u / 2 of
// ql[64 h + 32 (u % 2) + 16 k ..] and their high 2 bits from bits 2u..2u+1 of qh[32 h + 16 k ..].
template <class D>
float dot_q6_K(int64_t n, const void* vw, const void* va) {
  const block_q6_K* w = static_cast<const block_q6_K*>(vw);
  const block_q8_K* a = static_cast<const block_q8_K*>(va);
  const uint8x16_t low4 = vdupq_n_u8(0x0f), high2 = vdupq_n_u8(0x30);
  const int8x16_t bias = vdupq_n_s8(32);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* aq = a[i].qs;
    const int8_t* sc = w[i].scales;
    int32x4_t acc = vdupq_n_s32(0);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[i].ql + 64 * h;
      const uint8x16_t qh[2] = {vld1q_u8(w[i].qh + 32 * h), vld1q_u8(w[i].qh + 32 * h + 16)};
      for (int u = 0; u < 4; ++u) {
        for (int k = 0; k < 2; ++k, aq += 16) {
          const uint8x16_t l = vld1q_u8(ql + 32 * (u % 2) + 16 * k);
          const uint8x16_t lo = u < 2 ? vandq_u8(l, low4) : vshrq_n_u8(l, 4);
          // bits 2u..2u+1 of qh moved to bits 4..5
          const uint8x16_t hi = vandq_u8(vshlq_u8(qh[k], vdupq_n_s8((int8_t)(4 - 2 * u))), high2);
          const int8x16_t q = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hi)), bias);
          acc = vmlaq_n_s32(acc, D::dot(vdupq_n_s32(0), q, vld1q_s8(aq)), sc[8 * h + 2 * u + k]);
        }
      }
    }
    sum += a[i].d * h2f(w[i].d) * (float)vaddvq_s32(acc);
  }
  return sum;
}

}  // namespace

// Defines the kernels over D that neon.h declares (QC_NEON_INT_KERNELS) in the namespace where it is used.
#define QC_NEON_INT_DEFINE(D)                                                                                  \
  float vec_dot_q4_0(int64_t n, const void* w, const void* a) { return vec_dot_32<D, Q4_0Block>(n, w, a); } \
  float vec_dot_q4_1(int64_t n, const void* w, const void* a) { return vec_dot_32<D, Q4_1Block>(n, w, a); } \
  float vec_dot_q5_0(int64_t n, const void* w, const void* a) { return vec_dot_32<D, Q5_0Block>(n, w, a); } \
  float vec_dot_q5_1(int64_t n, const void* w, const void* a) { return vec_dot_32<D, Q5_1Block>(n, w, a); } \
  float vec_dot_q8_0(int64_t n, const void* w, const void* a) { return vec_dot_32<D, Q8_0Block>(n, w, a); } \
  float vec_dot_q2_K(int64_t n, const void* w, const void* a) { return dot_q2_K<D>(n, w, a); }            \
  float vec_dot_q3_K(int64_t n, const void* w, const void* a) { return dot_q3_K<D>(n, w, a); }            \
  float vec_dot_q4_K(int64_t n, const void* w, const void* a) { return dot_q4_K<D>(n, w, a); }            \
  float vec_dot_q5_K(int64_t n, const void* w, const void* a) { return dot_q5_K<D>(n, w, a); }            \
  float vec_dot_q6_K(int64_t n, const void* w, const void* a) { return dot_q6_K<D>(n, w, a); }            \
  void gemv_q4_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {                 \
    decode_q4_0<D>(n, w, wrb, n_rows, a, y);                                                                   \
  }                                                                                                            \
  void gemv_q4_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {              \
    gemv_r4<D, Q4_0R4>(n, w, wrb, n_rows, a, y);                                                               \
  }                                                                                                            \
  void gemv_q8_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {              \
    gemv_r4<D, Q8_0R4>(n, w, wrb, n_rows, a, y);                                                               \
  }

}  // namespace neon
}  // namespace qc
