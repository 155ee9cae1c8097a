// AVX2 decode kernels of Q4_0 and Q5_0 weights (WeightKernels::gemv), and of the repacked Q4_0_R4T,
// Q5_0_R4T and Q8_0_R4T (LayoutKernels::gemv, below): rows . one activation row in the Q8_0x4
// layout (act_q8_0x4.h), the values of vec_dot_q4_0 / _q5_0 / _q8_0 over Q8_0 activations, and
// their several-activation-row forms (gemv_rows, batched decode), each row bit for bit its gemv.
//
// All in the "Quad" form below: four weight rows' values of two blocks, regrouped (once, or by
// the repacked layout) so that each 32-bit lane holds one row's group of 4 values, go against an
// activation row broadcast group by group; the products end as 8 exact integer block dot products
// (rows x blocks), and the offset, the conversion, the scale product and the FMA are spent once
// per four rows. An extra activation row then costs little more than its byte products, the
// weights' regrouping being shared by up to 4 activation rows per pass; the row-per-register form
// before it spent 8 instructions per row and activation row on every 64 weights, 3.8x one row's
// time for 4 rows (bench/README.md, "Several sequences at once"). Q8_0's signed bytes cost a
// vpsign and a vpmaddwd more per product than Q4_0's nibbles (Q8_0R4T); in the VNNI compilations
// (simd.h, QC_DOT_VNNI) vpdpbusd accumulates the byte products directly.
#include "simd.h"

#include "../act_q8_0x4.h"
#include "../gemv.h"
#include "../repack.h"

#include <vector>

namespace qc {
namespace QC_AVX2_NS {
namespace {

static inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// ---- the Q4_0 and Q5_0 values, four weight rows by lane ------------------------------------
// Q4_0 and Q5_0 (stored and repacked) share one arithmetic: the four weight rows of a pass are
// regrouped so that each 32-bit lane of a product holds one row's group of 4 values (the lanes
// of each 128-bit half: rows 0, 1, 2, 3; the low half block k, the high one block k + 1), the
// activation group broadcast to the four lanes. So one activation row's int16 products of two
// blocks of four rows sum in one register and one vpmaddwd ends them as the 8 exact integer block
// dot products (rows x blocks); the conversion, the scale product and the FMA are spent once per
// 4 rows, not once per row. Per activation row that leaves the byte products (the weights are
// regrouped once for every activation row of the pass), which is what makes several rows cheap.
// The integer sums are exact whatever their order, so stored and repacked rows, one activation
// row or several, give the same bits as long as the float steps below are the same: per row,
// acc_even += (d_w * d_a) * dot of blocks 0, 2, 4, .. in turn, acc_odd the same of 1, 3, 5, ..,
// then y = acc_even + acc_odd.

// q: the values of four weight rows' blocks k, k + 1: lo[j] = the values of elements 4j .. 4j + 3
// (in the activation's lo order) of rows 0..3 in turn, block k in the low half, block k + 1 in
// the high one; hi[j] the same of elements 16 + 4j .. 16 + 4j + 3.
struct Quad {
  __m256i lo[4], hi[4];
};

// One activation row's blocks k, k + 1 in the broadcast form the Quad lanes take: v[j] (j < 4)
// = its lo bytes 4j .. 4j + 3 of each block in all four lanes of that block's half, v[4 + j] the
// same of its hi bytes, v[8] = each block's (8 << kOffShift) * sum(a) in its half's lanes (the
// offset of the unsigned values).
template <int kOffShift>
static inline void act_bcast(const block_q8_0x4* a, int h, __m256i v[9]) {
  const __m256i lo = load(a->lo + 32 * h), hi = load(a->hi + 32 * h), s = load(a->sum8 + 8 * h);
  v[0] = bcast32<0>(lo), v[1] = bcast32<1>(lo), v[2] = bcast32<2>(lo), v[3] = bcast32<3>(lo);
  v[4] = bcast32<0>(hi), v[5] = bcast32<1>(hi), v[6] = bcast32<2>(hi), v[7] = bcast32<3>(hi);
  const __m256i t = _mm256_add_epi32(s, _mm256_shuffle_epi32(s, 0x4e));
  v[8] = _mm256_slli_epi32(_mm256_add_epi32(t, _mm256_shuffle_epi32(t, 0xb1)), kOffShift);
}

// The 8 exact integer dot products [rows 0..3 of block k | of block k + 1] of q with one
// activation row in the broadcast form v (act_bcast), offset included. kOffShift 0: values <= 15,
// the 8 int16 products of a lane sum to <= 8 * 2 * 15 * 128 = 30720; 1 (Q5_0, <= 31): two sums of 4.
template <int kOffShift>
static inline __m256i quad_dot(const Quad& q, const __m256i* v) {
#ifdef QC_DOT_VNNI
  __m256i d = _mm256_sub_epi32(_mm256_setzero_si256(), load(v + 8));
  for (int j = 0; j < 4; ++j) d = dpbusd(dpbusd(d, q.lo[j], load(v + j)), q.hi[j], load(v + 4 + j));
  return d;
#else
  const __m256i ones = _mm256_set1_epi16(1);
  auto pair = [&](int j) {
    return _mm256_add_epi16(_mm256_maddubs_epi16(q.lo[j], load(v + j)), _mm256_maddubs_epi16(q.hi[j], load(v + 4 + j)));
  };
  __m256i d;
  if (kOffShift == 0) {
    d = _mm256_madd_epi16(_mm256_add_epi16(_mm256_add_epi16(pair(0), pair(1)), _mm256_add_epi16(pair(2), pair(3))), ones);
  } else {
    d = _mm256_add_epi32(_mm256_madd_epi16(_mm256_add_epi16(pair(0), pair(1)), ones),
                         _mm256_madd_epi16(_mm256_add_epi16(pair(2), pair(3)), ones));
  }
  return _mm256_sub_epi32(d, load(v + 8));
#endif
}

// acc (lanes [rows 0..3, even blocks | odd blocks]) += (dw * the activation's block scales) *
// dot, the exact dot products with activation row a's blocks 2h, 2h + 1: the float steps every
// Quad kernel shares, so that stored and repacked rows give the same bits
static inline __m256 dot_fma(__m256i dot, const block_q8_0x4* a, int h, __m256 dw, __m256 acc) {
  const __m256 d = _mm256_mul_ps(dw, _mm256_loadu_ps(a->d + 8 * h));
  return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), acc);
}

// acc_even + acc_odd of rows 0..3
static inline __m128 quad_sum(__m256 acc) {
  return _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
}

// The stored layouts' weight types: kOffShift: the offset of the unsigned values is (8 <<
// kOffShift) (8 for Q4_0, 16 for Q5_0); values(b, &ql, &qh): two blocks' unsigned values, ql the
// elements 0..15 of block 0 then of block 1, qh the elements 16..31.
// q: the 32 nibble bytes of two blocks -> their low nibbles (elements 0..15 of each) and high ones
static inline void unpack_nibbles_2(__m256i q, __m256i* ql, __m256i* qh) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  *ql = _mm256_and_si256(q, m4);
  *qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
}

struct Q4_0G {
  typedef block_q4_0 B;
  static constexpr int kOffShift = 0;
  static inline void values(const B* b, __m256i* ql, __m256i* qh) {
    unpack_nibbles_2(packed(b), ql, qh);
  }
  static inline __m256i packed(const B* b) {
    return _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[1].qs), reinterpret_cast<const __m128i*>(b[0].qs));
  }
  // four rows' blocks k, k + 1 (b[r]: row r's): the nibble bytes regrouped, then split
  static inline Quad quad(const B* const* b) {
    __m256i v[4], t[4];
    for (int r = 0; r < 4; ++r) v[r] = packed(b[r]);
    transpose4(v, t);
    Quad q;
    for (int j = 0; j < 4; ++j) unpack_nibbles_2(t[j], &q.lo[j], &q.hi[j]);
    return q;
  }
};
struct Q5_0G {
  typedef block_q5_0 B;
  static constexpr int kOffShift = 1;
  static inline void values(const B* b, __m256i* ql, __m256i* qh) {
    const __m256i q = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[1].qs), reinterpret_cast<const __m128i*>(b[0].qs));
    const __m256i m4 = _mm256_set1_epi8(0x0f), fifth = _mm256_set1_epi8(0x10);
    uint32_t h0, h1;
    std::memcpy(&h0, b[0].qh, 4);
    std::memcpy(&h1, b[1].qh, 4);
    // bit j of qh is element j's 5th bit: elements 0..15 of both blocks, then 16..31
    const uint32_t lo_bits = (h0 & 0xffff) | (h1 << 16), hi_bits = (h0 >> 16) | (h1 & 0xffff0000u);
    *ql = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_and_si256(bits_to_bytes_32(lo_bits), fifth));
    *qh = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), _mm256_and_si256(bits_to_bytes_32(hi_bits), fifth));
  }
  static inline Quad quad(const B* const* b) {
    __m256i ql[4], qh[4];
    for (int r = 0; r < 4; ++r) values(b[r], &ql[r], &qh[r]);
    Quad q;
    transpose4(ql, q.lo);
    transpose4(qh, q.hi);
    return q;
  }
};

// y[i * ys + r] = row r of w (R rows of wrb bytes, n / 32 blocks each) . activation row i (A
// rows, arb bytes apart), in the Quad arithmetic (rows past R repeat the last one, their lanes
// dropped). With prefetch: the R rows after these (and the R after those) are prefetched at the
// pace they are read (gemv.h).
template <typename W, int R, bool prefetch, int A>
static void rows(int64_t n, const uint8_t* w, size_t wrb, const uint8_t* va, size_t arb, float* y, size_t ys) {
  typedef typename W::B B;
  const bool to_l1 = R * wrb <= kPrefetchL1Tile;
  const uint8_t* row[4];
  for (int r = 0; r < 4; ++r) row[r] = w + (r < R ? r : R - 1) * wrb;
  __m256 acc[A];
  for (int i = 0; i < A; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t g = 0; g < n / QK8_0X4; ++g) {
    if (prefetch) prefetch_tiles<R * 4 * sizeof(B)>(w + R * wrb, R * wrb, g, to_l1);
    for (int h = 0; h < 2; ++h) {  // blocks 2h, 2h + 1 of the group
      const B* b[4];
      uint32_t d2[4];  // row r's two block scales
      for (int r = 0; r < 4; ++r) {
        b[r] = reinterpret_cast<const B*>(row[r]) + 4 * g + 2 * h;
        d2[r] = (uint32_t)b[r][0].d | (uint32_t)b[r][1].d << 16;
      }
      const Quad q = W::quad(b);
      // [rows 0..3 of block 2h | of block 2h + 1]
      const __m128i dh = _mm_shuffle_epi8(_mm_setr_epi32((int)d2[0], (int)d2[1], (int)d2[2], (int)d2[3]),
                                          _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
      const __m256 dw = _mm256_cvtph_ps(dh);
      for (int i = 0; i < A; ++i) {
        const block_q8_0x4* a = reinterpret_cast<const block_q8_0x4*>(va + i * arb) + g;
        __m256i v[9];
        act_bcast<W::kOffShift>(a, h, v);
        acc[i] = dot_fma(quad_dot<W::kOffShift>(q, v), a, h, dw, acc[i]);
      }
    }
  }
  for (int i = 0; i < A; ++i) {
    float out[4];
    _mm_storeu_ps(out, quad_sum(acc[i]));
    for (int r = 0; r < R; ++r) y[i * ys + r] = out[r];
  }
}

// gemv_fn (kernels.h) of Q4_0 and Q5_0, and their gemv_rows_fn: activation rows two at a time
template <typename W>
void gemv(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  row_passes(n_rows, [&](auto R, int r) { rows<W, R, R == 4, 1>(n, w + r * wrb, wrb, static_cast<const uint8_t*>(va), 0, y + r, 0); });
}
template <typename W>
void gemv_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a, float* y, size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  row_passes_a<2>(n_rows, n_a, [&](auto R, auto A, int r, int i) {
    rows<W, R, R == 4, A>(n, w + r * wrb, wrb, a + i * arb, arb, y + i * ys + r, ys);
  });
}

// ---- the repacked layouts Q4_0_R4T, Q5_0_R4T and Q8_0_R4T (repack.h) ----------------------
// The same form (two blocks per 256-bit step, 8 int32 lanes, 4 per block), reading each tile in
// order instead of four rows' blocks (the tiles hold their Quads as they are used); a tile's
// scales are converted once (Q4_0_R4T, Q5_0_R4T: each row's pair spread by one permute; Q8_0_R4T
// holds them in the lanes' order). The tiles are prefetched in software (gemv.h,
// prefetch_tiles_ahead), after each tile's loads: in the model's decode steps they waited for memory without
// it, though not in a loop over the matrices alone (bench/README.md, "Several sequences at once",
// "Repacked Q5_0").

// L::dots of the layouts that hold their pairs as Quads (L::quad): dot[i] = the 8 exact integer
// block dot products [rows 0..3 of block 2h | of block 2h + 1] of pair h of a tile with
// activation row i (v[i]: its broadcast form, bcast_rows)
template <class L>
struct QuadPairs {
  static constexpr int64_t kCols = 128;  // two pairs per tile
  static constexpr bool kTwoQuads = false;
  // dw[h] = the scales [rows 0..3 of block 2h | of block 2h + 1], from 4r + k = row r's block k
  static inline void scales(const uint8_t* tile, __m256* dw) {
    const __m256i spread = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m128i* sc = reinterpret_cast<const __m128i*>(tile + L::kScales);
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128(sc)), s1 = _mm256_cvtph_ps(_mm_loadu_si128(sc + 1));
    dw[0] = _mm256_permutevar8x32_ps(_mm256_unpacklo_ps(s0, s1), spread);
    dw[1] = _mm256_permutevar8x32_ps(_mm256_unpackhi_ps(s0, s1), spread);
  }
  template <int A>
  static inline void dots(const uint8_t* tile, int h, const __m256i* const* v, __m256i* dot) {
    const Quad q = L::quad(tile, h);
    for (int i = 0; i < A; ++i) dot[i] = quad_dot<L::kOffShift>(q, v[i]);
  }
};

// Q4_0_R4T: the Quad of blocks 2h, 2h + 1 as stored (repack.h): vector j of the pair (tile + 64j
// + 32h) holds the nibble bytes of lo[j] (low nibbles) and hi[j] (high ones); the scales at
// tile + 256. The nibbles are q + 8 (kOffShift 0): Q4_0G's values.
struct Q4_0R4T : QuadPairs<Q4_0R4T> {
  static constexpr int32_t kLayout = QC_LAYOUT_Q4_0_R4T;
  static constexpr bool kOneRowBcast = false;  // one row broadcast in the kernel (gemv_t_rows)
  static constexpr bool kTwoQuads = true;  // several rows without VNNI: quad_tiles2
  static constexpr size_t kTile = 288, kScales = 256;
  static constexpr int kOffShift = 0;
  // the Quad's lo[j], hi[j] alone (quad_tiles2 unpacks two quads group by group)
  static inline void group(const uint8_t* tile, int h, int j, __m256i& lo, __m256i& hi) {
    unpack_nibbles_2(load(tile + 64 * j + 32 * h), &lo, &hi);
  }
  static inline Quad quad(const uint8_t* tile, int h) {
    Quad q;
    for (int j = 0; j < 4; ++j) group(tile, h, j, q.lo[j], q.hi[j]);
    return q;
  }
};

// Q5_0_R4T: Q4_0_R4T's nibbles and the pair's 5th-bit planes at tile + 256 + 32h (or_fifth_bits),
// the scales at tile + 320. Q5_0G's values, so bit for bit the stored layout's gemv; they are
// q + 16 (kOffShift 1).
struct Q5_0R4T : QuadPairs<Q5_0R4T> {
  static constexpr int32_t kLayout = QC_LAYOUT_Q5_0_R4T;
  static constexpr bool kOneRowBcast = true;  // short rows: one row from bcast_rows (gemv_t_rows)
  static constexpr size_t kTile = 352, kScales = 320;
  static constexpr int kOffShift = 1;
  static inline Quad quad(const uint8_t* tile, int h) {
    Quad q = Q4_0R4T::quad(tile, h);
    or_fifth_bits(load(tile + 256 + 32 * h), q.lo, q.hi);
    return q;
  }
};

// Q8_0_R4T: one pair per tile, its eight vectors of signed weight bytes at tile + 32j, vector j in
// the lanes of the Quad form (lo[j], then hi[j - 4]) against the activation's v[j]; the scales in
// the lanes' order at tile + 256. Signed bytes take one more step per vector than Q4_0's nibbles,
// shared by the activation rows: vpmaddubsw (unsigned x signed) would saturate on (q + 128) * a,
// so |q| goes against a with q's sign (|q| <= 128, |a| <= 127: a pair <= 32512), each product
// ending in its own vpmaddwd; with VNNI, q + 128 against a, less 128 * sum(a) (act_bcast with
// kOffShift 4).
struct Q8_0R4T {
  static constexpr int32_t kLayout = QC_LAYOUT_Q8_0_R4T;
  static constexpr bool kOneRowBcast = false;  // one row broadcast in the kernel (gemv_t_rows)
  static constexpr bool kTwoQuads = false;
  static constexpr size_t kTile = 272;
  static constexpr int64_t kCols = 64;
  static constexpr int kOffShift = 4;
  static inline void scales(const uint8_t* tile, __m256* dw) {
    dw[0] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + 256)));
  }
  template <int A>
  static inline void dots(const uint8_t* tile, int, const __m256i* const* v, __m256i* dot) {
#ifdef QC_DOT_VNNI
    for (int i = 0; i < A; ++i) dot[i] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      const __m256i u = _mm256_xor_si256(load(tile + 32 * j), _mm256_set1_epi8((char)0x80));
      for (int i = 0; i < A; ++i) dot[i] = dpbusd(dot[i], u, load(v[i] + j));
    }
    for (int i = 0; i < A; ++i) dot[i] = _mm256_sub_epi32(dot[i], load(v[i] + 8));
#else
    // one named sum per activation row, each update kept in order (keep_order): gcc reassociated
    // the loop's vpaddd and kept all 8 x A products on the stack until the end
    static_assert(A <= 4, "one named sum per activation row");
    __m256i d0 = _mm256_setzero_si256(), d1 = d0, d2 = d0, d3 = d0;
    for (int j = 0; j < 8; ++j) {
      const __m256i w = load(tile + 32 * j), aw = _mm256_abs_epi8(w), ones = _mm256_set1_epi16(1);
      auto row = [&](int i, __m256i& d) {
        const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(load(v[i] + j), w));
        d = _mm256_add_epi32(d, _mm256_madd_epi16(p, ones));
        keep_order(d);
      };
      row(0, d0);
      if constexpr (A > 1) row(1, d1);
      if constexpr (A > 2) row(2, d2);
      if constexpr (A > 3) row(3, d3);
    }
    const __m256i d[4] = {d0, d1, d2, d3};
    for (int i = 0; i < A; ++i) dot[i] = d[i];
#endif
  }
};

// The activation rows of a gemv_rows call in act_bcast's form (9 vectors per 64 values, 4.5 bytes
// per value), made once per call for all its quads: for several rows cheaper than broadcasting in
// the kernel per quad even where they do not fit in L1 with the tiles (rows of 4864 values,
// gemv_rows_bench). One row is broadcast in the kernel (quad_tiles' kOwn): its 22 KB of a 4864-value
// row beside the tiles streaming through L1 made the one-row decode slower (bench/README.md,
// "Q8_0 in the Quad form"). Q5_0_R4T's one row (L::kOneRowBcast), slower than two from memory when
// broadcast in the kernel, is broadcast per call where it takes at most kOneRowBcastBytes (rows of
// up to 1792 values; bench/README.md, "AVX2 Q4_K in the Quad form, Q5_0's one row broadcast per call").
template <class L>
static void bcast_rows(int64_t n, const uint8_t* va, size_t arb, int n_a, __m256i* out) {
  for (int i = 0; i < n_a; ++i)
    for (int64_t pair = 0; pair < n / 64; ++pair, out += 9)
      act_bcast<L::kOffShift>(reinterpret_cast<const block_q8_0x4*>(va + i * arb) + pair / 2, (int)(pair % 2), out);
}

// acc[i] (the lanes [rows 0..3 of a pair's first block | of its second]) += the products of
// tiles g0 .. g1 - 1 of one quad (tile: its tile g0) with A activation rows (arb bytes apart; bc:
// their broadcast form, bc_row vectors per row; kOwn: A is 1 and the kernel broadcasts it
// itself, bc unused), the Quad arithmetic: the pairs of blocks in row order, each into one
// accumulator per activation row. Tiles ahead by gemv.h's prefetch_tiles_ahead (prefetch: one
// row's too).
template <class L, int A, bool kOwn = false>
static inline void quad_tiles(const uint8_t* tile, int64_t g0, int64_t g1, const uint8_t* va, size_t arb,
                              const __m256i* bc, size_t bc_row, __m256* acc_io, bool prefetch = true) {
  constexpr int kPairs = L::kCols / 64;  // pairs of blocks per tile
  __m256 acc[A];
  for (int i = 0; i < A; ++i) acc[i] = acc_io[i];
  for (int64_t g = g0; g < g1; ++g, tile += L::kTile) {
    __m256 dw[kPairs];  // the weight scales [rows 0..3 of the pair's first block | of its second]
    L::scales(tile, dw);
    for (int h = 0; h < kPairs; ++h) {
      const int64_t pair = g * kPairs + h;  // in the activation: group pair / 2, its half pair % 2
      const __m256i* v[A];  // activation row i's broadcast form of the pair
      __m256i own[9];
      if (!kOwn) {
        for (int i = 0; i < A; ++i) v[i] = bc + i * bc_row + 9 * pair;
      } else {
        act_bcast<L::kOffShift>(reinterpret_cast<const block_q8_0x4*>(va) + (pair >> 1), (int)(pair & 1), own);
        v[0] = own;
      }
      __m256i dot[A];
      L::template dots<A>(tile, h, v, dot);
      for (int i = 0; i < A; ++i) {
        const block_q8_0x4* a = reinterpret_cast<const block_q8_0x4*>(va + i * arb) + (pair >> 1);
        acc[i] = dot_fma(dot[i], a, (int)(pair & 1), dw[h], acc[i]);
      }
    }
    if (A > 1 || prefetch) prefetch_tiles_ahead(tile, L::kTile);
  }
  for (int i = 0; i < A; ++i) acc_io[i] = acc[i];
}

// quad_tiles of two quads at once (the layouts with kTwoQuads, several activation rows, vpmaddubsw):
// tiles g0 .. g1 - 1 of quad a (ta) and quad b (tb) into acc_a[i], acc_b[i]. Each activation vector
// is loaded once for both quads, group by group (L::group; two whole Quads would take all 16
// registers): one quad at a time read each broadcast vector from L1 once per quad, 10 loads per
// row and pair, the bound of that pass (bench/README.md, "AVX2 several-row Q4_0: two quads per
// pass"). The same integer sums (one int16 sum of a lane's 8 products, quad_dot's bound for
// kOffShift 0, any order exact) and float steps per (quad, row) as quad_tiles: the same bits.
template <class L, int A>
static inline void quad_tiles2(const uint8_t* ta, const uint8_t* tb, int64_t g0, int64_t g1, const uint8_t* va,
                               size_t arb, const __m256i* bc, size_t bc_row, __m256* acc_a, __m256* acc_b) {
  static_assert(L::kOffShift == 0 && A <= 4, "one int16 sum of 8 products per (quad, row)");
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t g = g0; g < g1; ++g, ta += L::kTile, tb += L::kTile) {
    __m256 dwa[2], dwb[2];
    L::scales(ta, dwa), L::scales(tb, dwb);
    for (int h = 0; h < 2; ++h) {
      const int64_t pair = 2 * g + h;
      const __m256i* v[A];
      for (int i = 0; i < A; ++i) v[i] = bc + i * bc_row + 9 * pair;
      // row i's int16 sums with quad a (ai) and b (bi); named: see keep_order
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      auto group = [&](int j) {  // called with constants
        __m256i alo, ahi, blo, bhi;
        L::group(ta, h, j, alo, ahi), L::group(tb, h, j, blo, bhi);
        auto row = [&](int i, __m256i& sa, __m256i& sb) {
          const __m256i lo = load(v[i] + j), hi = load(v[i] + 4 + j);
          sa = _mm256_add_epi16(sa, _mm256_add_epi16(_mm256_maddubs_epi16(alo, lo), _mm256_maddubs_epi16(ahi, hi)));
          sb = _mm256_add_epi16(sb, _mm256_add_epi16(_mm256_maddubs_epi16(blo, lo), _mm256_maddubs_epi16(bhi, hi)));
          keep_order(sa), keep_order(sb);
        };
        row(0, a0, b0);
        if constexpr (A > 1) row(1, a1, b1);
        if constexpr (A > 2) row(2, a2, b2);
        if constexpr (A > 3) row(3, a3, b3);
      };
      group(0), group(1), group(2), group(3);
      const __m256i sa[4] = {a0, a1, a2, a3}, sb[4] = {b0, b1, b2, b3};
      for (int i = 0; i < A; ++i) {
        const block_q8_0x4* a = reinterpret_cast<const block_q8_0x4*>(va + i * arb) + (pair >> 1);
        const __m256i off = load(v[i] + 8);
        acc_a[i] = dot_fma(_mm256_sub_epi32(_mm256_madd_epi16(sa[i], ones), off), a, (int)(pair & 1), dwa[h], acc_a[i]);
        acc_b[i] = dot_fma(_mm256_sub_epi32(_mm256_madd_epi16(sb[i], ones), off), a, (int)(pair & 1), dwb[h], acc_b[i]);
      }
    }
    prefetch_tiles_ahead(ta, L::kTile), prefetch_tiles_ahead(tb, L::kTile);
  }
}

// gemv_rows_fn of the R4T layouts, slab by slab and in a slab panel by panel (repack.h), per quad
// of the panel the activation rows kMaxA at a time (then the ones left), the quad's tiles read
// from memory by the first pass and from L1 by the others; each (quad, activation row) keeps one
// accumulator from panel to panel, so the sums go in row order as without panels. The activation
// rows are broadcast once per call (bcast_rows); one row by the kernel itself, unless the layout
// reads its short rows from bcast_rows too (L::kOneRowBcast).
// kHwShort: one row's tiles without the software prefetch where the rows fit in one panel (_hw below).
constexpr size_t kOneRowBcastBytes = 8192;
template <class L, bool kHwShort = false>
void gemv_t_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a, float* y,
                 size_t ys) {
  constexpr int kMaxA = 4;
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const size_t bc_row = (size_t)(n / 64) * 9;
  struct alignas(32) Vec {
    uint8_t b[32];
  };
  static thread_local std::vector<Vec> bcast;  // grows to the largest call's rows, then stays
  const __m256i* bc = nullptr;
  const bool own = n_a == 1 && (!L::kOneRowBcast || bc_row * sizeof(Vec) > kOneRowBcastBytes);
  if (!own) {
    if (bcast.size() < bc_row * n_a) bcast.resize(bc_row * n_a);
    bcast_rows<L>(n, a, arb, n_a, reinterpret_cast<__m256i*>(bcast.data()));
    bc = reinterpret_cast<const __m256i*>(bcast.data());
  }
  // quad_tiles2 is the vpmaddubsw form; the VNNI tables keep their vpdpbusd pass (not measured with
  // two quads). It takes the quads of a slab in pairs.
#ifdef QC_DOT_VNNI
  constexpr bool kTwo = false;
#else
  constexpr bool kTwo = L::kTwoQuads && repack_rows_of(L::kLayout) % 8 == 0;
#endif
  const bool two = kTwo && n_a > 1;
  slab_panels<32, __m256>(
      L::kLayout, n, w, wrb, n_rows, L::kTile, n_a,
      [&](__m256* acc, const uint8_t* tile, int64_t g0, int64_t g1) {
        if (n_a == 1) {
          const bool prefetch = !kHwShort || n > repack_panel_cols(L::kLayout);
          if (own) return quad_tiles<L, 1, true>(tile, g0, g1, a, arb, nullptr, 0, acc, prefetch);
          return quad_tiles<L, 1>(tile, g0, g1, a, arb, bc, bc_row, acc, prefetch);
        }
        a_passes<kMaxA>(n_a, [&](auto A, int i) {
          if constexpr (kTwo) {
            if (two) {  // quads q, q + 1 of the slab; their accumulators copied here: copied inside
                        // quad_tiles2 (as quad_tiles does), gcc kept them on the stack, slower
              __m256 acc_a[A], acc_b[A];
              for (int k = 0; k < A; ++k) acc_a[k] = acc[i + k], acc_b[k] = acc[n_a + i + k];
              quad_tiles2<L, A>(tile, tile + (g1 - g0) * L::kTile, g0, g1, a + i * arb, arb, bc + i * bc_row, bc_row,
                                acc_a, acc_b);
              for (int k = 0; k < A; ++k) acc[i + k] = acc_a[k], acc[n_a + i + k] = acc_b[k];
              return;
            }
          }
          quad_tiles<L, A>(tile, g0, g1, a + i * arb, arb, bc + i * bc_row, bc_row, acc + i);
        });
      },
      [&](const __m256* acc, int quad) {
        for (int i = 0; i < n_a; ++i) _mm_storeu_ps(y + i * ys + 4 * quad, quad_sum(acc[i]));
      },
      two ? 2 : 1);
}

}  // namespace

// The decode kernels (gemv_fn, kernels.h) of Q4_0 and Q5_0, and the LayoutKernels::gemv of the
// repacked Q4_0_R4T / Q5_0_R4T / Q8_0_R4T (n_rows a multiple of the layout's repack_rows_of, kernels.h)
void gemv_q4_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv<Q4_0G>(n, w, wrb, n_rows, a, y);
}
void gemv_q5_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv<Q5_0G>(n, w, wrb, n_rows, a, y);
}
void gemv_q4_0_r4t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_t_rows<Q4_0R4T>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
void gemv_q5_0_r4t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_t_rows<Q5_0R4T>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
void gemv_q8_0_r4t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_t_rows<Q8_0R4T>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
// The same, with the hardware prefetchers alone on rows that fit in one panel (the table's choice).
void gemv_q8_0_r4t_hw(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_t_rows<Q8_0R4T, true>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}

// Their gemv_rows_fn (kernels.h, LayoutKernels): the same values as the gemv of each row alone
void gemv_q4_0_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                    size_t ys) {
  gemv_rows<Q4_0G>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q5_0_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                    size_t ys) {
  gemv_rows<Q5_0G>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q4_0_r4t_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                        size_t ys) {
  gemv_t_rows<Q4_0R4T>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q5_0_r4t_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                        size_t ys) {
  gemv_t_rows<Q5_0R4T>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q8_0_r4t_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                        size_t ys) {
  gemv_t_rows<Q8_0R4T>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}

}  // namespace QC_AVX2_NS
}  // namespace qc
