// AVX2 decode kernels of Q4_K, Q5_K and Q6_K weights (WeightKernels::gemv, and Q5_K's and Q6_K's
// gemv_rows), and of the repacked Q4_K_R4 and Q5_K_R4 (LayoutKernels::gemv and gemv_rows). Q6_K:
// its own kernel below, row by row. Q4_K and Q5_K, stored or repacked: the Quad form below, one
// function for both (Q5_K's 5th bits OR-ed into the nibbles as vec_dot_q5_K does).
//
// vec_dot spends about half of its work per super-block outside the byte products: unpacking
// the 6-bit scales and mins, converting d and dmin, the min term against the activation sums.
// Here that work is shared by a tile's four rows: two rows' 16-byte block headers (d, dmin, 12
// bytes of scales) are one register, one row per 128-bit lane, unpacked by the same few vector
// operations; one vpmaddwd gives both rows' min terms; one conversion gives the d and dmin of 4
// rows.
#include "simd.h"

#include "../gemv.h"
#include "../repack.h"

namespace qc {
namespace QC_AVX2_NS {
namespace {

static inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// acc + the byte products of u (unsigned, <= 15) and a in pairs, each pair weighted by its word of sc
static inline __m256i scaled_dot(__m256i acc, __m256i u, __m256i a, __m256i sc) {
  const __m256i p = _mm256_maddubs_epi16(u, a);
#ifdef QC_DOT_VNNI
  return dpwssd(acc, p, sc);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc));
#endif
}

// m[j]: the byte shuffle that spreads int16 word j of each 128-bit lane over the lane
struct WordSpread {
  __m256i m[8];
  WordSpread() {
    for (int j = 0; j < 8; ++j) m[j] = _mm256_set1_epi16((short)(2 * j | (2 * j + 1) << 8));
  }
};

// Per 128-bit lane, the dwords [d | dmin << 16, w0, w1, w2] of one row's block header -> bytes
// 0..7 the 8 scales, 8..15 the 8 mins (the layout of k4_scales_mins): scales 0..3 = w0 & 0x3f..,
// 4..7 = (w2 & 0x0f..) | (w0 >> 2 & 0x30..); mins 0..3 = w1 & 0x3f.., 4..7 = (w2 >> 4 & 0x0f..)
// | (w1 >> 2 & 0x30..).
static inline __m256i scales_mins_2(__m256i hdr) {
  const __m256i x = _mm256_shuffle_epi32(hdr, _MM_SHUFFLE(3, 2, 3, 1));  // w0 w2 w1 w2
  const __m256i z = _mm256_shuffle_epi32(hdr, _MM_SHUFFLE(2, 2, 1, 1));  // w0 w0 w1 w1
  const __m256i shift = _mm256_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4);
  const __m256i keep_lo = _mm256_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f,
                                            0x3f3f3f3f, 0x0f0f0f0f);
  const __m256i keep_hi = _mm256_setr_epi32(0, 0x30303030, 0, 0x30303030, 0, 0x30303030, 0, 0x30303030);
  return _mm256_or_si256(_mm256_and_si256(_mm256_srlv_epi32(x, shift), keep_lo),
                         _mm256_and_si256(_mm256_srli_epi32(z, 2), keep_hi));
}

// scales_mins_2's two rows (sm) -> sc[0], sc[1]: each row's 8 scales as int16 words, in both lanes
static inline void row_scales(__m256i sm, __m256i* sc) {
  const __m256i sc16 = _mm256_unpacklo_epi8(sm, _mm256_setzero_si256());
  sc[0] = _mm256_permute2x128_si256(sc16, sc16, 0x00), sc[1] = _mm256_permute2x128_si256(sc16, sc16, 0x11);
}

// ---- Q4_K and Q5_K in the Quad form ----------------------------------------------------------
// A tile's four rows (repack.h's Q4_K_R4 / Q5_K_R4, or four stored rows) regrouped per 64-value
// step as the Quad form of gemv.cpp: transpose4 puts each row's group of 4 bytes in its own 32-bit
// lane (the low half the step's values 0..15 of a 32-value sub-block, the high half 16..31), the
// low nibbles being sub-block 2j, the high ones 2j + 1 (Q5_K: with the 5th bits of qh, transposed
// the same way, at bit 4). Against an activation group broadcast to the four lanes, the four
// groups' vpmaddubsw sum in int16 (<= 4 * 2 * 31 * 128) and one vpmaddwd per sub-block weights
// them with each row's scale (spread to its lane): 10 multiplies per 256 products and activation
// row where the row-per-register form spends 16, and one int32 sum per activation row instead of
// one per weight row. One activation row (the gemv) makes the same integers in the
// row-per-register form (one_row) and shares the float steps, so each row's value is the same
// bits whatever the batch, and the stored rows' the repacked ones'.

// The byte shuffles of a tile's scales: scale_pos[s] takes sub-block s's scale (s < 4 from
// several_rows' sc[0], 4 + s from sc[1]) into each row's lane as two int16 words. sc holds, per
// 32-bit group s, the 4 rows' scales in the order (0, 2, 1, 3) in the low lane, (1, 3, 0, 2) in
// the high one.
struct KQuadConsts {
  WordSpread spread;  // the one-row form's
  __m256i scale_pos[4];
  KQuadConsts() {
    static const int lane0[4] = {0, 2, 1, 3}, lane1[4] = {2, 0, 3, 1};  // row r's byte in the group
    for (int s = 0; s < 4; ++s) {
      alignas(32) int8_t m[32];
      for (int r = 0; r < 4; ++r)
        for (int h = 0; h < 2; ++h) {
          const int8_t b = (int8_t)(4 * s + (h ? lane1 : lane0)[r]);
          int8_t* d = m + 16 * h + 4 * r;
          d[0] = b, d[1] = -128, d[2] = b, d[3] = -128;
        }
      scale_pos[s] = load(m);
    }
  }
};

// Where k_quad reads four rows' super-block i (Block: block_q4_K or block_q5_K): the headers of
// rows 0 | 1 and 2 | 3 (one row per 128-bit lane), row r's qs (and Q5_K's qh), and the prefetch
// after it. KTile: a quad of Q4_K_R4 / Q5_K_R4 tiles (one sequential stream, each tile prefetched
// ahead: prefetch_tiles_ahead); KRows: R <= 4 stored rows (rows past R repeat the last one), the
// next R rows prefetched at the pace these are read (gemv.h).
template <typename Block>
struct KTile {
  typedef Block B;
  static constexpr size_t kRest = sizeof(B) - 16;  // a row's bytes past its header in the tile
  const uint8_t* w;
  const uint8_t* tile(int64_t i) const { return w + i * 4 * sizeof(B); }
  __m256i headers(int64_t i, int p) const { return load(tile(i) + 32 * p); }
  const uint8_t* qh(int64_t i, int r) const { return tile(i) + 64 + kRest * r; }
  const uint8_t* qs(int64_t i, int r) const { return tile(i) + 64 + kRest * r + (kRest - QK_K / 2); }
  void prefetch(int64_t i) const { prefetch_tiles_ahead(tile(i), 4 * sizeof(B)); }
};
template <int R, typename Block>
struct KRows {
  typedef Block B;
  const uint8_t* w;
  size_t wrb;
  const uint8_t* row(int64_t i, int r) const { return w + (r < R ? r : R - 1) * wrb + i * sizeof(B); }
  __m256i headers(int64_t i, int p) const {
    return _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(row(i, 2 * p + 1)), reinterpret_cast<const __m128i*>(row(i, 2 * p)));
  }
  const uint8_t* qh(int64_t i, int r) const { return row(i, r) + offsetof(B, qh); }
  const uint8_t* qs(int64_t i, int r) const { return row(i, r) + offsetof(B, qs); }
  void prefetch(int64_t i) const {
    if (R == 4) prefetch_tiles<R * sizeof(B)>(w + R * wrb, R * wrb, i, R * wrb <= kPrefetchL1Tile);
  }
};

template <class Src>
static constexpr bool kFifthBit = std::is_same<typename Src::B, block_q5_K>::value;

// The values 0..15 (Q5_K: 0..31) of chunk j's low (sub-block 2j) and high (2j + 1) nibbles of the
// 32 bytes q; Q5_K's 5th bits: bits 2j and 2j + 1 of the bytes h at the same places
template <bool fifth>
static inline void nibbles(__m256i q, __m256i h, int j, __m256i& lo, __m256i& hi) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
  if (fifth) {
    const __m256i hb = _mm256_srli_epi16(h, 2 * j), one = _mm256_set1_epi8(1), two = _mm256_set1_epi8(2);
    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(hb, two), 3));
  }
}

// One activation row's integer sums of super-block i in the row-per-register form (no activation
// broadcast, which costs one row more than the 10 multiplies it saves), summed into the Quad form's
// lanes: s = [rows 0..3 | rows 0..3], each row's two lanes its whole sum split in two. The same
// integers, so the same bits as the Quad form's.
template <class Src>
static inline void one_row(int64_t i, const Src& src, const block_q8_K* a, __m256i sm0, __m256i sm1,
                           const KQuadConsts& c, __m256i& s) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i sc[4];  // row r's 8 scales as int16 words, in both lanes
  row_scales(sm0, sc), row_scales(sm1, sc + 2);
  __m256i d[4] = {zero, zero, zero, zero};
  for (int j = 0; j < 4; ++j) {
    const __m256i alo = load(a->qs + 64 * j), ahi = load(a->qs + 64 * j + 32);
    for (int r = 0; r < 4; ++r) {
      __m256i h = zero, ulo, uhi;
      if constexpr (kFifthBit<Src>) h = load(src.qh(i, r));
      nibbles<kFifthBit<Src>>(load(src.qs(i, r) + 32 * j), h, j, ulo, uhi);
      d[r] = scaled_dot(d[r], ulo, alo, _mm256_shuffle_epi8(sc[r], c.spread.m[2 * j]));
      d[r] = scaled_dot(d[r], uhi, ahi, _mm256_shuffle_epi8(sc[r], c.spread.m[2 * j + 1]));
    }
  }
  // [r0, r1, r2, r3 | r0, r1, r2, r3], each row's 8 lanes summed in pairs, then pairs of pairs
  s = _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
}

// A activation rows' integer sums of super-block i in the Quad form (see k_quad): s[k] +=
// [rows 0..3 of values 0..15 of each sub-block | of 16..31], scaled (sm0, sm1: scales_mins_2 of
// rows 0 | 1 and 2 | 3).
template <int A, class Src>
static inline void several_rows(int64_t i, const Src& src, const uint8_t* va, size_t arb, __m256i sm0, __m256i sm1,
                                const KQuadConsts& c, __m256i* s) {
  // the rows' scales in scale_pos's order
  const __m256i u = _mm256_unpacklo_epi8(sm0, sm1);  // [r0, r2 per scale | r1, r3]
  const __m256i u2 = _mm256_permute4x64_epi64(u, _MM_SHUFFLE(1, 0, 3, 2));
  const __m256i sc[2] = {_mm256_unpacklo_epi16(u, u2), _mm256_unpackhi_epi16(u, u2)};
  __m256i th[4] = {};  // Q5_K: the rows' qh in the Quad form, as the qs chunks below
  if constexpr (kFifthBit<Src>) {
    __m256i h[4];
    for (int r = 0; r < 4; ++r) h[r] = load(src.qh(i, r));
    transpose4(h, th);
  }
  for (int j = 0; j < 4; ++j) {
    __m256i q[4], t[4];
    for (int r = 0; r < 4; ++r) q[r] = load(src.qs(i, r) + 32 * j);
    transpose4(q, t);
    __m256i lo[4], hi[4];
    for (int m = 0; m < 4; ++m) nibbles<kFifthBit<Src>>(t[m], th[m], j, lo[m], hi[m]);
    const __m256i slo = _mm256_shuffle_epi8(sc[j >> 1], c.scale_pos[(2 * j) & 3]);
    const __m256i shi = _mm256_shuffle_epi8(sc[j >> 1], c.scale_pos[(2 * j + 1) & 3]);
    for (int k = 0; k < A; ++k) {
      // activation row k's groups: v[m] values 64j + 4m .. of each half, v[4 + m] of 64j + 32 + 4m ..
      const block_q8_K* ak = reinterpret_cast<const block_q8_K*>(va + k * arb) + i;
      const __m256i alo = load(ak->qs + 64 * j), ahi = load(ak->qs + 64 * j + 32);
      const __m256i v[8] = {bcast32<0>(alo), bcast32<1>(alo), bcast32<2>(alo), bcast32<3>(alo),
                            bcast32<0>(ahi), bcast32<1>(ahi), bcast32<2>(ahi), bcast32<3>(ahi)};
      __m256i plo = _mm256_maddubs_epi16(lo[0], v[0]), phi = _mm256_maddubs_epi16(hi[0], v[4]);
      for (int m = 1; m < 4; ++m) {
        plo = _mm256_add_epi16(plo, _mm256_maddubs_epi16(lo[m], v[m]));
        phi = _mm256_add_epi16(phi, _mm256_maddubs_epi16(hi[m], v[4 + m]));
      }
#ifdef QC_DOT_VNNI
      s[k] = dpwssd(dpwssd(s[k], plo, slo), phi, shi);
#else
      s[k] = _mm256_add_epi32(s[k], _mm256_add_epi32(_mm256_madd_epi16(plo, slo), _mm256_madd_epi16(phi, shi)));
#endif
    }
  }
}

// y[k * ys + r] (r < R) = row r of the four rows src reads (n / 256 super-blocks) . activation row
// k (A rows of Q8_K, arb bytes apart; A = 1: one_row). Several rows' groups are broadcast in the
// kernel: a per-call broadcast copy, 4 bytes per value, ran slower from memory (bench/README.md,
// "AVX2 Q4_K in the Quad form, Q5_0's one row broadcast per call"). Per tile: the rows' scales
// and mins (scales_mins_2), the mins term of each row against the sub-block sums, and per
// activation row one int32 sum [rows 0..3 of values 0..15 of each sub-block | of 16..31]; the tile
// ends in one FMA per activation row of [the two halves' sum | the mins term] with
// [d * d_a | -dmin * d_a], so y = the two halves of its accumulator.
template <int R, int A, class Src>
static void k_quad(int64_t n, const Src& src, const uint8_t* va, size_t arb, float* y, size_t ys, const KQuadConsts& c) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256 neg_high = _mm256_castsi256_ps(_mm256_setr_epi32(0, 0, 0, 0, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN));
  __m256 acc[A];
  for (int k = 0; k < A; ++k) acc[k] = _mm256_setzero_ps();
  const int64_t nb = n / QK_K;
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i h01 = src.headers(i, 0), h23 = src.headers(i, 1);
    const __m256i sm0 = scales_mins_2(h01), sm1 = scales_mins_2(h23);
    // [d_0 .. d_3 | -dmin_0 .. -dmin_3]: the header's first words, rows in order
    const __m256i dd = _mm256_permutevar8x32_epi32(_mm256_unpacklo_epi32(h01, h23), _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
    const __m256 dm = _mm256_xor_ps(_mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(dd)),
                                                             _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)),
                                    neg_high);
    const __m256i mn0 = _mm256_unpackhi_epi8(sm0, zero), mn1 = _mm256_unpackhi_epi8(sm1, zero);  // mins: r0 | r1, r2 | r3
    __m256i s[A];
    for (int k = 0; k < A; ++k) s[k] = zero;
    if constexpr (A == 1) {
      one_row(i, src, reinterpret_cast<const block_q8_K*>(va) + i, sm0, sm1, c, s[0]);
    } else {
      several_rows<A>(i, src, va, arb, sm0, sm1, c, s);
    }
    for (int k = 0; k < A; ++k) {
      const block_q8_K* ak = reinterpret_cast<const block_q8_K*>(va + k * arb) + i;
      const __m256i t = _mm256_madd_epi16(load(ak->bsums), _mm256_set1_epi16(1));
      const __m256i sbs = _mm256_permute4x64_epi64(_mm256_packs_epi32(t, t), _MM_SHUFFLE(2, 0, 2, 0));  // sub-block sums
      // per row its 8 mins against the sub-block sums: [r0 .. | r1 ..] and [r2 .. | r3 ..], 4 dwords each
      const __m256i h = _mm256_hadd_epi32(_mm256_madd_epi16(mn0, sbs), _mm256_madd_epi16(mn1, sbs));
      const __m256i mins = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(h, h), _mm256_setr_epi32(0, 0, 0, 0, 0, 4, 1, 5));
      const __m256i halves = _mm256_add_epi32(s[k], _mm256_permute2x128_si256(s[k], s[k], 0x01));
      acc[k] = _mm256_fmadd_ps(_mm256_mul_ps(dm, _mm256_set1_ps(ak->d)),
                               _mm256_cvtepi32_ps(_mm256_blend_epi32(halves, mins, 0xf0)), acc[k]);
    }
    src.prefetch(i);
  }
  for (int k = 0; k < A; ++k) {
    float out[4];
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(acc[k]), _mm256_extractf128_ps(acc[k], 1)));
    for (int r = 0; r < R; ++r) y[k * ys + r] = out[r];
  }
}

// ---- Q6_K ------------------------------------------------------------------------------------
// Q6_K has no block header worth sharing across rows (16 int8 scales and d), and its rows are
// read one after another, each in memory order: a pass reading 4 rows side by side (the Q4_K
// kernel above) ran slower from memory than vec_dot_q6_K row by row, with or without software
// prefetch (bench/README.md, "Q6_K and stored Q8_0 decode kernels"); the sequential stream, each
// block prefetched ahead after its loads (gemv.h, prefetch_tiles_ahead), runs at the memory's speed. What
// is saved against vec_dot is arithmetic:
// the row's scales are widened once per super-block into one register (the even sub-blocks'
// scales in the low lane, the odd ones' in the high lane, so that one vpshufb per 32-value chunk
// spreads a chunk's pair), and the activation's -16 * bsums are prepared once per pass of up to 4
// rows and up to 4 activation rows. Every int32 lane ends as vec_dot_q6_K's (the -32 offset
// against the bsums in its order), converted and accumulated with the same FMA and summed by the
// same hsum: each value is bit for bit vec_dot_q6_K's, for any number of rows and activation rows.

// The constants of the Q6_K passes, made once
struct Q6Consts {
  WordSpread spread;
  __m128i even_odd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
};

// y[k * ys + r] = row r of w (R <= 4 rows of wrb bytes, n / 256 blocks block_q6_K each) .
// activation row k (A rows of Q8_K, arb bytes apart), the rows read one after another (rows of
// more than kChunk super-blocks: kChunk super-blocks of each row in turn).
template <int R, int A>
static void rows_q6(int64_t n, const uint8_t* w, size_t wrb, const uint8_t* va, size_t arb, float* y, size_t ys,
                    const Q6Consts& c) {
  constexpr int kChunk = 64 / A;  // super-blocks whose activation terms are prepared at once (2 KiB)
  const __m256i low4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30), zero = _mm256_setzero_si256();
  const block_q8_K* a[A];
  for (int k = 0; k < A; ++k) a[k] = reinterpret_cast<const block_q8_K*>(va + k * arb);
  __m256 acc[R][A];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < A; ++k) acc[r][k] = _mm256_setzero_ps();
  const int64_t nb = n / QK_K;
  for (int64_t i0 = 0; i0 < nb; i0 += kChunk) {
    const int m = nb - i0 < kChunk ? (int)(nb - i0) : kChunk;
    __m256i nbs[kChunk][A];  // -16 * activation row k's 16 bsums of super-block i0 + i (|16 * 2032| < 2^15)
    for (int i = 0; i < m; ++i)
      for (int k = 0; k < A; ++k) nbs[i][k] = _mm256_slli_epi16(_mm256_sub_epi16(zero, load(a[k][i0 + i].bsums)), 4);
    for (int r = 0; r < R; ++r) {
      const block_q6_K* b = reinterpret_cast<const block_q6_K*>(w + r * wrb) + i0;
      for (int i = 0; i < m; ++i) {
        const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales));
        // word j of lane l: the scale of sub-block 2j + l
        const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, c.even_odd));
        // the values are u - 32, u in 0..63: start from -32 * sum_j scale_j bsum_j
        const __m256i sc2 = _mm256_cvtepi8_epi16(sc8);
        __m256i s[A];
        for (int k = 0; k < A; ++k) s[k] = _mm256_madd_epi16(_mm256_add_epi16(sc2, sc2), nbs[i][k]);
        for (int h = 0; h < 2; ++h) {
          // 128 values: ql bytes 0..31 give values 0..31 (low nibble) and 64..95 (high), bytes
          // 32..63 give 32..63 and 96..127; qh byte l holds the 2 high bits of l, l+32, l+64, l+96
          const __m256i ql0 = load(b[i].ql + 64 * h), ql1 = load(b[i].ql + 64 * h + 32), qh = load(b[i].qh + 32 * h);
          __m256i u[4];
          u[0] = _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
          u[1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
          u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), _mm256_and_si256(qh, m30));
          u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                                 _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
          for (int j = 0; j < 4; ++j) {  // values 128h + 32j ..: sub-blocks 8h + 2j, 8h + 2j + 1
            const __m256i scj = _mm256_shuffle_epi8(sc, c.spread.m[4 * h + j]);
            for (int k = 0; k < A; ++k) s[k] = scaled_dot(s[k], u[j], load(a[k][i0 + i].qs + 128 * h + 32 * j), scj);
          }
        }
        const float d = h2f(b[i].d);
        for (int k = 0; k < A; ++k)
          acc[r][k] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[k][i0 + i].d), _mm256_cvtepi32_ps(s[k]), acc[r][k]);
        prefetch_tiles_ahead(reinterpret_cast<const uint8_t*>(b + i), sizeof(block_q6_K));
      }
    }
  }
  for (int k = 0; k < A; ++k)
    for (int r = 0; r < R; ++r) y[k * ys + r] = hsum_ps(acc[r][k]);
}

}  // namespace

// gemv_fn (kernels.h) of Q4_K: the Quad form over the stored rows, bit for bit Q4_K_R4's gemv
void gemv_q4_K(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  static const KQuadConsts c;
  row_passes(n_rows, [&](auto R, int r) {
    k_quad<R, 1>(n, KRows<R, block_q4_K>{w + r * wrb, wrb}, static_cast<const uint8_t*>(va), 0, y + r, 0, c);
  });
}

// gemv_rows_fn of Q5_K, and its gemv_fn (one activation row: the same passes): the Quad form over
// the stored rows, activation rows four at a time over each pass of four weight rows, each row's
// value that of the gemv and bit for bit Q5_K_R4's
void gemv_q5_K_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a, float* y,
                    size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  static const KQuadConsts c;
  row_passes_a<4>(n_rows, n_a, [&](auto R, auto A, int r, int i) {
    k_quad<R, A>(n, KRows<R, block_q5_K>{w + r * wrb, wrb}, a + i * arb, arb, y + i * ys + r, ys, c);
  });
}
void gemv_q5_K(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_q5_K_rows(n, w, wrb, n_rows, a, 0, 1, y, 0);
}

// gemv_rows_fn of Q6_K, and its gemv_fn (one activation row: the same passes): activation rows
// four at a time over each pass of four weight rows, each row's value that of the gemv
void gemv_q6_K_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a, float* y,
                    size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  static const Q6Consts c;
  row_passes_a<4>(n_rows, n_a, [&](auto R, auto A, int r, int i) {
    rows_q6<R, A>(n, w + r * wrb, wrb, a + i * arb, arb, y + i * ys + r, ys, c);
  });
}
void gemv_q6_K(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_q6_K_rows(n, w, wrb, n_rows, a, 0, 1, y, 0);
}

namespace {
// LayoutKernels::gemv_rows of Q4_K_R4 and Q5_K_R4 (n_rows a multiple of 4): per quad, the
// activation rows four at a time, then two, then one, the quad's tiles read from memory by the
// first pass and from L1 by the others.
template <typename B>
void k_r4_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a, float* y,
               size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  static const KQuadConsts c;
  for (int r = 0; r < n_rows; r += 4) {
    int k = 0;
    const KTile<B> quad{w + r * wrb};
    for (; k + 4 <= n_a; k += 4) k_quad<4, 4>(n, quad, a + k * arb, arb, y + k * ys + r, ys, c);
    for (; k + 2 <= n_a; k += 2) k_quad<4, 2>(n, quad, a + k * arb, arb, y + k * ys + r, ys, c);
    for (; k < n_a; ++k) k_quad<4, 1>(n, quad, a + k * arb, arb, y + k * ys + r, ys, c);
  }
}
}  // namespace

void gemv_q4_K_r4_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                       size_t ys) {
  k_r4_rows<block_q4_K>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q4_K_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  k_r4_rows<block_q4_K>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
void gemv_q5_K_r4_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                       size_t ys) {
  k_r4_rows<block_q5_K>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q5_K_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  k_r4_rows<block_q5_K>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}

}  // namespace QC_AVX2_NS
}  // namespace qc
