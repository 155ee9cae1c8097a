// AVX-512 VNNI decode kernels of Q4_K and Q5_K weights (WeightKernels::gemv, and Q5_K's
// gemv_rows): up to 4 rows per pass against one Q8_K activation row (gemv_rows: two), the values
// of vec_dot_q4_K / vec_dot_q5_K (quants_k.cpp).
// Q5_K has Q4_K's 16-byte header and nibbles, plus a 5th bit per value from its qh.
//
// vec_dot spends about half of its work per super-block outside the byte products: unpacking
// the 6-bit scales and mins, converting d and dmin, the min term against the activation sums.
// Here that work is done for 4 rows at once, one row per 128-bit lane: the 4 rows' 16-byte block
// headers (d, dmin, 12 bytes of scales) are one register, unpacked by the same few vector
// operations, and one vpmaddwd gives all 4 rows' min terms. The activations are loaded once per
// super-block for the 4 rows, in the order the 64-byte weight loads need: 64 bytes of qs hold
// sub-blocks 4h, 4h + 2 in their low nibbles (bytes 0..31, 32..63) and 4h + 1, 4h + 3 in their
// high nibbles, so the activations are paired the same way (P and Q below). Per row and
// super-block then: 2 loads, 3 mask/shift, 4 vpmaddubsw, 4 vpdpwssd against the sub-block
// scales (spread by byte shuffles), one conversion and one FMA.
//
// The same kernel reads the repacked layout Q4_K_R4 (repack.h), whose tiles hold the 4 rows'
// headers as that one register and then their qs, in reading order: one 64-byte header load in
// place of four, one sequential stream, no software prefetch for one activation row (several:
// gemv.h's prefetch_tiles_ahead).
#include <type_traits>

#include "simd512.h"

#include "../gemv.h"
#include "../repack.h"

namespace qc {
namespace avx512 {
namespace {

// Byte shuffle of 8 int16 scales (in every 128-bit lane): scale j0 into the low 256 bits, j1
// into the high 256 bits.
static inline __m512i scale_pair_mask(int j0, int j1) {
  alignas(64) int8_t b[64];
  for (int i = 0; i < 64; ++i) b[i] = (int8_t)(2 * (i < 32 ? j0 : j1) + (i & 1));
  return _mm512_load_si512(b);
}

struct Q4KMasks {
  __m512i m[4];    // for P0 (sub-blocks 0, 2), Q0 (1, 3), P1 (4, 6), Q1 (5, 7)
  __m512i bit[4];  // Q5_K: the qh bits of the same sub-blocks (byte 1 << j, low / high 256 bits)
  Q4KMasks() {
    const int sub[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int k = 0; k < 4; ++k) {
      m[k] = scale_pair_mask(sub[k][0], sub[k][1]);
      bit[k] = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << sub[k][0])), _mm256_set1_epi8((char)(1 << sub[k][1])), 1);
    }
  }
};

// y[k * ys + r] = row r of w (R <= 4 rows of wrb bytes, n / 256 blocks B each: block_q4_K or
// block_q5_K) . activation row k
// (A rows of Q8_K, arb bytes apart). Each activation row's arithmetic is the same whatever A (A =
// 1 is the decode gemv), the header unpacking and the weights' nibbles and spread scales done once
// per super-block for all A. With prefetch: the R rows after these (and the R after those) are
// prefetched at the pace they are read (gemv.h). repacked: w is a quad of Q4_K_R4 tiles (R = 4).
template <typename B, int R, int A, bool prefetch, bool repacked = false>
QC_VNNI static void rows(int64_t n, const uint8_t* w, size_t wrb, const uint8_t* va, size_t arb, float* y, size_t ys,
                         const Q4KMasks& mk) {
  static_assert(!repacked || (R == 4 && !prefetch), "a repacked tile holds 4 rows, read in order");
  constexpr bool kFive = std::is_same<B, block_q5_K>::value;
  static_assert(kFive || std::is_same<B, block_q4_K>::value, "Q4_K or Q5_K");
  static_assert(!repacked || !kFive, "only Q4_K has a repacked layout");
  const __m512i low4 = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
  // header unpacking, per 128-bit lane = dwords [d | dmin << 16, w0, w1, w2] of one row:
  // scales 0..3 = w0 & 0x3f.., 4..7 = (w2 & 0x0f..) | (w0 >> 2 & 0x30..); mins 0..3 = w1 & 0x3f..,
  // 4..7 = (w2 >> 4 & 0x0f..) | (w1 >> 2 & 0x30..)  (the layout of x86::k4_scales_mins)
  const __m512i shift = _mm512_set4_epi32(4, 0, 0, 0);
  const __m512i keep_lo = _mm512_set4_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f);
  const __m512i keep_hi = _mm512_set4_epi32(0x30303030, 0, 0x30303030, 0);
  // the d and dmin halves of the 4 lanes, in words 0..7; dmin of lane r in all 4 of its dwords
  const __m512i dm_words = _mm512_setr_epi64(0x0009000800010000LL, 0x0019001800110010LL, 0, 0, 0, 0, 0, 0);
  const __m512i dmin_lanes = _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7);
  const bool to_l1 = R * wrb <= kPrefetchL1Tile;
  const uint8_t* row[4];
  for (int r = 0; r < 4; ++r) row[r] = w + (r < R ? r : R - 1) * wrb;  // lanes past R repeat the last row
  const block_q8_K* a[A];
  for (int k = 0; k < A; ++k) a[k] = reinterpret_cast<const block_q8_K*>(va + k * arb);
  __m512 acc[A][R], acc_min[A];
  for (int k = 0; k < A; ++k) {
    for (int r = 0; r < R; ++r) acc[k][r] = _mm512_setzero_ps();
    acc_min[k] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < n / QK_K; ++i) {
    if (prefetch) prefetch_tiles<R * sizeof(B)>(w + R * wrb, R * wrb, i, to_l1);
    const size_t off = (size_t)i * sizeof(B);
    const uint8_t* tile = w + 4 * off;  // repacked: this super-block's tile
    __m512i hdr;
    if (repacked) {
      hdr = load512(tile);
    } else {
      hdr = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[0] + off)));
      hdr = _mm512_inserti32x4(hdr, _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[1] + off)), 1);
      hdr = _mm512_inserti32x4(hdr, _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[2] + off)), 2);
      hdr = _mm512_inserti32x4(hdr, _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[3] + off)), 3);
    }
    const __m512i x = _mm512_shuffle_epi32(hdr, (_MM_PERM_ENUM)_MM_SHUFFLE(3, 2, 3, 1));  // w0 w2 w1 w2
    const __m512i z = _mm512_shuffle_epi32(hdr, (_MM_PERM_ENUM)_MM_SHUFFLE(2, 2, 1, 1));  // w0 w0 w1 w1
    const __m512i sm = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi32(x, shift), keep_lo),
                                       _mm512_and_si512(_mm512_srli_epi32(z, 2), keep_hi));
    const __m512i sc16 = _mm512_unpacklo_epi8(sm, zero), mn16 = _mm512_unpackhi_epi8(sm, zero);
    // [d0, dmin0, .., d3, dmin3] as floats
    const __m256 dmw = _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi16(dm_words, hdr)));
    __m512 dm512[A];  // the same * activation row k's scale
    __m512i p0[A], q0[A], p1[A], q1[A];
    for (int k = 0; k < A; ++k) {
      const block_q8_K& b = a[k][i];
      dm512[k] = _mm512_castps256_ps512(_mm256_mul_ps(dmw, _mm256_set1_ps(b.d)));
      // min term: mins . (sums of the sub-blocks' 32 activations), 4 dwords per lane
      const __m128i sbs = _mm256_cvtepi32_epi16(_mm256_madd_epi16(load256(b.bsums), _mm256_set1_epi16(1)));
      const __m512i mt = _mm512_madd_epi16(mn16, _mm512_broadcast_i32x4(sbs));
      acc_min[k] = _mm512_fmadd_ps(_mm512_permutexvar_ps(dmin_lanes, dm512[k]), _mm512_cvtepi32_ps(mt), acc_min[k]);
      const int8_t* q8 = b.qs;
      p0[k] = load_2x32(q8, q8 + 64), q0[k] = load_2x32(q8 + 32, q8 + 96);
      p1[k] = load_2x32(q8 + 128, q8 + 192), q1[k] = load_2x32(q8 + 160, q8 + 224);
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* qs = repacked ? tile + 64 + 128 * r : row[r] + off + offsetof(B, qs);
      const __m512i v0 = load512(qs), v1 = load512(qs + 64);
      __m512i u0 = _mm512_and_si512(v0, low4), u1 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), low4);
      __m512i u2 = _mm512_and_si512(v1, low4), u3 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), low4);
      if constexpr (kFive) {  // + 16 where sub-block j's qh bit j is set (qh byte l: value l of each)
        const __m512i qh = _mm512_broadcast_i64x4(load256(row[r] + off + offsetof(block_q5_K, qh)));
        const __m512i fifth = _mm512_set1_epi8(0x10);
        u0 = _mm512_mask_add_epi8(u0, _mm512_test_epi8_mask(qh, mk.bit[0]), u0, fifth);
        u1 = _mm512_mask_add_epi8(u1, _mm512_test_epi8_mask(qh, mk.bit[1]), u1, fifth);
        u2 = _mm512_mask_add_epi8(u2, _mm512_test_epi8_mask(qh, mk.bit[2]), u2, fifth);
        u3 = _mm512_mask_add_epi8(u3, _mm512_test_epi8_mask(qh, mk.bit[3]), u3, fifth);
      }
      const __m512i sc = _mm512_shuffle_i32x4(sc16, sc16, 0x55 * r);  // row r's scales in every lane
      const __m512i s0 = _mm512_shuffle_epi8(sc, mk.m[0]), s1 = _mm512_shuffle_epi8(sc, mk.m[1]);
      const __m512i s2 = _mm512_shuffle_epi8(sc, mk.m[2]), s3 = _mm512_shuffle_epi8(sc, mk.m[3]);
      for (int k = 0; k < A; ++k) {
        __m512i s = _mm512_dpwssd_epi32(zero, _mm512_maddubs_epi16(u0, p0[k]), s0);
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u1, q0[k]), s1);
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u2, p1[k]), s2);
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u3, q1[k]), s3);
        acc[k][r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_set1_epi32(2 * r), dm512[k]), _mm512_cvtepi32_ps(s),
                                    acc[k][r]);
      }
    }
    if constexpr (repacked && A > 1) prefetch_tiles_ahead(tile, 4 * sizeof(B));
  }
  for (int k = 0; k < A; ++k) {
    alignas(64) float mins[16];  // lane r: row r's min term in 4 parts
    _mm512_store_ps(mins, acc_min[k]);
    for (int r = 0; r < R; ++r)
      y[k * ys + r] =
          _mm512_reduce_add_ps(acc[k][r]) - ((mins[4 * r] + mins[4 * r + 1]) + (mins[4 * r + 2] + mins[4 * r + 3]));
  }
}

}  // namespace

// gemv_fn (kernels.h) of Q4_K
QC_VNNI void gemv_q4_K(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  static const Q4KMasks mk;
  row_passes(n_rows, [&](auto R, int r) {
    rows<block_q4_K, R, 1, R == 4>(n, w + r * wrb, wrb, static_cast<const uint8_t*>(va), 0, y + r, 0, mk);
  });
}

// gemv_fn (kernels.h) of Q5_K
QC_VNNI void gemv_q5_K(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  static const Q4KMasks mk;
  row_passes(n_rows, [&](auto R, int r) {
    rows<block_q5_K, R, 1, R == 4>(n, w + r * wrb, wrb, static_cast<const uint8_t*>(va), 0, y + r, 0, mk);
  });
}

// gemv_rows_fn of Q5_K: activation rows two at a time (as Q4_K_R4's) over each pass of four weight
// rows, each row's value that of gemv_q5_K
QC_VNNI void gemv_q5_K_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a,
                            float* y, size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  static const Q4KMasks mk;
  row_passes_a<2>(n_rows, n_a, [&](auto R, auto A, int r, int i) {
    rows<block_q5_K, R, A, R == 4>(n, w + r * wrb, wrb, a + i * arb, arb, y + i * ys + r, ys, mk);
  });
}

// LayoutKernels::gemv of Q4_K_R4 (n_rows a multiple of 4), and its gemv_rows: per quad, the
// activation rows kMaxA at a time (then the 1 .. kMaxA - 1 left), the quad's tiles read from memory
// by the first pass and from L1 by the others.
QC_VNNI void gemv_q4_K_r4_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a,
                               float* y, size_t ys) {
  constexpr int kMaxA = 2;
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  static const Q4KMasks mk;
  for (int r = 0; r < n_rows; r += 4) {
    int k = 0;
    for (; k + kMaxA <= n_a; k += kMaxA) rows<block_q4_K, 4, kMaxA, false, true>(n, w + r * wrb, wrb, a + k * arb, arb, y + k * ys + r, ys, mk);
    for (; k < n_a; ++k) rows<block_q4_K, 4, 1, false, true>(n, w + r * wrb, wrb, a + k * arb, arb, y + k * ys + r, ys, mk);
  }
}
QC_VNNI void gemv_q4_K_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_q4_K_r4_rows(n, w, wrb, n_rows, a, 0, 1, y, 0);
}

}  // namespace avx512
}  // namespace qc
