// The decode of the repacked Q5_0_R4T, Q8_0_R4T, Q4_1_R4T and Q5_1_R4T in 512-bit vectors
// (LayoutKernels::gemv and gemv_rows), and of Q4_0_R16, the avx512 table's own layout of Q4_0 (its
// section below): the avx2 table's "Quad" arithmetic (avx2/gemv.cpp, gemv_32.cpp), which the
// avx512 table otherwise keeps for these types (dispatch.cpp, keep_decode),
// bit for bit: the same exact integer block dot products, then per row and lane the same float
// steps in the same order (acc += (d_w * d_a) * dot pair by pair, y = acc_even + acc_odd; the min
// types in min_dot.h's segments), so a row's value does not depend on the path's register width,
// on the other activation rows of a call, or on the layout (the stored rows' avx2 gemv).
//
// Why not the avx2 kernels: their several-row form broadcasts every activation row once per call
// into 4.5 bytes per value, which for a 4864-wide row (22 KB each) leaves L1 at two rows and is
// read back from L2 for every quad of weight rows; here each activation row's group is loaded as it
// is (Q8_0x4, or Q8_1 regrouped once per call: 1.1-2 bytes per value, all rows of a pass stay in
// L1) and broadcast in registers. One 512-bit vector holds two pairs of blocks (128 columns: four
// blocks x four rows), so a tile's weights are unpacked once per pass of up to kMaxA activation
// rows and each activation row costs 8 vpdpbusd per 512 weights; one row alone ran faster than the
// avx2 kernel too on an Intel Xeon (bench/README.md, "512-bit several-row kernels of the R4T
// layouts"), but for Q8_0 not on Zen 4 (avx512/quants.cpp keeps the avx2 one-row gemv there).
#include "simd512.h"

#include "../act_q8_0x4.h"
#include "../gemv.h"
#include "../repack.h"
#include "../x86/min_dot.h"

#include <type_traits>
#include <utility>
#include <vector>

namespace qc {
namespace avx512 {
namespace {

// The tiles ahead of a pass of A activation rows: for one row the hardware's prefetch alone, as the
// Q4_K_R4 decode (gemv_k.cpp); with gemv.h's software prefetch one row read these layouts slower
// (bench/README.md, "One-row decode without software prefetch on avx512")
template <int A>
static inline void prefetch_ahead(const uint8_t* p, size_t n) {
  if (A > 1) prefetch_tiles_ahead(p, n);
}

// The four weight rows' values of blocks 4s .. 4s + 3 of a step s (128 columns) in the Quad lanes
// (repack.h, avx2/gemv.cpp): lo[j] holds in 128-bit lane k the bytes 4j .. 4j + 3 of block k of
// rows 0..3, hi[j] the same of bytes 16 + 4j ..; dw the scales in the dot products' lanes, [rows
// 0..3 of block 0 | of block 1 | of block 2 | of block 3]. kOffShift: the unsigned values' offset
// is 8 << kOffShift. two: the step has its second pair (the 64-column tiles: a row of an odd number
// of tiles ends without it); quad and scales take it whether they need it or not.

// q: nibble bytes -> their low nibbles (lo) and high ones (hi)
static inline void unpack_nibbles(__m512i q, __m512i* lo, __m512i* hi) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  *lo = _mm512_and_si512(q, m4);
  *hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
}

// The 5th bits of the R4T layouts (repack.h: Q5_0_R4T, Q5_1_R4T) OR-ed into the values as 0x10: p
// the bit planes, bit j of each byte for lo[j], bit 4 + j for hi[j], each moved to bit 4 by a shift
static inline void or_fifth_bits(__m512i p, __m512i* lo, __m512i* hi) {
  const __m512i fifth = _mm512_set1_epi8(0x10);
  const __m512i lo5[4] = {_mm512_slli_epi16(p, 4), _mm512_slli_epi16(p, 3), _mm512_slli_epi16(p, 2),
                          _mm512_slli_epi16(p, 1)};
  const __m512i hi5[4] = {p, _mm512_srli_epi16(p, 1), _mm512_srli_epi16(p, 2), _mm512_srli_epi16(p, 3)};
  for (int j = 0; j < 4; ++j) {
    lo[j] = _mm512_ternarylogic_epi32(lo[j], lo5[j], fifth, 0xf8);  // lo | (lo5 & fifth)
    hi[j] = _mm512_ternarylogic_epi32(hi[j], hi5[j], fifth, 0xf8);
  }
}

// The 32 bytes at t + at of a 64-column tile (tile bytes long) and of the one after it (two; else
// zeros); and the 8 binary16 at t + at of both, as floats
static inline __m512i load_tiles2(const uint8_t* t, size_t tile, size_t at, bool two) {
  return two ? load_2x32(t + at, t + tile + at) : _mm512_zextsi256_si512(load256(t + at));
}
static inline __m512 halves_tiles2(const uint8_t* t, size_t tile, size_t at, bool two) {
  const __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t + at));
  const __m128i h1 = two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(t + tile + at)) : _mm_setzero_si128();
  return _mm512_cvtph_ps(_mm256_set_m128i(h1, h0));
}

// Q5_0_R4T: one tile per step; Q4_0_R4T's nibbles (vector j of both pairs at 64j), the 5th-bit
// planes of both pairs at 256 (bit j of a byte for lo[j], bit 4 + j for hi[j]), the 16 binary16
// scales at 320 (4r + k = row r's block k)
struct Q5_0R4T {
  static constexpr int32_t kLayout = QC_LAYOUT_Q5_0_R4T;
  static constexpr size_t kStep = 352;
  static constexpr int kOffShift = 1;
  static inline void quad(const uint8_t* t, __m512i* lo, __m512i* hi, bool) {
    for (int j = 0; j < 4; ++j) unpack_nibbles(load512(t + 64 * j), &lo[j], &hi[j]);
    or_fifth_bits(load512(t + 256), lo, hi);
  }
  static inline __m512 scales(const uint8_t* t, bool) {
    const __m512i lanes = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(lanes, _mm512_cvtph_ps(load256(t + 320)));
  }
};

// Q8_0_R4T: two tiles of 272 bytes per step (one pair each), vector j of a tile at 32j (j < 4 the
// lo halves, 4 + j the hi ones), signed; +128 makes them the unsigned operand (kOffShift 4: 128 *
// sum(a) off). Its 8 scales at 256 in the lanes' order.
struct Q8_0R4T {
  static constexpr int32_t kLayout = QC_LAYOUT_Q8_0_R4T;
  static constexpr size_t kTile = 272, kStep = 2 * kTile;
  static constexpr int kOffShift = 4;
  static inline void quad(const uint8_t* t, __m512i* lo, __m512i* hi, bool two) {
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    for (int j = 0; j < 8; ++j) (j < 4 ? lo[j] : hi[j - 4]) = _mm512_xor_si512(load_tiles2(t, kTile, 32 * j, two), x80);
  }
  static inline __m512 scales(const uint8_t* t, bool two) { return halves_tiles2(t, kTile, 256, two); }
};

// init + the exact integer dot products [rows 0..3 of block k] in lane k of q (lo, hi) with an
// activation group (alo, ahi: its lo and hi bytes, block k in lane k), the activation bytes
// broadcast lane by lane (vpshufd); the lo and hi halves in two chains so that one row keeps two
// vpdpbusd in flight.
static QC_VNNI inline __m512i byte_dots(const __m512i* lo, const __m512i* hi, __m512i alo, __m512i ahi, __m512i init) {
  __m512i dl = init, dh = _mm512_setzero_si512();
  dl = _mm512_dpbusd_epi32(dl, lo[0], _mm512_shuffle_epi32(alo, _MM_PERM_AAAA));
  dh = _mm512_dpbusd_epi32(dh, hi[0], _mm512_shuffle_epi32(ahi, _MM_PERM_AAAA));
  dl = _mm512_dpbusd_epi32(dl, lo[1], _mm512_shuffle_epi32(alo, _MM_PERM_BBBB));
  dh = _mm512_dpbusd_epi32(dh, hi[1], _mm512_shuffle_epi32(ahi, _MM_PERM_BBBB));
  dl = _mm512_dpbusd_epi32(dl, lo[2], _mm512_shuffle_epi32(alo, _MM_PERM_CCCC));
  dh = _mm512_dpbusd_epi32(dh, hi[2], _mm512_shuffle_epi32(ahi, _MM_PERM_CCCC));
  dl = _mm512_dpbusd_epi32(dl, lo[3], _mm512_shuffle_epi32(alo, _MM_PERM_DDDD));
  dh = _mm512_dpbusd_epi32(dh, hi[3], _mm512_shuffle_epi32(ahi, _MM_PERM_DDDD));
  return _mm512_add_epi32(dl, dh);
}

// The init of byte_dots for each Q8_0x4 group of n_a activation rows (arb bytes apart, n_steps
// groups each): the unsigned values' offset (8 << kOffShift) * sum of block k, negated, in the 4
// lanes of block k. Once per call, not per quad and row (quad_rows): the same for every weight row.
template <int kOffShift>
static const int32_t* neg_offsets(const uint8_t* va, size_t arb, int n_a, int64_t n_steps) {
  static thread_local std::vector<int32_t> buf;  // 16 per group; grows to the largest call's rows, then stays
  if (buf.size() < (size_t)(16 * n_a * n_steps)) buf.resize((size_t)(16 * n_a * n_steps));
  for (int i = 0; i < n_a; ++i)
    for (int64_t s = 0; s < n_steps; ++s) {
      const __m512i sum8 = load512(reinterpret_cast<const block_q8_0x4*>(va + i * arb)[s].sum8);
      const __m512i t = _mm512_add_epi32(sum8, _mm512_shuffle_epi32(sum8, _MM_PERM_BADC));
      const __m512i off = _mm512_slli_epi32(_mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB)), kOffShift);
      _mm512_storeu_si512(buf.data() + 16 * (i * n_steps + s), _mm512_sub_epi32(_mm512_setzero_si512(), off));
    }
  return buf.data();
}

// f(i) for i < A, i a std::integral_constant. gcc keeps arrays of accumulators in registers only
// where they are indexed by constants: copied in and out by a loop (made a memcpy), quad_rows'
// stayed on the stack and its 4-row decode ran 7-20% slower (bench/README.md, "Column panels").
template <int A, typename F, int... I>
static QC_VNNI inline __attribute__((always_inline)) void each_row(F&& f, std::integer_sequence<int, I...> = {}) {
  if constexpr (sizeof...(I) < A) each_row<A>(f, std::make_integer_sequence<int, A>());
  else (f(std::integral_constant<int, I>()), ...);
}

// acc[i] += the products of steps s0 .. s1 - 1 of one quad (t: its step s0; last_two: step s1 - 1
// has its second pair) with activation row i < A (arb bytes apart; their neg_offsets 16 * n_steps
// apart from off). Per row one accumulator in the avx2 kernel's lanes [rows 0..3, even blocks |
// odd blocks], fed pair by pair: the step's first pair (low half), then its second (high half).
template <class L, int A>
static QC_VNNI void quad_rows(const uint8_t* t, int64_t s0, int64_t s1, bool last_two, const uint8_t* va, size_t arb,
                              const int32_t* off, int64_t n_steps, __m256* acc_io) {
  __m256 acc[A];
  each_row<A>([&](auto i) QC_VNNI __attribute__((always_inline)) { acc[i] = acc_io[i]; });
  for (int64_t s = s0; s < s1; ++s, t += L::kStep) {
    const bool two = s + 1 < s1 || last_two;
    __m512i lo[4], hi[4];
    L::quad(t, lo, hi, two);
    const __m512 dw = L::scales(t, two);
    for (int i = 0; i < A; ++i) {
      const block_q8_0x4* a = reinterpret_cast<const block_q8_0x4*>(va + i * arb) + s;
      const __m512 dot = _mm512_cvtepi32_ps(byte_dots(lo, hi, load512(a->lo), load512(a->hi), load512(off + 16 * (i * n_steps + s))));
      const __m512 d = _mm512_mul_ps(dw, _mm512_loadu_ps(a->d));
      acc[i] = _mm256_fmadd_ps(_mm512_castps512_ps256(d), _mm512_castps512_ps256(dot), acc[i]);
      if (two) acc[i] = _mm256_fmadd_ps(_mm512_extractf32x8_ps(d, 1), _mm512_extractf32x8_ps(dot, 1), acc[i]);
    }
    prefetch_ahead<A>(t, L::kStep);
  }
  each_row<A>([&](auto i) QC_VNNI __attribute__((always_inline)) { acc_io[i] = acc[i]; });
}

// gemv_rows_fn of the layout L, slab by slab and in a slab panel by panel (repack.h), per quad of
// the panel the activation rows kMaxA at a time (then the ones left), the quad's tiles read from
// memory by the first pass and from L1 by the others; each (quad, activation row) keeps one
// accumulator from panel to panel (the avx2 kernel's order).
template <class L>
static QC_VNNI void gemv_t_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb,
                                int n_a, float* y, size_t ys) {
  constexpr int kMaxA = 4;
  constexpr int64_t kTileCols = repack_cols(L::kLayout);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t n_steps = (n + 127) / 128;
  const int32_t* off = neg_offsets<L::kOffShift>(a, arb, n_a, n_steps);
  slab_panels<32, __m256>(
      L::kLayout, n, static_cast<const uint8_t*>(vw), wrb, n_rows, L::kStep * kTileCols / 128, n_a,
      [&](__m256* acc, const uint8_t* t, int64_t g0, int64_t g1) {  // whole steps but a last tile
        const int64_t c0 = g0 * kTileCols, c1 = g1 * kTileCols;
        a_passes<kMaxA>(n_a, [&](auto A, int i) {
          quad_rows<L, A>(t, c0 / 128, (c1 + 127) / 128, (c1 - c0) % 128 == 0, a + i * arb, arb, off + 16 * i * n_steps,
                          n_steps, acc + i);
        });
      },
      [&](const __m256* acc, int quad) {
        for (int i = 0; i < n_a; ++i) {
          const __m128 sum = _mm_add_ps(_mm256_castps256_ps128(acc[i]), _mm256_extractf128_ps(acc[i], 1));
          _mm_storeu_ps(y + i * ys + 4 * quad, sum);
        }
      });
}

// ---- Q4_0_R16: sixteen rows per vector -------------------------------------------------------
// One 32-bit lane per weight row (repack.h): a block's four vectors j hold bytes 4j .. 4j + 3 of
// 16 rows, so an activation row's 4 bytes go against all of them as one broadcast dword, straight
// from memory (vpdpbusd's {1to16} operand), where the R4T kernels spend a vpshufd per vpdpbusd and
// activation row. The integer block dot products are exact, and per row the float steps are the
// R4T kernels' (acc_even/odd += (d_w * d_a) * dot block by block, y = acc_even + acc_odd), so the
// values are theirs bit for bit.

// acc + the byte dot products of w (unsigned) with the 4 signed bytes at p in every lane: one
// vpdpbusd with its {1to16} memory operand (gcc would load the broadcast by an instruction of its own)
static QC_VNNI inline __m512i dpbusd_bcast(__m512i acc, __m512i w, const int8_t* p) {
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(p)));
  return acc;
}

// acc[i] += the 16 rows' block (its four vectors at v, its scales at sc) with block k of activation
// row i's group (a: row 0's, the others arb bytes apart; off: row 0's neg_offsets of the group,
// the others off_row apart), i < A
template <int A, int k>
static QC_VNNI inline __attribute__((always_inline)) void band_block(const uint8_t* v, const uint8_t* sc,
                                                                     const uint8_t* a, size_t arb, const int32_t* off,
                                                                     size_t off_row, __m512* acc) {
  __m512i lo[4], hi[4];
  for (int j = 0; j < 4; ++j) unpack_nibbles(load512(v + 64 * j), &lo[j], &hi[j]);
  const __m512 dw = _mm512_cvtph_ps(load256(sc));
  each_row<A>([&](auto I) QC_VNNI __attribute__((always_inline)) {
    constexpr int i = I;  // a constant index, so that gcc keeps acc[] in registers
    const block_q8_0x4* ai = reinterpret_cast<const block_q8_0x4*>(a + i * arb);
    __m512i dl = _mm512_set1_epi32(off[i * off_row + 4 * k]), dh = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {
      dl = dpbusd_bcast(dl, lo[j], ai->lo + 16 * k + 4 * j);
      dh = dpbusd_bcast(dh, hi[j], ai->hi + 16 * k + 4 * j);
    }
    const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(ai->d[4 * k]));
    acc[i] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_add_epi32(dl, dh)), acc[i]);
  });
}

// y[i * ys + r], r < 16, i < A, for one band: its n / 64 tiles from t (blocks 2g, 2g + 1 in tile
// g; two tiles per activation group of 4 blocks, the last alone if n / 64 is odd), activation rows
// arb bytes apart, their neg_offsets n_groups * 16 apart from off.
template <int A>
static QC_VNNI void band_rows(const uint8_t* t, int64_t n, const uint8_t* a, size_t arb, const int32_t* off,
                              int64_t n_groups, float* y, size_t ys) {
  const size_t off_row = 16 * (size_t)n_groups;
  __m512 even[A], odd[A];  // per activation row: the even blocks' sums, the odd blocks'
  each_row<A>([&](auto i) QC_VNNI __attribute__((always_inline)) { even[i] = odd[i] = _mm512_setzero_ps(); });
  for (int64_t g = 0; g < n / 128; ++g, t += 2 * 576, a += sizeof(block_q8_0x4), off += 16) {
    band_block<A, 0>(t, t + 512, a, arb, off, off_row, even);
    band_block<A, 1>(t + 256, t + 544, a, arb, off, off_row, odd);
    prefetch_ahead<A>(t, 576);
    band_block<A, 2>(t + 576, t + 576 + 512, a, arb, off, off_row, even);
    band_block<A, 3>(t + 576 + 256, t + 576 + 544, a, arb, off, off_row, odd);
    prefetch_ahead<A>(t + 576, 576);
  }
  if (n % 128) {
    band_block<A, 0>(t, t + 512, a, arb, off, off_row, even);
    band_block<A, 1>(t + 256, t + 544, a, arb, off, off_row, odd);
  }
  each_row<A>([&](auto i) QC_VNNI __attribute__((always_inline)) {
    _mm512_storeu_ps(y + i * ys, _mm512_add_ps(even[i], odd[i]));
  });
}

// gemv_rows_fn of Q4_0_R16: per band, the activation rows kMaxA at a time (then the ones left)
static QC_VNNI void gemv_r16_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb,
                                  int n_a, float* y, size_t ys) {
  constexpr int kMaxA = 4;
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t n_groups = (n + 127) / 128;
  const int32_t* off = neg_offsets<0>(a, arb, n_a, n_groups);
  for (int band = 0; band < n_rows / 16; ++band) {
    const uint8_t* t = w + (size_t)band * 16 * wrb;
    a_passes<kMaxA>(n_a, [&](auto A, int i) {
      band_rows<A>(t, n, a + i * arb, arb, off + 16 * i * n_groups, n_groups, y + i * ys + 16 * band, ys);
    });
  }
}

// ---- Q4_1_R4T and Q5_1_R4T (Q8_1 activations) ------------------------------------------------
// The kept avx2 one-row gemv of these (avx2/gemv_32.cpp, rows_min) sums in min_dot.h's order: per
// segment of kMinDotSegment blocks, block b of the segment into accumulator j = b mod 4, p_j =
// fma(float(isum) * d_w, d_a, p_j) and m_j = fma(m_w, s_a, m_j), then y += ((p_0 + p_1) + (p_2 +
// p_3)) + ((m_0 + m_1) + (m_2 + m_3)). A step here is two 64-column tiles, blocks 4g .. 4g + 3 in
// the 128-bit lanes 0..3, which are accumulators 0..3 of rows 0..3: the same lanes, the same steps.

// One activation row's Q8_1 blocks regrouped per 4 (the last group's missing blocks zero): block k
// of the group in lane k of lo (its bytes 0..15) and hi (16..31), its d and s in d[4k ..], s[4k ..]
struct alignas(64) Q8_1x4 {
  int8_t lo[64], hi[64];
  float d[16], s[16];
};

// n_a rows (arb bytes apart, n / 32 blocks each) -> this thread's buffer, groups(n) per row
static int64_t groups(int64_t n) { return (n / 32 + 3) / 4; }
static const Q8_1x4* act_groups(int64_t n, const uint8_t* va, size_t arb, int n_a) {
  static thread_local std::vector<Q8_1x4> buf;  // grows to the largest call's rows, then stays
  const int64_t ng = groups(n), nb = n / 32;
  if (buf.size() < (size_t)(ng * n_a)) buf.resize((size_t)(ng * n_a));
  for (int i = 0; i < n_a; ++i) {
    const block_q8_1* a = reinterpret_cast<const block_q8_1*>(va + i * arb);
    Q8_1x4* g = buf.data() + i * ng;
    for (int64_t k = 0; k < 4 * ng; ++k) {
      Q8_1x4& o = g[k / 4];
      const int l = (int)(k % 4);
      const bool in = k < nb;
      const __m128i z = _mm_setzero_si128();
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o.lo + 16 * l), in ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[k].qs)) : z);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o.hi + 16 * l), in ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[k].qs + 16)) : z);
      _mm_storeu_ps(o.d + 4 * l, _mm_set1_ps(in ? h2f(a[k].d) : 0.0f));
      _mm_storeu_ps(o.s + 4 * l, _mm_set1_ps(in ? h2f(a[k].s) : 0.0f));
    }
  }
  return buf.data();
}

// A tile: the nibbles as one pair of Q4_0_R4T's (vector j at 32j), Q5_1's 5th-bit planes at 128,
// then [d | m] of its 8 (row, block) lanes at kDm (repack.h)
template <typename B>
struct MinR4T {
  static constexpr bool kQ5 = std::is_same_v<B, block_q5_1>;
  static constexpr size_t kTile = kQ5 ? 192 : 160, kDm = kQ5 ? 160 : 128;
  static inline void step(const uint8_t* t, bool two, __m512i* lo, __m512i* hi, __m512* dw, __m512* mw) {
    for (int j = 0; j < 4; ++j) unpack_nibbles(load_tiles2(t, kTile, 32 * j, two), &lo[j], &hi[j]);
    if constexpr (kQ5) or_fifth_bits(load_tiles2(t, kTile, 128, two), lo, hi);
    *dw = halves_tiles2(t, kTile, kDm, two);
    *mw = halves_tiles2(t, kTile, kDm + 16, two);
  }
};

// (l0 + l1) + (l2 + l3) of the 128-bit lanes l of v
static inline __m128 sum4_lanes(__m512 v) {
  return _mm_add_ps(_mm_add_ps(_mm512_castps512_ps128(v), _mm512_extractf32x4_ps(v, 1)),
                    _mm_add_ps(_mm512_extractf32x4_ps(v, 2), _mm512_extractf32x4_ps(v, 3)));
}

// y[i * ys + r], r < 4, i < A, for one quad (its tiles from t; n / 32 blocks, even) and the
// activation groups of A rows (ng apart)
template <typename B, int A>
static QC_VNNI void min_quad_rows(const uint8_t* t, int64_t n, const Q8_1x4* g, int64_t ng, float* y, size_t ys) {
  typedef MinR4T<B> L;
  const int64_t nb = n / 32;
  __m128 total[A];
  for (int i = 0; i < A; ++i) total[i] = _mm_setzero_ps();
  for (int64_t s0 = 0; s0 < nb; s0 += x86::kMinDotSegment) {
    const int64_t s1 = s0 + x86::kMinDotSegment < nb ? s0 + x86::kMinDotSegment : nb;
    __m512 P[A], M[A];
    for (int i = 0; i < A; ++i) P[i] = M[i] = _mm512_setzero_ps();
    for (int64_t k = s0; k < s1; k += 4, t += 2 * L::kTile) {
      const bool two = k + 4 <= s1;  // else the segment's last 2 blocks: accumulators 0, 1 alone
      const __mmask16 lanes = two ? 0xffff : 0x00ff;
      __m512i lo[4], hi[4];
      __m512 dw, mw;
      L::step(t, two, lo, hi, &dw, &mw);
      for (int i = 0; i < A; ++i) {
        const Q8_1x4& a = g[i * ng + k / 4];
        const __m512i dot = byte_dots(lo, hi, load512(a.lo), load512(a.hi), _mm512_setzero_si512());
        const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), dw);
        P[i] = _mm512_mask3_fmadd_ps(p, _mm512_loadu_ps(a.d), P[i], lanes);
        M[i] = _mm512_mask3_fmadd_ps(mw, _mm512_loadu_ps(a.s), M[i], lanes);
      }
      prefetch_ahead<A>(t, 2 * L::kTile);
    }
    for (int i = 0; i < A; ++i) total[i] = _mm_add_ps(total[i], _mm_add_ps(sum4_lanes(P[i]), sum4_lanes(M[i])));
  }
  for (int i = 0; i < A; ++i) _mm_storeu_ps(y + i * ys, total[i]);
}

template <typename B>
static QC_VNNI void gemv_min_t_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb,
                                    int n_a, float* y, size_t ys) {
  static_assert(x86::kMinDotSegment % 4 == 0, "segments of whole steps but the last");
  constexpr int kMaxA = 4;
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const int64_t ng = groups(n);
  const Q8_1x4* g = act_groups(n, static_cast<const uint8_t*>(va), arb, n_a);
  for (int quad = 0; quad < n_rows / 4; ++quad) {
    const uint8_t* t = w + (size_t)quad * 4 * wrb;
    a_passes<kMaxA>(n_a, [&](auto A, int i) { min_quad_rows<B, A>(t, n, g + i * ng, ng, y + i * ys + 4 * quad, ys); });
  }
}

}  // namespace

// The exported kernels of a layout: its gemv (one activation row: the same passes) and gemv_rows
#define QC_LAYOUT_DECODE(t, impl)                                                                   \
  void gemv_##t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {         \
    impl(n, w, wrb, n_rows, a, 0, 1, y, 0);                                                         \
  }                                                                                                 \
  void gemv_##t##_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, \
                       int n_a, float* y, size_t ys) {                                              \
    impl(n, w, wrb, n_rows, a, arb, n_a, y, ys);                                                    \
  }
QC_LAYOUT_DECODE(q5_0_r4t, gemv_t_rows<Q5_0R4T>)
QC_LAYOUT_DECODE(q8_0_r4t, gemv_t_rows<Q8_0R4T>)
QC_LAYOUT_DECODE(q4_1_r4t, gemv_min_t_rows<block_q4_1>)
QC_LAYOUT_DECODE(q5_1_r4t, gemv_min_t_rows<block_q5_1>)
QC_LAYOUT_DECODE(q4_0_r16, gemv_r16_rows)
#undef QC_LAYOUT_DECODE

}  // namespace avx512
}  // namespace qc
