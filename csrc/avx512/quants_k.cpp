// AVX-512 VNNI dot products of the K-quants (Q2_K .. Q6_K) against Q8_K activations.
//
// 64 values per 512-bit step, laid out to match 64 consecutive activations, so the activation
// side is one plain load. vpmaddubsw makes the byte products into int16 pair sums (no
// saturation: weights <= 63, |activations| <= 127), and vpdpwssd weights each pair sum by its
// sub-block scale and accumulates it into int32 lanes in one instruction. Per super-block the
// int32 sum is converted once and accumulated with FMA. The value offsets (Q2_K/Q4_K/Q5_K mins,
// the -4 of Q3_K, the -32 of Q6_K) go through the activation's per-16 sums (bsums), at 256 bits as in the AVX2 code.
#include "simd512.h"

#include "../gemv.h"

namespace qc {
namespace avx512 {
namespace {

// Shuffle masks for a vector holding 8 int16 scales in each 128-bit lane: mask k fills lanes 0
// and 1 (256 bits, 16 words) with scale 2k and lanes 2 and 3 with scale 2k + 1 -- the scales of
// the two 32-value sub-blocks of a 64-value step.
static inline __m512i pair_mask_32(int k) {
  alignas(64) int8_t b[64];
  for (int i = 0; i < 64; ++i) b[i] = (int8_t)(4 * k + (i >= 32 ? 2 : 0) + (i & 1));
  return _mm512_load_si512(b);
}

// The same for 16-value sub-blocks (Q6_K): mask g fills 128-bit lane i with scale 4g + i.
static inline __m512i quad_mask_16(int g) {
  alignas(64) int8_t b[64];
  for (int i = 0; i < 64; ++i) b[i] = (int8_t)(2 * (4 * g + i / 16) + (i & 1));
  return _mm512_load_si512(b);
}

// 8 unsigned 8-bit scales (bytes 0..7 of s8) as int16 words, repeated in each 128-bit lane.
static inline __m512i scales_u8_to_words(__m128i s8) { return _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(s8)); }

// The Q4_K/Q5_K min term of one super-block: sum over the 8 sub-blocks of min_j * (sum of its 32
// activations), as 8 int32 lanes (mins in bytes 8..15 of sm, paired with the 16 bsums).
static inline __m256i k4_min_term(__m128i sm, const block_q8_K& y) {
  const __m128i dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  return _mm256_madd_epi16(load256(y.bsums), _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, dup)));
}

// Q2_K/Q3_K: the 2-bit fields of one 32-byte half of qs (in both 256-bit halves of q2) for
// step j (0, 1): bits 4j..4j+1 in the low half, 4j+2..4j+3 in the high half, i.e. values
// 64j .. 64j+63 of the 128-value half, in order.
static inline __m512i two_bits_step(__m512i q2, int j) {
  const __m512i shift = j ? _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6) : _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  return _mm512_and_si512(_mm512_srlv_epi64(q2, shift), _mm512_set1_epi8(3));
}

}  // namespace

// w (n / 256 blocks of block_q2_K) . a (n / 256 blocks of block_q8_K)
QC_VNNI float vec_dot_q2_K(int64_t n, const void* vw, const void* va) {
  const block_q2_K* x = static_cast<const block_q2_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const __m512i g0 = quad_mask_16(0), g1 = quad_mask_16(1);
  __m512 acc = _mm512_setzero_ps();
  __m256 acc_min = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = h2f(x[i].d) * y[i].d, dmin = h2f(x[i].dmin) * y[i].d;
    // scales[j]: low nibble the scale, high nibble the min of 16-value sub-block j
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m128i sc8 = _mm_and_si128(raw, _mm_set1_epi8(0x0f));
    const __m128i mn8 = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0f));
    const __m256i mins = _mm256_madd_epi16(load256(y[i].bsums), _mm256_cvtepu8_epi16(mn8));
    acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(mins), acc_min);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i q2 = _mm512_broadcast_i64x4(load256(x[i].qs + 32 * h));
      const __m512i sc = scales_u8_to_words(h ? _mm_srli_si128(sc8, 8) : sc8);
      const int8_t* a = y[i].qs + 128 * h;
      s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(two_bits_step(q2, 0), load512(a)), _mm512_shuffle_epi8(sc, g0));
      s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(two_bits_step(q2, 1), load512(a + 64)), _mm512_shuffle_epi8(sc, g1));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc);
  }
  return _mm512_reduce_add_ps(acc) - hsum_ps(acc_min);
}

namespace {

// Rotation count that takes bit c of a byte to bit 2 of the same byte.
static constexpr long long R(int c) { return (2 - c + 64) % 64; }

}  // namespace

// w (n / 256 blocks of block_q3_K) . a (n / 256 blocks of block_q8_K)
QC_VNNI float vec_dot_q3_K(int64_t n, const void* vw, const void* va) {
  const block_q3_K* x = static_cast<const block_q3_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const __m512i g0 = quad_mask_16(0), g1 = quad_mask_16(1);
  const __m512i four = _mm512_set1_epi8(4);
  __m512 acc = _mm512_setzero_ps();
  __m256 acc_off = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = h2f(x[i].d) * y[i].d;
    const __m128i sc8 = x86::q3_K_scales(x[i].scales);
    // values are u - 4 with u = 2 low bits + 4 * high bit: 4 * sum_j scale_j * bsum_j comes off at the end
    const __m256i offs = _mm256_madd_epi16(load256(y[i].bsums), _mm256_cvtepi8_epi16(sc8));
    acc_off = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_slli_epi32(offs, 2)), acc_off);
    // hmask byte l holds the high bit of value l of each 32-value chunk c (0..7) at bit c
    const __m512i hm = _mm512_broadcast_i64x4(load256(x[i].hmask));
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i q2 = _mm512_broadcast_i64x4(load256(x[i].qs + 32 * h));
      const __m512i sc = _mm512_broadcast_i32x4(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
      const int8_t* a = y[i].qs + 128 * h;
      // chunks c = 4h + 2j (low 256 bits) and c + 1 (high 256 bits) of step j: a rotation by
      // 2 - c (mod 64) moves bit c of every byte to bit 2 of the same byte (value + 4)
      const __m512i r0 = _mm512_setr_epi64(R(4 * h), R(4 * h), R(4 * h), R(4 * h), R(4 * h + 1), R(4 * h + 1), R(4 * h + 1), R(4 * h + 1));
      const __m512i r1 = _mm512_setr_epi64(R(4 * h + 2), R(4 * h + 2), R(4 * h + 2), R(4 * h + 2), R(4 * h + 3), R(4 * h + 3), R(4 * h + 3), R(4 * h + 3));
      const __m512i u0 = _mm512_or_si512(two_bits_step(q2, 0), _mm512_and_si512(_mm512_rolv_epi64(hm, r0), four));
      const __m512i u1 = _mm512_or_si512(two_bits_step(q2, 1), _mm512_and_si512(_mm512_rolv_epi64(hm, r1), four));
      s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(u0, load512(a)), _mm512_shuffle_epi8(sc, g0));
      s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(u1, load512(a + 64)), _mm512_shuffle_epi8(sc, g1));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc);
  }
  return _mm512_reduce_add_ps(acc) - hsum_ps(acc_off);
}

// w (n / 256 blocks of block_q4_K) . a (n / 256 blocks of block_q8_K)
QC_VNNI float vec_dot_q4_K(int64_t n, const void* vw, const void* va) {
  const block_q4_K* x = static_cast<const block_q4_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const __m512i m0 = pair_mask_32(0), m1 = pair_mask_32(1), m2 = pair_mask_32(2), m3 = pair_mask_32(3);
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  // 32 bytes in both halves, the high half shifted by 4: [low nibbles, high nibbles] =
  // [sub-block 2k, sub-block 2k + 1] for qs bytes 32k .. 32k + 31
  const __m512i nib_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  __m512 acc = _mm512_setzero_ps();
  __m256 acc_min = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = h2f(x[i].d) * y[i].d, dmin = h2f(x[i].dmin) * y[i].d;
    const __m128i sm = x86::k4_scales_mins(x[i].scales);
    acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(k4_min_term(sm, y[i])), acc_min);
    const __m512i sc = scales_u8_to_words(sm);
    const int8_t* a = y[i].qs;
    const uint8_t* q = x[i].qs;
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
#define QC_Q4K_STEP(k, s, mk)                                                                                  \
  {                                                                                                            \
    const __m512i u = _mm512_and_si512(_mm512_srlv_epi64(_mm512_broadcast_i64x4(load256(q + 32 * k)), nib_shift), low4); \
    s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u, load512(a + 64 * k)), _mm512_shuffle_epi8(sc, mk));    \
  }
    QC_Q4K_STEP(0, s0, m0)
    QC_Q4K_STEP(1, s1, m1)
    QC_Q4K_STEP(2, s0, m2)
    QC_Q4K_STEP(3, s1, m3)
#undef QC_Q4K_STEP
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc);
  }
  return _mm512_reduce_add_ps(acc) - hsum_ps(acc_min);
}

// w (n / 256 blocks of block_q5_K) . a (n / 256 blocks of block_q8_K)
QC_VNNI float vec_dot_q5_K(int64_t n, const void* vw, const void* va) {
  const block_q5_K* x = static_cast<const block_q5_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const __m512i m0 = pair_mask_32(0), m1 = pair_mask_32(1), m2 = pair_mask_32(2), m3 = pair_mask_32(3);
  const __m512i low4 = _mm512_set1_epi8(0x0f), fifth = _mm512_set1_epi8(0x10);
  const __m512i nib_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  __m512 acc = _mm512_setzero_ps();
  __m256 acc_min = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = h2f(x[i].d) * y[i].d, dmin = h2f(x[i].dmin) * y[i].d;
    const __m128i sm = x86::k4_scales_mins(x[i].scales);
    acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(k4_min_term(sm, y[i])), acc_min);
    const __m512i sc = scales_u8_to_words(sm);
    // qh byte l in both halves; step k tests bit 2k (low half: low nibbles) and 2k + 1 (high half)
    const __m512i qh = _mm512_broadcast_i64x4(load256(x[i].qh));
    const int8_t* a = y[i].qs;
    const uint8_t* q = x[i].qs;
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
#define QC_Q5K_STEP(k, s, mk)                                                                                  \
  {                                                                                                            \
    __m512i u = _mm512_and_si512(_mm512_srlv_epi64(_mm512_broadcast_i64x4(load256(q + 32 * k)), nib_shift), low4); \
    const __m512i bits = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * k))),                           \
                                            _mm256_set1_epi8((char)(1 << (2 * k + 1))), 1);                    \
    u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(qh, bits), u, fifth);                                  \
    s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u, load512(a + 64 * k)), _mm512_shuffle_epi8(sc, mk));    \
  }
    QC_Q5K_STEP(0, s0, m0)
    QC_Q5K_STEP(1, s1, m1)
    QC_Q5K_STEP(2, s0, m2)
    QC_Q5K_STEP(3, s1, m3)
#undef QC_Q5K_STEP
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc);
  }
  return _mm512_reduce_add_ps(acc) - hsum_ps(acc_min);
}

namespace {

// The one-row decode (gemv_q6_K) prefetches its row this far ahead, into L1, after each block's
// loads (gemv.h): without it one thread read at ~21 GB/s (bench/README.md, "avx512 Q6_K decode")
constexpr size_t kQ6Prefetch = 4096;

// out[i] = w (n / 256 blocks of block_q6_K) . activation row i (A rows of n / 256 block_q8_K, arb
// bytes apart): the weights unpacked once for the A rows, each row's arithmetic that of A = 1
// (vec_dot_q6_K), so its value is bit for bit the same.
template <int A, bool kPrefetch = false>
QC_VNNI static void dots_q6_K(int64_t n, const block_q6_K* x, const uint8_t* va, size_t arb, float* out) {
  const __m512i g0 = quad_mask_16(0), g1 = quad_mask_16(1);
  const __m512i low4 = _mm512_set1_epi8(0x0f), bits45 = _mm512_set1_epi8(0x30);
  // qh byte l (in both halves) holds the 2 high bits of values l, l+32, l+64, l+96 of a
  // 128-value half at bits 0-1, 2-3, 4-5, 6-7: shift each pair to bits 4-5
  const __m512i shl_01 = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2);
  const __m512i shr_23 = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  __m512 acc[A];
  __m256 acc_off[A];
  for (int k = 0; k < A; ++k) acc[k] = _mm512_setzero_ps(), acc_off[k] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const block_q8_K* y[A];
    for (int k = 0; k < A; ++k) y[k] = reinterpret_cast<const block_q8_K*>(va + k * arb) + i;
    const float dx = h2f(x[i].d);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    __m512i s0[A], s1[A];
    for (int k = 0; k < A; ++k) {
      // values are u - 32 with u in 0..63: 32 * sum_j scale_j * bsum_j comes off at the end
      const __m256i offs = _mm256_madd_epi16(load256(y[k]->bsums), sc16);
      acc_off[k] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[k]->d), _mm256_cvtepi32_ps(_mm256_slli_epi32(offs, 5)), acc_off[k]);
      s0[k] = _mm512_setzero_si512(), s1[k] = _mm512_setzero_si512();
    }
    for (int h = 0; h < 2; ++h) {
      // ql bytes 0..63 of this half: low nibbles are values 0..63, high nibbles values 64..127
      const __m512i ql = load512(x[i].ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(load256(x[i].qh + 32 * h));
      const __m512i u01 = _mm512_or_si512(_mm512_and_si512(ql, low4), _mm512_and_si512(_mm512_sllv_epi64(qh, shl_01), bits45));
      const __m512i u23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                          _mm512_and_si512(_mm512_srlv_epi64(qh, shr_23), bits45));
      const __m512i sc = _mm512_broadcast_i32x4(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
      const __m512i sc0 = _mm512_shuffle_epi8(sc, g0), sc1 = _mm512_shuffle_epi8(sc, g1);
      for (int k = 0; k < A; ++k) {
        const int8_t* a = y[k]->qs + 128 * h;
        s0[k] = _mm512_dpwssd_epi32(s0[k], _mm512_maddubs_epi16(u01, load512(a)), sc0);
        s1[k] = _mm512_dpwssd_epi32(s1[k], _mm512_maddubs_epi16(u23, load512(a + 64)), sc1);
      }
    }
    for (int k = 0; k < A; ++k)
      acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(dx * y[k]->d), _mm512_cvtepi32_ps(_mm512_add_epi32(s0[k], s1[k])), acc[k]);
    if (kPrefetch) prefetch_after_loads(reinterpret_cast<const uint8_t*>(x + i) + kQ6Prefetch, sizeof(block_q6_K));
    else if (A > 2) prefetch_tiles_ahead(reinterpret_cast<const uint8_t*>(x + i), sizeof(block_q6_K));
  }
  for (int k = 0; k < A; ++k) out[k] = _mm512_reduce_add_ps(acc[k]) - hsum_ps(acc_off[k]);
}

}  // namespace

// w (n / 256 blocks of block_q6_K) . a (n / 256 blocks of block_q8_K)
QC_VNNI float vec_dot_q6_K(int64_t n, const void* vw, const void* va) {
  float y;
  dots_q6_K<1>(n, static_cast<const block_q6_K*>(vw), static_cast<const uint8_t*>(va), 0, &y);
  return y;
}

// The decode forms of Q6_K over Q8_K activations (gemv_fn, gemv_rows_fn): vec_dot row by row with
// the rows prefetched ahead, and for several activation rows, each weight row unpacked once for up
// to 4 of them, read from memory by that pass (gemv_rows_streams): 3-4 rows with gemv.h's
// several-row prefetch, 2 with the hardware's alone, which was faster for them (bench/README.md,
// "Several-row tile prefetch on avx512").
QC_VNNI void gemv_q6_K(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  for (int r = 0; r < n_rows; ++r)
    dots_q6_K<1, true>(n, reinterpret_cast<const block_q6_K*>(static_cast<const uint8_t*>(w) + r * wrb),
                       static_cast<const uint8_t*>(a), 0, y + r);
}
QC_VNNI void gemv_q6_K_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a,
                            float* y, size_t ys) {
  const uint8_t* a = static_cast<const uint8_t*>(va);
  float out[4];
  for (int r = 0; r < n_rows; ++r) {
    const block_q6_K* x = reinterpret_cast<const block_q6_K*>(static_cast<const uint8_t*>(vw) + r * wrb);
    for (int i = 0; i < n_a; i += 4) {
      const int m = n_a - i < 4 ? n_a - i : 4;
      switch (m) {
        case 4: dots_q6_K<4>(n, x, a + i * arb, arb, out); break;
        case 3: dots_q6_K<3>(n, x, a + i * arb, arb, out); break;
        case 2: dots_q6_K<2>(n, x, a + i * arb, arb, out); break;
        default: dots_q6_K<1>(n, x, a + i * arb, arb, out); break;
      }
      for (int k = 0; k < m; ++k) y[(i + k) * ys + r] = out[k];
    }
  }
}

}  // namespace avx512
}  // namespace qc
