// AVX2 decode kernels (WeightKernels::gemv, gemv_rows) of stored Q4_1 and Q5_1 weights over Q8_1
// activation rows and of stored Q8_0 weights over Q8_0 rows, for rows of any multiple of 32
// values (SmolLM2's 576 and 1536 and Qwen2.5-0.5B's 896 included, which the 128-value layouts of
// gemv.cpp cannot take, and which a Q5_K_M file stores as Q5_1). An activation row is regrouped
// once per call into the lanes the kernel reads (act_pairs, act_pairs8), and each pass unpacks
// its weights and converts their scales once for up to four activation rows, every row's
// arithmetic that of the one-row gemv.
//
// Q4_1, Q5_1 (one kernel, rows_min, over the block type): each value bit for bit vec_dot_q4_1's /
// vec_dot_q5_1's, and so the prefill tile's (csrc/x86/min_dot.h: the order of their float sums,
// which this kernel keeps lane by lane). The "Quad" form of gemv.cpp: four weight rows' nibbles of
// two blocks regrouped once so that each 32-bit lane holds one row's group of 4 values (Q5_1: the
// 5th bits of qh merged in, in those lanes), against an activation row broadcast group by group;
// the byte products of a pass sum in int16 and vpmaddwd ends them as the 8 exact block dot
// products (rows x blocks). The scales and mins of the four rows are converted once per pass, so
// an extra activation row in a pass costs its byte products and its float steps alone.
//
// Q8_0: vec_dot_q8_0's value up to the order of the float sums (its prefill and decode already
// differed on this path: tests/test_gemm.py); the form is described below.
#include "simd.h"

#include "../gemv.h"
#include "../x86/min_dot.h"

#include <vector>

namespace qc {
namespace QC_AVX2_NS {
namespace {

static inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// One activation row's blocks k, k + 1 (a pair) in the form the Quad lanes take: v[j] (j < 4) its
// bytes 4j .. 4j + 3 of block k in all four lanes of the low half, of block k + 1 in the high
// half; v[4 + j] the same of bytes 16 + 4j .. 16 + 4j + 3; d and s the blocks' scale and d * sum
// as floats, four lanes each. A last pair without block k + 1 has zeros in its high half.
struct alignas(32) Pair {
  __m256i v[8];
  __m256 d, s;
};

// a (n / 32 blocks of block_q8_1) -> out ((n / 32 + 1) / 2 pairs)
static void act_pairs(int64_t n, const block_q8_1* a, Pair* out) {
  const int64_t nb = n / QK8_1;
  for (int64_t k = 0; k < nb; k += 2, ++out) {
    const bool two = k + 1 < nb;
    const __m128i* b0 = reinterpret_cast<const __m128i*>(a[k].qs);
    const __m128i z = _mm_setzero_si128();
    const __m128i* b1 = two ? reinterpret_cast<const __m128i*>(a[k + 1].qs) : &z;
    const __m256i lo = _mm256_set_m128i(_mm_loadu_si128(b1), _mm_loadu_si128(b0));
    const __m256i hi = _mm256_set_m128i(two ? _mm_loadu_si128(b1 + 1) : z, _mm_loadu_si128(b0 + 1));
    out->v[0] = bcast32<0>(lo), out->v[1] = bcast32<1>(lo), out->v[2] = bcast32<2>(lo), out->v[3] = bcast32<3>(lo);
    out->v[4] = bcast32<0>(hi), out->v[5] = bcast32<1>(hi), out->v[6] = bcast32<2>(hi), out->v[7] = bcast32<3>(hi);
    const float d1 = two ? h2f(a[k + 1].d) : 0.0f, s1 = two ? h2f(a[k + 1].s) : 0.0f;
    out->d = _mm256_setr_m128(_mm_set1_ps(h2f(a[k].d)), _mm_set1_ps(d1));
    out->s = _mm256_setr_m128(_mm_set1_ps(h2f(a[k].s)), _mm_set1_ps(s1));
  }
}

// The pairs of n_a activation rows (arb bytes apart), in this thread's buffer, which grows to the
// largest call's and then stays: pairs(n) per row.
static int64_t pairs(int64_t n) { return (n / QK8_1 + 1) / 2; }
static const Pair* act_pairs_rows(int64_t n, const uint8_t* a, size_t arb, int n_a) {
  static thread_local std::vector<Pair> buf;
  const size_t need = (size_t)pairs(n) * n_a;
  if (buf.size() < need) buf.resize(need);
  for (int i = 0; i < n_a; ++i) act_pairs(n, reinterpret_cast<const block_q8_1*>(a + i * arb), buf.data() + i * pairs(n));
  return buf.data();
}

// Four rows' blocks k, k + 1 of a type with a min, Q4_1 or Q5_1 (b[r]: row r's block k; kOne:
// block k alone, the high half a copy of it): q.lo[j] / q.hi[j] the values of elements 4j .. 4j +
// 3 / 16 + 4j .. of rows 0..3 (block k in the low half, k + 1 in the high one); dw, mw their
// scales and mins in those lanes. Both types start with d, m and keep the nibbles alike (byte i:
// element i low, i + 16 high); Q5_1 adds the 5th bits of qh (fifth_bits).
// (Inlined by force, as the kernels are slow without: GCC would not inline Q5_1's, and returned
// the 10 registers through memory.)
struct QuadMin {
  __m256i lo[4], hi[4];
  __m256 dw, mw;
};

// The 5th bits of four Q5_1 rows' blocks k, k + 1 (b, kOne as quad_min's) OR-ed into q's values as
// 0x10: with x the qh words in q's lanes, element e of a lane is bit e of its word, i.e. bit e % 8
// of byte e / 8. Each of the four bytes goes to all four bytes of its lane (vpshufb); the bits
// 0..3 are moved to 4..7 by a 16-bit shift (the 4 bits that cross into the other byte land in
// its low nibble, which the mask drops), so that byte t of a lane tests bit 4 + t with one mask,
// and the unsigned min with 0x10 maps the tested bit to 0x10.
template <bool kOne>
static inline __attribute__((always_inline)) void fifth_bits(QuadMin& q, const block_q5_1* const* b) {
  uint32_t qh[8];
  for (int r = 0; r < 4; ++r) {
    std::memcpy(&qh[r], b[r]->qh, 4);
    std::memcpy(&qh[4 + r], (kOne ? b[r] : b[r] + 1)->qh, 4);
  }
  const __m256i x = load(qh);
  const __m256i mask = _mm256_set1_epi32((int)0x80402010), b4 = _mm256_set1_epi8(0x10);
  const __m256i each = _mm256_setr_epi32(0, 0x04040404, 0x08080808, 0x0c0c0c0c, 0, 0x04040404, 0x08080808, 0x0c0c0c0c);
  auto bits = [&](__m256i v) { return _mm256_min_epu8(_mm256_and_si256(v, mask), b4); };
  for (int c = 0; c < 4; ++c) {  // byte c of qh: elements 8c .. 8c + 7, i.e. groups j = 2c, 2c + 1 of lo (c < 2) or hi
    const __m256i y = _mm256_shuffle_epi8(x, _mm256_add_epi8(each, _mm256_set1_epi8((char)c)));
    __m256i* v = c < 2 ? q.lo : q.hi;
    const int j = 2 * (c & 1);
    v[j] = _mm256_or_si256(v[j], bits(_mm256_slli_epi16(y, 4)));
    v[j + 1] = _mm256_or_si256(v[j + 1], bits(y));
  }
}

template <bool kOne, typename B>
static inline __attribute__((always_inline)) QuadMin quad_min(const B* const* b) {
  QuadMin q;
  __m256i v[4], t[4];
  for (int r = 0; r < 4; ++r) {
    const B* b1 = kOne ? b[r] : b[r] + 1;
    v[r] = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b1->qs), reinterpret_cast<const __m128i*>(b[r]->qs));
  }
  transpose4(v, t);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int j = 0; j < 4; ++j) {
    q.lo[j] = _mm256_and_si256(t[j], m4);
    q.hi[j] = _mm256_and_si256(_mm256_srli_epi16(t[j], 4), m4);
  }
  if constexpr (std::is_same<B, block_q5_1>::value) fifth_bits<kOne>(q, b);
  // (d, m) of each row's two blocks, as 32-bit words -> [d of rows 0..3, m of rows 0..3] per half
  uint32_t dm[8];
  for (int r = 0; r < 4; ++r) {
    std::memcpy(&dm[r], b[r], 4);
    std::memcpy(&dm[4 + r], kOne ? b[r] : b[r] + 1, 4);
  }
  const __m256i x = _mm256_shuffle_epi8(load(dm), _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                                                     0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
  const __m256i dm2 = _mm256_permute4x64_epi64(x, 0xd8);  // [d of block k, of k + 1 | m of k, of k + 1]
  q.dw = _mm256_cvtph_ps(_mm256_castsi256_si128(dm2));
  q.mw = _mm256_cvtph_ps(_mm256_extracti128_si256(dm2, 1));
  return q;
}

// The 8 exact integer block dot products [rows 0..3 of block k | of block k + 1] of q with one
// activation pair. Q4_1 values <= 15: the 8 int16 products of a lane sum to <= 8 * 2 * 15 * 127;
// Q5_1 values <= 31: 4 of them to <= 4 * 2 * 31 * 127 < 2^15, so two vpmaddwd end them.
template <typename B>
static inline __attribute__((always_inline)) __m256i quad_min_dot(const QuadMin& q, const Pair& p) {
#ifdef QC_DOT_VNNI
  __m256i d = _mm256_setzero_si256();
  for (int j = 0; j < 4; ++j) d = dpbusd(dpbusd(d, q.lo[j], p.v[j]), q.hi[j], p.v[4 + j]);
  return d;
#else
  auto two = [&](int j) {
    return _mm256_add_epi16(_mm256_maddubs_epi16(q.lo[j], p.v[j]), _mm256_maddubs_epi16(q.hi[j], p.v[4 + j]));
  };
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i s01 = _mm256_add_epi16(two(0), two(1)), s23 = _mm256_add_epi16(two(2), two(3));
  if constexpr (std::is_same<B, block_q4_1>::value) return _mm256_madd_epi16(_mm256_add_epi16(s01, s23), ones);
  return _mm256_add_epi32(_mm256_madd_epi16(s01, ones), _mm256_madd_epi16(s23, ones));
#endif
}
// The four weight rows of a pass as rows_min reads them: quad<kOne>(k) the QuadMin of blocks k,
// k + 1 (kOne: k alone), prefetch(g) the prefetch due when group g of 4 blocks is read.
// Stored rows (R of them, wrb bytes apart, rows past R repeating the last one), with prefetch: the
// R rows after these (and the R after those) at the pace they are read (gemv.h).
template <typename B, int R, bool kPrefetch>
struct StoredQuads {
  const uint8_t* w;
  size_t wrb;
  template <bool kOne>
  QuadMin quad(int64_t k) const {
    const B* b[4];
    for (int r = 0; r < 4; ++r) b[r] = reinterpret_cast<const B*>(w + (r < R ? r : R - 1) * wrb) + k;
    return quad_min<kOne>(b);
  }
  void prefetch(int64_t g) const {
    if (kPrefetch) prefetch_tiles<R * 4 * sizeof(B)>(w + R * wrb, R * wrb, g, R * wrb <= kPrefetchL1Tile);
  }
};

// Q4_1_R4T and Q5_1_R4T (repack.h): a quad's tiles one after another, each the QuadMin of its two
// blocks as stored (the nibbles regrouped, Q5_1's 5th bits as bit planes, [d | m] of its 8 (row,
// block) lanes), prefetched ahead (gemv.h, prefetch_tiles_ahead). Its rows have
// an even number of blocks and segments are even (kMinDotSegment): block k never stands alone.
template <typename B>
struct TileQuads {
  static constexpr bool kQ5 = std::is_same<B, block_q5_1>::value;
  static constexpr size_t kTile = 8 * sizeof(B), kDm = kQ5 ? 160 : 128;
  const uint8_t* tiles;
  template <bool kOne>
  QuadMin quad(int64_t k) const {
    const uint8_t* t = tiles + (k / 2) * kTile;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    QuadMin q;
    for (int j = 0; j < 4; ++j) {
      const __m256i v = load(t + 32 * j);
      q.lo[j] = _mm256_and_si256(v, m4);
      q.hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    if constexpr (kQ5) or_fifth_bits(load(t + 128), q.lo, q.hi);
    q.dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t + kDm)));
    q.mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t + kDm + 16)));
    return q;
  }
  void prefetch(int64_t g) const {  // the group's two tiles
    prefetch_tiles_ahead(tiles + 2 * g * kTile, 2 * kTile);
  }
};

// y[i * ys + r] (r < R) = row r of the pass (src) . activation row i (A rows of pairs(n) pairs
// from p; n / 32 blocks). The float steps are min_dot.h's, lane by lane: lane (row r,
// accumulator j = block mod 4) of P[i][j / 2] (j even: low half, odd: high) and of M[i][j / 2],
// and per segment of kMinDotSegment blocks the sums (p_0 + p_1) + (p_2 + p_3) and the same of m,
// added to the row's total.
template <typename B, int A, class Quads>
static void rows_min(int64_t n, const Quads& src, int R, const Pair* p, float* y, size_t ys) {
  static_assert(QK4_1 == 32 && QK5_1 == 32, "blocks of 32 values");
  const int64_t nb = n / 32, np = pairs(n);
  __m128 total[A];
  for (int i = 0; i < A; ++i) total[i] = _mm_setzero_ps();
  for (int64_t s0 = 0; s0 < nb; s0 += kMinDotSegment) {
    const int64_t s1 = s0 + kMinDotSegment < nb ? s0 + kMinDotSegment : nb;
    __m256 P[A][2], M[A][2];
    for (int i = 0; i < A; ++i) P[i][0] = P[i][1] = M[i][0] = M[i][1] = _mm256_setzero_ps();
    // blocks k, k + 1 (or k alone, kOne) into accumulators H (k mod 4 = 2H)
    auto step = [&](auto kOne, auto H, int64_t k) {
      const QuadMin q = src.template quad<decltype(kOne)::value>(k);
      constexpr int h = decltype(H)::value;
      for (int i = 0; i < A; ++i) {
        const Pair& a = p[i * np + k / 2];
        const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(quad_min_dot<B>(q, a)), q.dw);
        P[i][h] = _mm256_fmadd_ps(t, a.d, P[i][h]);
        M[i][h] = _mm256_fmadd_ps(q.mw, a.s, M[i][h]);
      }
    };
    using F = std::false_type;
    using T = std::true_type;
    using H0 = std::integral_constant<int, 0>;
    using H1 = std::integral_constant<int, 1>;
    int64_t k = s0;
    for (; k + 4 <= s1; k += 4) {
      step(F(), H0(), k);
      step(F(), H1(), k + 2);
      src.prefetch(k / 4);
    }
    if (k < s1) {  // 1..3 blocks
      if (s1 - k == 1) step(T(), H0(), k);
      else step(F(), H0(), k);
      if (s1 - k == 3) step(T(), H1(), k + 2);
      src.prefetch(k / 4);
    }
    for (int i = 0; i < A; ++i) {
      auto sum4 = [](const __m256* v) {  // (acc 0 + acc 1) + (acc 2 + acc 3) of rows 0..3
        return _mm_add_ps(_mm_add_ps(_mm256_castps256_ps128(v[0]), _mm256_extractf128_ps(v[0], 1)),
                          _mm_add_ps(_mm256_castps256_ps128(v[1]), _mm256_extractf128_ps(v[1], 1)));
      };
      total[i] = _mm_add_ps(total[i], _mm_add_ps(sum4(P[i]), sum4(M[i])));
    }
  }
  for (int i = 0; i < A; ++i) {
    float out[4];
    _mm_storeu_ps(out, total[i]);
    for (int r = 0; r < R; ++r) y[i * ys + r] = out[r];
  }
}

// gemv_fn (kernels.h) of B (Q4_1, Q5_1) over one Q8_1 activation row, and its gemv_rows_fn:
// activation rows four at a time over each pass of four weight rows (faster than two though the
// accumulators then spill: bench/README.md, "SmolLM2's Q4_1 and Q8_0 on AVX2")
template <typename B>
static void gemv_min(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const Pair* p = act_pairs_rows(n, static_cast<const uint8_t*>(va), 0, 1);
  row_passes(n_rows, [&](auto R, int r) {
    rows_min<B, 1>(n, StoredQuads<B, R, R == 4>{w + r * wrb, wrb}, R, p, y + r, 0);
  });
}
template <typename B>
static void gemv_min_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a,
                          float* y, size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const Pair* p = act_pairs_rows(n, static_cast<const uint8_t*>(va), arb, n_a);
  row_passes_a<4>(n_rows, n_a, [&](auto R, auto A, int r, int i) {
    rows_min<B, A>(n, StoredQuads<B, R, R == 4>{w + r * wrb, wrb}, R, p + i * pairs(n), y + i * ys + r, ys);
  });
}
// The same over Q4_1_R4T / Q5_1_R4T tiles (n_rows a multiple of 4): each row bit for bit the stored gemv's
template <typename B>
static void gemv_min_t_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a,
                            float* y, size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const Pair* p = act_pairs_rows(n, static_cast<const uint8_t*>(va), arb, n_a);
  row_passes_a<4>(n_rows, n_a, [&](auto R, auto A, int r, int i) {  // R is 4: a quad's tiles from row r's byte on
    rows_min<B, A>(n, TileQuads<B>{w + r * wrb}, R, p + i * pairs(n), y + i * ys + r, ys);
  });
}

// ---- Q8_0 ----------------------------------------------------------------------------------
// One weight row per register (its signed bytes need a vpsign per product whatever the lanes
// hold, so the regrouping of the Quad form would save little here): per pair of blocks k, k + 1
// the bytes 0..15 of both in one vector and 16..31 in another, their absolute values taken once
// for every activation row; per activation row two vpsignb, two vpmaddubsw and two vpmaddwd make 8
// int32 lanes, 4 per block, then one conversion, one scale product and one FMA. (Weights widened
// to int16 once per pass against int16 activations, 4 vpmaddwd per row and pair, are the same 10
// vector operations per row and pair, and were no faster: bench/README.md, "Q6_K and stored Q8_0".)

// One activation row's pair of blocks k, k + 1 in those lanes: lo = bytes 0..15 of block k, then
// of k + 1; hi the bytes 16..31; d the scales, four lanes each. A last pair without block k + 1
// has zeros in its high half.
struct alignas(32) Pair8 {
  __m256i lo, hi;
  __m256 d;
};

// a (n / 32 blocks of block_q8_0) -> out (pairs(n) pairs)
static void act_pairs8(int64_t n, const block_q8_0* a, Pair8* out) {
  const int64_t nb = n / QK8_0;
  for (int64_t k = 0; k < nb; k += 2, ++out) {
    const bool two = k + 1 < nb;
    const __m128i* b0 = reinterpret_cast<const __m128i*>(a[k].qs);
    const __m128i* b1 = reinterpret_cast<const __m128i*>(a[k + (two ? 1 : 0)].qs);
    const __m128i z = _mm_setzero_si128();
    out->lo = _mm256_set_m128i(two ? _mm_loadu_si128(b1) : z, _mm_loadu_si128(b0));
    out->hi = _mm256_set_m128i(two ? _mm_loadu_si128(b1 + 1) : z, _mm_loadu_si128(b0 + 1));
    out->d = _mm256_setr_m128(_mm_set1_ps(h2f(a[k].d)), _mm_set1_ps(two ? h2f(a[k + 1].d) : 0.0f));
  }
}
static const Pair8* act_pairs8_rows(int64_t n, const uint8_t* a, size_t arb, int n_a) {
  static thread_local std::vector<Pair8> buf;
  const size_t need = (size_t)pairs(n) * n_a;
  if (buf.size() < need) buf.resize(need);
  for (int i = 0; i < n_a; ++i) act_pairs8(n, reinterpret_cast<const block_q8_0*>(a + i * arb), buf.data() + i * pairs(n));
  return buf.data();
}

// acc[i] += activation row i's pair j (a[i][j]) . weight blocks b0, b1 (k, k + 1; a last pair
// without block k + 1 passes b0 twice, the activation's zeros dropping it), i < A: the 8 int32
// lanes, 4 per block, then one conversion, one scale product and one FMA per row
template <int A>
static inline __attribute__((always_inline)) void pair8(const block_q8_0* b0, const block_q8_0* b1, const Pair8* const* a,
                                                        int64_t j, __m256* acc) {
  const __m256i ql = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b1->qs), reinterpret_cast<const __m128i*>(b0->qs));
  const __m256i qh =
      _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b1->qs + 16), reinterpret_cast<const __m128i*>(b0->qs + 16));
  const uint32_t d2 = (uint32_t)b0->d | (uint32_t)b1->d << 16;
  const __m256 dw = _mm256_cvtph_ps(
      _mm_shuffle_epi8(_mm_cvtsi32_si128((int)d2), _mm_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3)));
  const __m256i al = _mm256_abs_epi8(ql), ah = _mm256_abs_epi8(qh);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int i = 0; i < A; ++i) {
    const Pair8& x = a[i][j];
    // |q| x a with q's sign moved onto a: |q| <= 128, |a| <= 127, a pair <= 32512
    const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(al, _mm256_sign_epi8(x.lo, ql)), ones);
    const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(ah, _mm256_sign_epi8(x.hi, qh)), ones);
    acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(dw, x.d), _mm256_cvtepi32_ps(_mm256_add_epi32(pl, ph)), acc[i]);
  }
}

// y[i * ys] = one Q8_0 row w (n / 32 blocks) . activation row i (A rows of pairs(n) pairs from
// p), the pairs in order into one accumulator per row. One row: a plain loop over the pairs;
// several: two pairs per iteration (the faster of one, two and four per row in gemv_rows_bench;
// for one row the plain loop was faster: bench/README.md, "Q6_K and stored Q8_0 decode kernels").
// kStream: the weights kStreamAhead past each pair are prefetched as it is read (for rows too long
// for prefetch_ahead below, read by one or two activation rows).
constexpr size_t kStreamAhead = 4096;
template <int A, bool kStream = false>
static void row8(int64_t n, const block_q8_0* w, const Pair8* p, float* y, size_t ys) {
  const int64_t nb = n / QK8_0, np = pairs(n);
  const Pair8* a[A];
  for (int i = 0; i < A; ++i) a[i] = p + i * np;
  __m256 acc[A];
  for (int i = 0; i < A; ++i) acc[i] = _mm256_setzero_ps();
  int64_t k = 0;
  if constexpr (A > 1)
    for (; k + 4 <= nb; k += 4) {
      if (kStream) __builtin_prefetch(reinterpret_cast<const uint8_t*>(w + k) + kStreamAhead, 0, 3);
      if (kStream) __builtin_prefetch(reinterpret_cast<const uint8_t*>(w + k) + kStreamAhead + 64, 0, 3);
      pair8<A>(w + k, w + k + 1, a, k / 2, acc);
      pair8<A>(w + k + 2, w + k + 3, a, k / 2 + 1, acc);
    }
  for (; k < nb; k += 2) {
    if (kStream) __builtin_prefetch(reinterpret_cast<const uint8_t*>(w + k) + kStreamAhead, 0, 3);
    pair8<A>(w + k, w + (k + 1 < nb ? k + 1 : k), a, k / 2, acc);
  }
  for (int i = 0; i < A; ++i) y[i * ys] = hsum_ps(acc[i]);
}

// Rows r .. of w (wrb bytes apart) are read in order: while row r is read, the bytes of the
// stream kAhead past it into L1, issued at once (so only for rows up to kPrefetchRowBytes: the
// burst of a longer row slowed its gemv). The hardware prefetchers alone kept the one-row gemv of
// short rows below memory speed; with 4 or more activation rows a pass is slower than memory,
// and the prefetches do not pay (bench/README.md, "Q6_K and stored Q8_0 decode kernels").
constexpr size_t kPrefetchRowBytes = 2048;
static inline void prefetch_ahead(const uint8_t* w, size_t wrb, int r) {
  constexpr size_t kAhead = 4096;
  for (size_t off = r * wrb; off < (r + 1) * wrb; off += 64) __builtin_prefetch(w + off + kAhead, 0, 3);
}

}  // namespace

// gemv_fn (kernels.h) of Q4_1 / Q5_1 over one Q8_1 activation row: y[r] = vec_dot_q4_1(row r, a) /
// vec_dot_q5_1(row r, a), bit for bit; and their gemv_rows_fn, each row's value the same
void gemv_q4_1(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_min<block_q4_1>(n, w, wrb, n_rows, a, y);
}
void gemv_q4_1_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                    size_t ys) {
  gemv_min_rows<block_q4_1>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q4_1_r4t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_min_t_rows<block_q4_1>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
void gemv_q4_1_r4t_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                        size_t ys) {
  gemv_min_t_rows<block_q4_1>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q5_1_r4t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_min_t_rows<block_q5_1>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
void gemv_q5_1_r4t_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                        size_t ys) {
  gemv_min_t_rows<block_q5_1>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q5_1(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_min<block_q5_1>(n, w, wrb, n_rows, a, y);
}
void gemv_q5_1_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                    size_t ys) {
  gemv_min_rows<block_q5_1>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}

// gemv_rows_fn of Q8_0 over Q8_0 activation rows: per weight row, the activation rows four (or
// five) at a time, y[i * ys + r] = row r . a_i (vec_dot_q8_0's value up to the order of the float
// sums); and its gemv_fn, the same for one activation row
void gemv_q8_0_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a, float* y,
                    size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const Pair8* p = act_pairs8_rows(n, static_cast<const uint8_t*>(va), arb, n_a);
  for (int r = 0; r < n_rows; ++r) {
    const block_q8_0* row = reinterpret_cast<const block_q8_0*>(w + r * wrb);
    if (n_a <= 2 && wrb > kPrefetchRowBytes) {
      if (n_a == 2) row8<2, true>(n, row, p, y + r, ys);
      else row8<1, true>(n, row, p, y + r, ys);
      continue;
    }
    if (n_a <= 2) prefetch_ahead(w, wrb, r);
    // passes of 4 activation rows, the last of 5 where one would be left alone (9 rows: 4 + 5)
    int i = 0;
    for (; n_a - i > 5; i += 4) row8<4>(n, row, p + i * pairs(n), y + i * ys + r, ys);
    switch (n_a - i) {
      case 5: row8<5>(n, row, p + i * pairs(n), y + i * ys + r, ys); break;
      case 4: row8<4>(n, row, p + i * pairs(n), y + i * ys + r, ys); break;
      case 3: row8<3>(n, row, p + i * pairs(n), y + i * ys + r, ys); break;
      case 2: row8<2>(n, row, p + i * pairs(n), y + i * ys + r, ys); break;
      case 1: row8<1>(n, row, p + i * pairs(n), y + i * ys + r, ys); break;
      default: break;
    }
  }
}
void gemv_q8_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_q8_0_rows(n, w, wrb, n_rows, a, 0, 1, y, 0);
}

}  // namespace QC_AVX2_NS
}  // namespace qc
