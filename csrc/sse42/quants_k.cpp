// SSE4.2 dot products of the K-quants (Q2_K .. Q6_K, 256-element super-blocks) against Q8_K
// activations, and the Q8_K activation quantizer (bytes identical to the scalar one).
//
// Per super-block the weighted integer sum  sum_j scale_j * dot(q_j, a_j)  is built in int32
// lanes: pmaddubsw for 16 byte products (unsigned weight values, signed activations), pmaddwd
// against the sub-block's int16 scale spread over the vector by one pshufb; then converted to
// float once per super-block. Offsets that do not depend on the weight values (the -32 of Q6_K,
// the -4 of Q3_K, the mins of Q2_K/Q4_K/Q5_K) are taken out of the byte products and applied
// through the activation's per-16 sums (bsums).
#include "simd.h"

namespace qc {
namespace sse42 {
namespace {

// ---- Q8_K activations ------------------------------------------------------------------------

}  // namespace

// y (n / 256 blocks of block_q8_K) = Q8_K(x (n))
void quantize_row_q8_K(const float* x, void* vy, int64_t n) {
  block_q8_K* y = static_cast<block_q8_K*>(vy);
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    __m128 m = _mm_setzero_ps();
    for (int i = 0; i < QK_K; i += 4) m = _mm_max_ps(m, abs_ps(_mm_loadu_ps(x + i)));
    const float amax = hmax_ps(m);
    if (amax == 0.0f) {
      std::memset(&y[b], 0, sizeof(block_q8_K));
      continue;
    }
    const float iscale = 127.0f / amax;
    y[b].d = 1.0f / iscale;
    const __m128 s = _mm_set1_ps(iscale);
    const __m128i top = _mm_set1_epi32(127);
    __m128i sums[4];  // the 4 partial sums of each of 4 consecutive 16-value sub-blocks
    for (int j = 0; j < QK_K / 16; ++j) {  // 16 values: one bsum
      __m128i v[4];
      for (int k = 0; k < 4; ++k)
        v[k] = _mm_min_epi32(_mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + 16 * j + 4 * k), s)), top);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs + 16 * j),
                       _mm_packs_epi16(_mm_packs_epi32(v[0], v[1]), _mm_packs_epi32(v[2], v[3])));
      sums[j % 4] = _mm_add_epi32(_mm_add_epi32(v[0], v[1]), _mm_add_epi32(v[2], v[3]));
      if (j % 4 == 3) {  // lane k of the hadd result: the sum of sub-block j - 3 + k
        const __m128i t = hsum4_epi32(sums[0], sums[1], sums[2], sums[3]);
        const __m128i t16 = _mm_packs_epi32(t, t);
        std::memcpy(&y[b].bsums[j - 3], &t16, 8);
      }
    }
  }
}

namespace {

// ---- shared pieces ---------------------------------------------------------------------------

// 16 unsigned weight values q times 16 int8 activations at a, weighted by the int16 scale in
// every word of sc -> 4 int32 lanes.
static inline __m128i scaled_dot(__m128i q, const int8_t* a, __m128i sc) {
  return _mm_madd_epi16(_mm_maddubs_epi16(q, load128(a)), sc);
}

// sum_j w_j * bsums_j (16 int16 weights in w_lo = words 0..7, w_hi = 8..15) as 4 int32 lanes.
static inline __m128i dot_bsums(const block_q8_K& y, __m128i w_lo, __m128i w_hi) {
  return _mm_add_epi32(_mm_madd_epi16(load128(y.bsums), w_lo), _mm_madd_epi16(load128(y.bsums + 8), w_hi));
}

// ---- Q2_K ------------------------------------------------------------------------------------

}  // namespace

// w (n / 256 blocks of block_q2_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q2_K(int64_t n, const void* vw, const void* va) {
  const block_q2_K* x = static_cast<const block_q2_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const WordMasks wm;
  const __m128i three = _mm_set1_epi8(3), low4 = _mm_set1_epi8(0x0f);
  __m128 acc = _mm_setzero_ps(), acc_min = _mm_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_fp32(x[i].d) * y[i].d, dmin = fp16_to_fp32(x[i].dmin) * y[i].d;
    const __m128i raw = load128(x[i].scales);
    const __m128i sc8 = _mm_and_si128(raw, low4), mn8 = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);
    const __m128i mins = dot_bsums(y[i], _mm_cvtepu8_epi16(mn8), _mm_cvtepu8_epi16(_mm_srli_si128(mn8, 8)));
    acc_min = _mm_add_ps(acc_min, _mm_mul_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mins)));
    const __m128i sc16[2] = {_mm_cvtepu8_epi16(sc8), _mm_cvtepu8_epi16(_mm_srli_si128(sc8, 8))};
    __m128i s0 = _mm_setzero_si128(), s1 = _mm_setzero_si128();
    for (int h = 0; h < 2; ++h)      // halves of 128 values, 32 bytes of qs each
      for (int t = 0; t < 2; ++t) {  // 16 bytes of them: elements 128 h + 32 s + 16 t + l
        const __m128i qs = load128(x[i].qs + 32 * h + 16 * t);
        const int8_t* a = y[i].qs + 128 * h + 16 * t;
        const __m128i* sc = &sc16[h];  // sub-block 8 h + 2 s + t: word 2 s + t of sc16[h]
        s0 = _mm_add_epi32(s0, scaled_dot(_mm_and_si128(qs, three), a, _mm_shuffle_epi8(*sc, wm.m[t])));
        s1 = _mm_add_epi32(s1, scaled_dot(_mm_and_si128(_mm_srli_epi16(qs, 2), three), a + 32,
                                          _mm_shuffle_epi8(*sc, wm.m[2 + t])));
        s0 = _mm_add_epi32(s0, scaled_dot(_mm_and_si128(_mm_srli_epi16(qs, 4), three), a + 64,
                                          _mm_shuffle_epi8(*sc, wm.m[4 + t])));
        s1 = _mm_add_epi32(s1, scaled_dot(_mm_and_si128(_mm_srli_epi16(qs, 6), three), a + 96,
                                          _mm_shuffle_epi8(*sc, wm.m[6 + t])));
      }
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(d), _mm_cvtepi32_ps(_mm_add_epi32(s0, s1))));
  }
  return hsum_ps(acc) - hsum_ps(acc_min);
}

namespace {

// ---- Q3_K ------------------------------------------------------------------------------------

// Bit k of each byte of v moved to bit 2 (the other bits zero).
static inline __m128i bit_to_4(__m128i v, int k) {
  const __m128i four = _mm_set1_epi8(4);
  if (k >= 2) return _mm_and_si128(_mm_srli_epi16(v, k - 2), four);
  return _mm_and_si128(_mm_slli_epi16(v, 2 - k), four);
}

}  // namespace

// w (n / 256 blocks of block_q3_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q3_K(int64_t n, const void* vw, const void* va) {
  const block_q3_K* x = static_cast<const block_q3_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const WordMasks wm;
  const __m128i three = _mm_set1_epi8(3);
  __m128 acc = _mm_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_fp32(x[i].d) * y[i].d;
    const __m128i sc8 = q3_K_scales(x[i].scales);
    const __m128i sc16[2] = {_mm_cvtepi8_epi16(sc8), _mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8))};
    // the values are u - 4 with u = 2 low bits + 4 * high bit in 0..7: take 4 * sum_j scale_j bsum_j out
    const __m128i offs = dot_bsums(y[i], sc16[0], sc16[1]);
    __m128i s0 = _mm_setzero_si128(), s1 = _mm_setzero_si128();
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < 2; ++t) {
        // elements 128 h + 32 s + 16 t + l: low bits at 2 s of qs[32 h + 16 t + l], high bit at
        // bit 4 h + s of hmask[16 t + l]
        const __m128i qs = load128(x[i].qs + 32 * h + 16 * t), hm = load128(x[i].hmask + 16 * t);
        const int8_t* a = y[i].qs + 128 * h + 16 * t;
        const __m128i* sc = &sc16[h];
        const __m128i u0 = _mm_or_si128(_mm_and_si128(qs, three), bit_to_4(hm, 4 * h));
        const __m128i u1 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qs, 2), three), bit_to_4(hm, 4 * h + 1));
        const __m128i u2 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qs, 4), three), bit_to_4(hm, 4 * h + 2));
        const __m128i u3 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qs, 6), three), bit_to_4(hm, 4 * h + 3));
        s0 = _mm_add_epi32(s0, scaled_dot(u0, a, _mm_shuffle_epi8(*sc, wm.m[t])));
        s1 = _mm_add_epi32(s1, scaled_dot(u1, a + 32, _mm_shuffle_epi8(*sc, wm.m[2 + t])));
        s0 = _mm_add_epi32(s0, scaled_dot(u2, a + 64, _mm_shuffle_epi8(*sc, wm.m[4 + t])));
        s1 = _mm_add_epi32(s1, scaled_dot(u3, a + 96, _mm_shuffle_epi8(*sc, wm.m[6 + t])));
      }
    const __m128i sumi = _mm_sub_epi32(_mm_add_epi32(s0, s1), _mm_slli_epi32(offs, 2));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(d), _mm_cvtepi32_ps(sumi)));
  }
  return hsum_ps(acc);
}

namespace {

// ---- Q4_K / Q5_K -----------------------------------------------------------------------------

// The shared Q4_K/Q5_K super-block loop over blocks of type B (block_q4_K or block_q5_K).
// high_bits(b, c, t, &lo, &hi) ORs the 5th bits of bytes 16 t .. 16 t + 15 of chunk c into the
// low- and high-nibble values (nothing for Q4_K).
template <typename B, typename HighBits>
static inline float dot_k4(int64_t nb, const B* x, const block_q8_K* y, HighBits high_bits) {
  const WordMasks wm;
  const __m128i low4 = _mm_set1_epi8(0x0f);
  // mins duplicated per 16-value half of each 32-value sub-block, to pair them with bsums
  const __m128i dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  __m128 acc = _mm_setzero_ps(), acc_min = _mm_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d) * y[i].d, dmin = fp16_to_fp32(x[i].dmin) * y[i].d;
    const __m128i sm = k4_scales_mins(x[i].scales);
    const __m128i mn = _mm_shuffle_epi8(sm, dup_mins);
    const __m128i mins = dot_bsums(y[i], _mm_cvtepu8_epi16(mn), _mm_cvtepu8_epi16(_mm_srli_si128(mn, 8)));
    acc_min = _mm_add_ps(acc_min, _mm_mul_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mins)));
    const __m128i sc = _mm_cvtepu8_epi16(sm);  // the 8 sub-block scales as int16 words
    const int8_t* a = y[i].qs;
    __m128i s0 = _mm_setzero_si128(), s1 = _mm_setzero_si128();
    for (int c = 0; c < 4; ++c) {  // 64 values: 32 low nibbles (sub-block 2c), 32 high (2c + 1)
      __m128i plo = _mm_setzero_si128(), phi = _mm_setzero_si128();
      for (int t = 0; t < 2; ++t) {
        const __m128i q = load128(x[i].qs + 32 * c + 16 * t);
        __m128i lo = _mm_and_si128(q, low4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
        high_bits(x[i], c, t, &lo, &hi);
        // values <= 31: pair sums <= 2 * 31 * 127, two of them still fit int16
        plo = _mm_add_epi16(plo, _mm_maddubs_epi16(lo, load128(a + 64 * c + 16 * t)));
        phi = _mm_add_epi16(phi, _mm_maddubs_epi16(hi, load128(a + 64 * c + 32 + 16 * t)));
      }
      s0 = _mm_add_epi32(s0, _mm_madd_epi16(plo, _mm_shuffle_epi8(sc, wm.m[2 * c])));
      s1 = _mm_add_epi32(s1, _mm_madd_epi16(phi, _mm_shuffle_epi8(sc, wm.m[2 * c + 1])));
    }
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(d), _mm_cvtepi32_ps(_mm_add_epi32(s0, s1))));
  }
  return hsum_ps(acc) - hsum_ps(acc_min);
}

}  // namespace

// w (n / 256 blocks of block_q4_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q4_K(int64_t n, const void* vw, const void* va) {
  return dot_k4(n / QK_K, static_cast<const block_q4_K*>(vw), static_cast<const block_q8_K*>(va),
                [](const block_q4_K&, int, int, __m128i*, __m128i*) {});
}

// w (n / 256 blocks of block_q5_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q5_K(int64_t n, const void* vw, const void* va) {
  // element e has its 5th bit at bit e / 32 of qh[e % 32]: chunk c's low nibbles take bit 2c,
  // its high nibbles bit 2c + 1, of qh[16 t + l]
  return dot_k4(n / QK_K, static_cast<const block_q5_K*>(vw), static_cast<const block_q8_K*>(va),
                [](const block_q5_K& b, int c, int t, __m128i* lo, __m128i* hi) {
                  const __m128i hb = _mm_srli_epi16(load128(b.qh + 16 * t), 2 * c);
                  *lo = _mm_or_si128(*lo, _mm_slli_epi16(_mm_and_si128(hb, _mm_set1_epi8(1)), 4));
                  *hi = _mm_or_si128(*hi, _mm_slli_epi16(_mm_and_si128(hb, _mm_set1_epi8(2)), 3));
                });
}

namespace {

// ---- Q6_K ------------------------------------------------------------------------------------

}  // namespace

// w (n / 256 blocks of block_q6_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q6_K(int64_t n, const void* vw, const void* va) {
  const block_q6_K* x = static_cast<const block_q6_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const WordMasks wm;
  const __m128i low4 = _mm_set1_epi8(0x0f), m03 = _mm_set1_epi8(0x03);
  __m128 acc = _mm_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_fp32(x[i].d) * y[i].d;
    const __m128i sc8 = load128(x[i].scales);
    const __m128i sc16[2] = {_mm_cvtepi8_epi16(sc8), _mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8))};
    // the values are u - 32 with u = 4 low bits + 16 * 2 high bits in 0..63: take 32 * sum_j scale_j bsum_j out
    const __m128i offs = dot_bsums(y[i], sc16[0], sc16[1]);
    __m128i s0 = _mm_setzero_si128(), s1 = _mm_setzero_si128();
    for (int h = 0; h < 2; ++h) {
      // element 128 h + 16 m + l (m < 8, sub-block 8 h + m): low 4 bits are nibble m / 4 of
      // ql[64 h + 16 (m % 4) + l], high 2 bits are bits 2 (m / 2) of qh[32 h + 16 (m % 2) + l]
      const __m128i qh[2] = {load128(x[i].qh + 32 * h), load128(x[i].qh + 32 * h + 16)};
      const int8_t* a = y[i].qs + 128 * h;
      for (int m4 = 0; m4 < 4; ++m4) {
        const __m128i ql = load128(x[i].ql + 64 * h + 16 * m4);
        const __m128i q = qh[m4 % 2];
        // m = m4: qh bits 2 (m4 / 2); m = m4 + 4: bits 2 (m4 / 2) + 4
        const __m128i h0 = _mm_and_si128(_mm_srli_epi16(q, 2 * (m4 / 2)), m03);
        const __m128i h1 = _mm_and_si128(_mm_srli_epi16(q, 2 * (m4 / 2) + 4), m03);
        const __m128i u0 = _mm_or_si128(_mm_and_si128(ql, low4), _mm_slli_epi16(h0, 4));
        const __m128i u1 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(ql, 4), low4), _mm_slli_epi16(h1, 4));
        // u <= 63: pair sums <= 2 * 63 * 127, one per pmaddwd
        s0 = _mm_add_epi32(s0, scaled_dot(u0, a + 16 * m4, _mm_shuffle_epi8(sc16[h], wm.m[m4])));
        s1 = _mm_add_epi32(s1, scaled_dot(u1, a + 16 * (m4 + 4), _mm_shuffle_epi8(sc16[h], wm.m[m4 + 4])));
      }
    }
    const __m128i sumi = _mm_sub_epi32(_mm_add_epi32(s0, s1), _mm_slli_epi32(offs, 5));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(d), _mm_cvtepi32_ps(sumi)));
  }
  return hsum_ps(acc);
}

}  // namespace sse42
}  // namespace qc
