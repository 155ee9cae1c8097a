// Matrix-matrix (prefill) tiles of the quantized weight types, as templates over an integer
// dot-product policy: the AVX2 translation units (csrc/avx2/gemm.cpp: maddubs + madd) instantiate
// the 8-row tiles; the AVX-512 VNNI ones (csrc/avx512/gemm.cpp, gemm_k.cpp) widen them to 16 rows
// with the same weight policies, repacking and per-row arithmetic.
// Only included by translation units compiled with at least -mavx2 -mfma -mf16c; the includer
// defines QC_GEMM_ATTR (empty, or a target attribute that its policy's functions need) first.
//
// Why: vec_dot unpacks a weight block (nibbles -> bytes, f16 -> float, packed 6-bit scales ->
// words) for one activation row and ends with a horizontal sum. gemm_x8 / gemm_kx8 repack 8
// weight rows (unpacked, transposed) once per segment of blocks into one int32 lane per row and
// reuse them for every token; per token and 4 values one broadcast and one dot instruction serve
// 8 outputs, and the conversion, scale and FMA are shared by the 8 rows. No horizontal sums
// (2-3x faster than R x C tiles of per-row products: bench/README.md, "Kernel design measurements").
// The gemm_* functions are gemm_fn (kernels.h).
#pragma once
#include <cstring>

#include "../act_q8_x8.h"
#include "../repack.h"
#include "../scalar/quants.h"  // unpack_q4_K_scales
#include "min_dot.h"
#include "simd256.h"

#ifndef QC_GEMM_ATTR
#error "define QC_GEMM_ATTR before including gemm_impl.h"
#endif

namespace qc {
namespace gemm {
// Everything here is internal to each includer: the AVX2 and the AVX-512 translation units compile
// these with different flags, and the linker must not pick one copy for both.
namespace {

// ---- 32-element block types against Q8_0 / Q8_1 activations ---------------------------------

// Weight policies: q(block) gives 32 bytes in element order; kOff: unsigned bytes whose value is
// q - kOff (the kOff * a part is taken out once per activation block); kMin: the type's value
// has a + m term, paired with the activation's s = d * sum(a).
struct Q4_0W {
  typedef block_q4_0 B;
  typedef block_q8_0 A;
  static constexpr int kOff = 8;
  static constexpr bool kMin = false;
  static constexpr int kMaxAbs = 8;  // |q - kOff| at most
  static inline __m256i q(const B& b) { return x86::unpack_nibbles_32(b.qs); }
};
struct Q4_1W {
  typedef block_q4_1 B;
  typedef block_q8_1 A;
  static constexpr int kOff = 0;
  static constexpr bool kMin = true;
  static constexpr int kMaxAbs = 15;  // |q - kOff| at most
  static inline __m256i q(const B& b) { return x86::unpack_nibbles_32(b.qs); }
};
struct Q5_0W {
  typedef block_q5_0 B;
  typedef block_q8_0 A;
  static constexpr int kOff = 16;
  static constexpr bool kMin = false;
  static constexpr int kMaxAbs = 16;  // |q - kOff| at most
  static inline __m256i q(const B& b) {
    const __m256i hi = _mm256_and_si256(x86::bits_to_bytes_32(b.qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(x86::unpack_nibbles_32(b.qs), hi);  // 0..31
  }
};
struct Q5_1W {
  typedef block_q5_1 B;
  typedef block_q8_1 A;
  static constexpr int kOff = 0;
  static constexpr bool kMin = true;
  static constexpr int kMaxAbs = 31;  // |q - kOff| at most
  static inline __m256i q(const B& b) {
    const __m256i hi = _mm256_and_si256(x86::bits_to_bytes_32(b.qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(x86::unpack_nibbles_32(b.qs), hi);
  }
};
struct Q8_0W {
  typedef block_q8_0 B;
  typedef block_q8_0 A;
  static constexpr int kOff = 0;
  static constexpr bool kMin = false;
  static constexpr int kMaxAbs = 128;  // |q - kOff| at most
  static inline __m256i q(const B& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
};

template <typename T>
static inline const T& block_at(const uint8_t* row, int64_t i) {
  return reinterpret_cast<const T*>(row)[i];
}

// ---- 32-element block types: 8 weight rows interleaved, one int32 lane per row ---------------
//
// The R x C tile above spends, per (row, token, block), one dot instruction and then a
// conversion, a scale product and an FMA on a vector whose 8 lanes are partial sums of the same
// output. Here the 8 lanes are 8 weight rows instead: a tile of 8 rows is repacked once per
// segment of blocks (unpacked to signed bytes v = q - offset, transposed so that vector g of a
// block holds bytes 4g..4g+3 of each of the 8 rows) and then reused by every token: per
// (token, block) 8 vpdpbusd against the token's bytes 4g..4g+3 broadcast, then one conversion
// and FMA for all 8 rows (AVX2: vpmaddubsw of two groups added in int16, vpmaddwd; VNNI:
// vpdpbusd). The byte products want an unsigned side: the activations come as a + 128 in the
// Q8_X8 layout (act_q8_x8.h, quantized once per token) and the 128 * sum(v) of each row and
// block, computed at the repack, starts the sum. Exact in int32: 32 * 255 * 128 < 2^31. Inside
// D::dot2 with AVX2: 4 products of two groups, each <= 255 * 31, add up below 2^15.

// The 4 bytes at p (4-byte aligned) in every int32 lane: vbroadcastss from memory, a load with no
// shuffle (a 32-bit integer load and vpbroadcastd from a register would take two more operations).
static inline __m256i bcast4(const void* p) {
  return _mm256_castps_si256(_mm256_broadcast_ss(static_cast<const float*>(p)));
}

// x[0..7] (8 rows of 8 dwords) -> x[g] = dword g of every row, row r in lane r.
static inline void transpose_8x8_epi32(__m256i x[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0..3, rows 4..7
    u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]);  // dwords 0 (and 4)
    u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]);  // 1 (5)
    u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);  // 2 (6)
    u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);  // 3 (7)
  }
  for (int g = 0; g < 4; ++g) {
    x[g] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x20);
    x[g + 4] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x31);
  }
}

// Block b of 8 rows (wrb bytes apart from w; rows from nr on read as zeros) as gemm_x8 repacks
// them: v[r] = row r's values q - kOff, before the transpose; dw[r], mw[r] its scale and min.
template <typename W>
QC_GEMM_ATTR static inline void load_block_x8(const uint8_t* w, size_t wrb, int nr, int64_t b, __m256i v[8], float* dw,
                                              float* mw) {
  typedef typename W::B B;
  for (int r = 0; r < 8; ++r) {
    if (r < nr) {
      const B& blk = reinterpret_cast<const B*>(w + r * wrb)[b];
      v[r] = _mm256_sub_epi8(W::q(blk), _mm256_set1_epi8(W::kOff));
      dw[r] = x86::h2f(blk.d);
      if constexpr (W::kMin) mw[r] = x86::h2f(blk.m);
    } else {
      v[r] = _mm256_setzero_si256();
      dw[r] = 0.0f;
      mw[r] = 0.0f;
    }
  }
}

// The float sums of the min types over a segment of ns blocks, for kC tokens and R rows, in
// min_dot.h's order (block b into accumulator b % 4, as their decode rows (vec_dot) sum too, so
// that a token's outputs do not depend on which kind of step computed it): acc[c] for token c
// from its exact block dots isums[c][b][r] and its blocks a[c][b]. One accumulator j of every
// token at a time (blocks j, j + 4, ..), so that a block's dw and mw are loaded once for the kC
// tokens (bench/README.md, "The min types' float sums, a block's scales once"). V: a vector of R
// floats (MinDot8 below, gemm_x8; MinDot16 in csrc/avx512/gemm.cpp, gemm_x16).
template <class V, int R, int kC, int kSeg>
QC_GEMM_ATTR static inline void min_dot_tokens(const int32_t (&isums)[kC][kSeg][R], const float (&dw)[kSeg][R],
                                               const float (&mw)[kSeg][R], const block_q8_x8* const (&a)[kC], int ns,
                                               typename V::T (&acc)[kC]) {
  typedef typename V::T T;
  T p[4][kC], m[4][kC];  // [accumulator j][token]
  for (int j = 0; j < 4; ++j) {
    T pj[kC], mj[kC];  // in registers: the loop below indexes them with constants only
    for (int c = 0; c < kC; ++c) pj[c] = mj[c] = V::zero();
    for (int b = j; b < ns; b += 4) {
      const T dwv = V::load(dw[b]), mwv = V::load(mw[b]);
      for (int c = 0; c < kC; ++c) {  // the product float(isum) * dw rounded before the fma, as vec_dot does
        pj[c] = V::fma(V::mul(V::cvt(isums[c][b]), dwv), V::set1(a[c][b].d), pj[c]);
        mj[c] = V::fma(mwv, V::set1(a[c][b].s), mj[c]);
      }
    }
    for (int c = 0; c < kC; ++c) p[j][c] = pj[c], m[j][c] = mj[c];
  }
  for (int c = 0; c < kC; ++c)
    acc[c] = V::add(V::add(V::add(p[0][c], p[1][c]), V::add(p[2][c], p[3][c])),
                    V::add(V::add(m[0][c], m[1][c]), V::add(m[2][c], m[3][c])));
}

// min_dot_tokens' vector of 8 rows in 256 bits
struct MinDot8 {
  typedef __m256 T;
  static inline T zero() { return _mm256_setzero_ps(); }
  static inline T add(T x, T y) { return _mm256_add_ps(x, y); }
  static inline T mul(T x, T y) { return _mm256_mul_ps(x, y); }
  static inline T fma(T x, T y, T z) { return _mm256_fmadd_ps(x, y, z); }
  static inline T set1(float x) { return _mm256_set1_ps(x); }
  static inline T load(const float* x) { return _mm256_load_ps(x); }
  static inline T cvt(const int32_t* x) { return _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(x))); }
};

}  // namespace
}  // namespace gemm
}  // namespace qc

#include "layout_rows.h"  // the repacked layouts' rows as gemm_x8_rows takes them

namespace qc {
namespace gemm {
namespace {

// The gemm_fn (kernels.h) of a 32-element block type W whose values v = q - kOff fit D::dot2
// (see the policies: all of them with VNNI; with AVX2 the types with |v| <= 31), over Q8_X8
// activations (register it with gemm_act = QC_ACT_Q8_X8). Rows8: where the weights come from,
// rows8(r0, nr, b, v, dw, mw): v[g] values 4g .. 4g + 3 of block b of rows r0 .. r0 + 7 (row r in
// lane r, zeros from row nr on), dw[r] and mw[r] their scales and mins (gemm_x8 below: stored rows).
template <typename W, typename D, class Rows8>
QC_GEMM_ATTR static void gemm_x8_rows(int64_t n, int n_w, const void* va, size_t arb, int n_a, float* y, size_t ys,
                                      Rows8&& rows8) {
  constexpr int kSeg = 32;  // blocks per segment: the repacked rows (8 KB) and kC tokens (5-10 KB) stay in L1
  static_assert(!W::kMin || kSeg == x86::kMinDotSegment, "the min types sum per segment as their vec_dot does");
  constexpr int kC = D::kTokens;  // tokens per pass over a repacked block (one weight load for kC dot products)
  constexpr int kG = D::groups(W::kMaxAbs);  // groups of 4 values per D::dotn
  alignas(32) int8_t wq[kSeg][8][32];    // [block][group g][row r: bytes 4g..4g+3 of row r]
  alignas(32) float dw[kSeg][8];         // [block][row] weight scales (0 for rows past n_w)
  alignas(32) float mw[kSeg][8];         // [block][row] weight mins (kMin types)
  alignas(32) int32_t ncorr[kSeg][8];    // [block][row] -128 * sum(v)
  alignas(32) int32_t isums[W::kMin ? D::kTokens : 1][W::kMin ? kSeg : 1][8];  // kMin: [token][block][row] exact dots
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t nb = n / 32;
  const __m256i ones = _mm256_set1_epi8(1);
  for (int r0 = 0; r0 < n_w; r0 += 8) {
    const int nr = n_w - r0 < 8 ? n_w - r0 : 8;
    for (int64_t s0 = 0; s0 < nb; s0 += kSeg) {
      const int ns = nb - s0 < kSeg ? (int)(nb - s0) : kSeg;
      for (int b = 0; b < ns; ++b) {  // repack the 8 rows' blocks s0 .. s0 + ns - 1
        __m256i v[8];
        rows8(r0, nr, s0 + b, v, dw[b], mw[b]);
        __m256i sum = _mm256_setzero_si256();
        for (int g = 0; g < 8; g += 2) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(wq[b][g]), v[g]);
          _mm256_store_si256(reinterpret_cast<__m256i*>(wq[b][g + 1]), v[g + 1]);
          sum = D::dot2(sum, ones, v[g], ones, v[g + 1]);
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(ncorr[b]), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)));
      }
      for (int c0 = 0; c0 < n_a; c0 += kC) {
        const int nc = n_a - c0 < kC ? n_a - c0 : kC;
        const block_q8_x8* ab[kC];  // the tokens' blocks s0 ..
        for (int c = 0; c < kC; ++c)  // tokens past n_a in the last pass read token c0's (never stored)
          ab[c] = reinterpret_cast<const block_q8_x8*>(a + (c0 + (c < nc ? c : 0)) * arb) + s0;
        __m256 acc[kC];
        for (int c = 0; c < kC; ++c) acc[c] = _mm256_setzero_ps();
        for (int b = 0; b < ns; ++b) {
          // two independent sums per token (alternate runs of kG groups): a chain of dependent
          // vpdpbusd (latency 4-5 cycles) would leave the dot units idle
          __m256i isum[kC], isum2[kC];
          const __m256i init = _mm256_load_si256(reinterpret_cast<const __m256i*>(ncorr[b]));
          for (int c = 0; c < kC; ++c) {
            isum[c] = init;
            isum2[c] = _mm256_setzero_si256();
          }
          for (int g = 0; g < 8; g += kG) {
            __m256i w[kG];
            for (int i = 0; i < kG; ++i) w[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq[b][g + i]));
            for (int c = 0; c < kC; ++c) {
              __m256i& sum = (g / kG) % 2 ? isum2[c] : isum[c];
              sum = D::template dotn<kG>(sum, ab[c][b].u + 4 * g, w);
            }
          }
          for (int c = 0; c < kC; ++c) isum[c] = _mm256_add_epi32(isum[c], isum2[c]);
          if constexpr (W::kMin) {  // the float sums after the segment, in min_dot.h's order
            for (int c = 0; c < kC; ++c) _mm256_store_si256(reinterpret_cast<__m256i*>(isums[c][b]), isum[c]);
            continue;
          }
          const __m256 dwv = _mm256_load_ps(dw[b]);
          for (int c = 0; c < kC; ++c)
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[c]), dwv), _mm256_set1_ps(ab[c][b].d), acc[c]);
        }
        if constexpr (W::kMin) min_dot_tokens<MinDot8>(isums, dw, mw, ab, ns, acc);  // Q4_1, Q5_1 (min_dot.h)
        for (int c = 0; c < nc; ++c) {  // this segment's part of the 8 outputs of token c0 + c
          alignas(32) float part[8];
          _mm256_store_ps(part, acc[c]);
          float* yc = y + (c0 + c) * ys + r0;
          for (int r = 0; r < nr; ++r) yc[r] = (s0 == 0 ? 0.0f : yc[r]) + part[r];
        }
      }
    }
  }
}

// The stored rows, wrb bytes apart
template <typename W, typename D>
QC_GEMM_ATTR static void gemm_x8(int64_t n, const void* vw, size_t wrb, int n_w, const void* va, size_t arb, int n_a, float* y,
                                 size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  gemm_x8_rows<W, D>(n, n_w, va, arb, n_a, y, ys, [&](int r0, int nr, int64_t b, __m256i v[8], float* dw, float* mw) {
    load_block_x8<W>(w + r0 * wrb, wrb, nr, b, v, dw, mw);
    transpose_8x8_epi32(v);
  });
}

// ---- K-quants against Q8_K activations -------------------------------------------------------

// Weight policies for the 256-element super-blocks. prepare(block, &u) decodes the packed scales
// of one super-block once; chunk(block, u, k) gives the 32 unsigned bytes of values 32k..32k+31
// (and their int16 scales: low 128-bit lane: scale of values 32k..32k+15, high lane: of
// 32k+16..32k+31; u.offs holds 16 int16 weights that pair with the activation's 16 bsums --
// the form of a per-row kernel; gemm_kx8 below takes only the value bytes and its own float
// sub-block terms).
struct KUnpacked {
  __m256i sc;    // the scales as int16 words (duplicated into both lanes; type specific order)
  __m256i offs;  // 16 int16 weights of the bsums
  float d, dmin;
};

// Q4_K: 8 sub-blocks of 32 values (low nibbles of 32 bytes, then their high nibbles), 6-bit scales
// and mins; value = d * sc * q - dmin * m.
template <typename B>
static inline void prepare_k4(const B& b, KUnpacked* u) {
    // mins duplicated per 16-value half of each 32-value sub-block, to pair them with bsums
    const __m128i dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    const __m128i sm = x86::k4_scales_mins(b.scales);
    u->offs = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, dup_mins));
    u->sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    u->d = x86::h2f(b.d);
    u->dmin = x86::h2f(b.dmin);
}
struct Q4_KW {
  typedef block_q4_K B;
  static inline void prepare(const B& b, KUnpacked* u) { prepare_k4(b, u); }
  static inline __m256i chunk(const B& b, const KUnpacked& u, int k, __m256i* sc) {
    // word k of the scales over all 16 words (one sub-block per chunk)
    *sc = _mm256_shuffle_epi8(u.sc, _mm256_set1_epi16((short)(2 * k | (2 * k + 1) << 8)));
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * (k / 2)));
    return _mm256_and_si256(k % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0f));
  }
};

// Q5_K: Q4_K plus a 5th bit per value: bit k of qh[l] for value 32k + l.
struct Q5_KW {
  typedef block_q5_K B;
  static inline void prepare(const B& b, KUnpacked* u) { prepare_k4(b, u); }
  static inline __m256i chunk(const B& b, const KUnpacked& u, int k, __m256i* sc) {
    *sc = _mm256_shuffle_epi8(u.sc, _mm256_set1_epi16((short)(2 * k | (2 * k + 1) << 8)));
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * (k / 2)));
    const __m256i lo = _mm256_and_si256(k % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0f));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh));
    const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qh, k), _mm256_set1_epi8(1));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hb, 4));
  }
};

// Q6_K: 16 sub-blocks of 16, int8 scales; value = d * sc * (u - 32) with u = 4 low bits (ql) +
// 2 high bits (qh). Half h (values 128h..128h+127): ql bytes 64h..64h+31 hold values +0..31 (low
// nibble) and +64..95 (high), bytes 64h+32..64h+63 hold +32..63 and +96..127; qh byte 32h + l
// holds the high bits of +l, +l+32, +l+64, +l+96 at bits 0-1, 2-3, 4-5, 6-7. The -32 goes to offs.
struct Q6_KW {
  typedef block_q6_K B;
  static inline void prepare(const B& b, KUnpacked* u) {
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    u->offs = _mm256_cvtepi8_epi16(sc8);
    u->sc = u->offs;  // word j = scale of sub-block j (not duplicated: chunk picks lanes itself)
    u->d = x86::h2f(b.d);
    u->dmin = 32.0f * u->d;
  }
  static inline __m256i chunk(const B& b, const KUnpacked& u, int k, __m256i* sc) {
    // chunk k covers sub-blocks 2k (low lane) and 2k + 1 (high lane)
    const __m128i s2 = k < 4 ? _mm256_castsi256_si128(u.sc) : _mm256_extracti128_si256(u.sc, 1);
    const int j = 2 * (k % 4);
    const __m256i dup = _mm256_broadcastsi128_si256(s2);
    *sc = _mm256_shuffle_epi8(dup, _mm256_setr_epi8(2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j,
                                                    2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1,
                                                    2 * j, 2 * j + 1, 2 * j + 2, 2 * j + 3, 2 * j + 2, 2 * j + 3,
                                                    2 * j + 2, 2 * j + 3, 2 * j + 2, 2 * j + 3, 2 * j + 2, 2 * j + 3,
                                                    2 * j + 2, 2 * j + 3, 2 * j + 2, 2 * j + 3, 2 * j + 2, 2 * j + 3));
    const int h = k / 4, m = k % 4;  // chunk m of half h: values 128h + 32m ..
    const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h + 32 * (m % 2)));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
    const __m256i lo = _mm256_and_si256(m >= 2 ? _mm256_srli_epi16(ql, 4) : ql, _mm256_set1_epi8(0x0f));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * m), _mm256_set1_epi8(0x03));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));  // 0..63
  }
};

// ---- K-quants: 8 weight rows interleaved --------------------------------------------------
//
// gemm_x8's layout for the super-block types: a tile of 8 rows is repacked once per segment of
// super-blocks (the unsigned value bytes of chunk() transposed to one int32 lane per row, the
// sub-block scale and min terms as floats per row), then every token takes per 4 values one
// broadcast of its activation bytes and one dot instruction for all 8 rows. Per sub-block j
// (32 values for Q4_K/Q5_K, 16 for Q6_K) of a super-block:
//   sum_j fs_j * dot(q_j, a_j) - fm_j * S_j,  fs_j = d * scale_j,
// with S_j the activation sum over the sub-block (from bsums) and fm_j = dmin * min_j (Q4_K,
// Q5_K) or 32 * d * scale_j (Q6_K, whose values are u - 32). The integer sub-block dots are
// exact (<= 32 * 63 * 127); the sub-block terms are summed in float (8 or 16 per super-block).
// Inside D::dot2 with AVX2: 4 products u * a <= 63 * 127 add up below 2^15.
template <typename W>
struct KSub;  // kSub: values per sub-block; terms(block, fs, fm): the 256 / kSub float pairs;
              // kIntOffset: a constant offset of the values (then fm = kIntOffset * fs)
template <>
struct KSub<Q4_KW> {
  static constexpr int kSub = 32, kIntOffset = 0;
  template <class B>  // block_q4_K or block_q5_K (same d, dmin and scales fields)
  static inline void terms(const B& b, float* fs, float* fm) {
    uint8_t sc[8], mn[8];
    unpack_q4_K_scales(b.scales, sc, mn);
    const float d = x86::h2f(b.d), dmin = x86::h2f(b.dmin);
    for (int j = 0; j < 8; ++j) {
      fs[j] = d * sc[j];
      fm[j] = dmin * mn[j];
    }
  }
};
template <>
struct KSub<Q5_KW> : KSub<Q4_KW> {};  // Q5_K stores d, dmin and the 6-bit scales/mins as Q4_K does
template <>
struct KSub<Q6_KW> {
  // the -32 of every value is taken out in the integer sum (it starts at -32 * S_j), so fm is unused
  static constexpr int kSub = 16, kIntOffset = 32;
  static inline void terms(const block_q6_K& b, float* fs, float* fm) {
    const float d = x86::h2f(b.d);
    for (int j = 0; j < 16; ++j) {
      fs[j] = d * b.scales[j];
      fm[j] = 32.0f * fs[j];
    }
  }
};

// The activation side of a K-quant tile's pass over kC tokens and a segment of kSeg super-blocks:
// each token's Q8_K blocks, their scales d and sub-block sums S_j (float for Q4_K/Q5_K, or
// -kIntOffset * S_j to start Q6_K's integer sums: each type fills only the one it reads). Tokens
// past n_a point at token c0 (valid memory) and keep finite sums from before; their outputs are
// never stored.
template <typename W, int kC, int kSeg>
struct KTokens {
  static constexpr int kSub = KSub<W>::kSub, kNSub = QK_K / kSub;
  const block_q8_K* ab[kC];
  alignas(64) float sj[kC][kSeg][kNSub];     // [token][block][sub-block]
  alignas(64) int32_t sjo[kC][kSeg][kNSub];  // -kIntOffset * S_j
  alignas(64) float da[kC][kSeg];
  KTokens() {
    std::memset(sj, 0, sizeof(sj));
    std::memset(sjo, 0, sizeof(sjo));
    std::memset(da, 0, sizeof(da));
  }
  // tokens c0 .. c0 + nc - 1 of a (rows of arb bytes), super-blocks s0 .. s0 + ns - 1
  QC_GEMM_ATTR inline void load(const uint8_t* a, size_t arb, int c0, int nc, int64_t s0, int ns) {
    for (int c = 0; c < kC; ++c) {
      ab[c] = reinterpret_cast<const block_q8_K*>(a + (c0 + (c < nc ? c : 0)) * arb) + s0;
      if (c >= nc) continue;
      for (int b = 0; b < ns; ++b) {
        da[c][b] = ab[c][b].d;
        // the 16 bsums as int32: sub-block sums S_j (kSub 16) or pairs of them added (kSub 32)
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab[c][b].bsums));
        if constexpr (KSub<W>::kIntOffset) {  // only the integer offsets are read (kSub 16)
          static_assert(kSub == 16, "an integer offset per 16-value sub-block");
          const __m256i off = _mm256_set1_epi32(-KSub<W>::kIntOffset);
          _mm256_store_si256(reinterpret_cast<__m256i*>(sjo[c][b]),
                             _mm256_mullo_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(bs)), off));
          _mm256_store_si256(reinterpret_cast<__m256i*>(sjo[c][b] + 8),
                             _mm256_mullo_epi32(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(bs, 1)), off));
        } else {  // only the float sums (kSub 32)
          static_assert(kSub == 32, "float sums per 32-value sub-block");
          _mm256_store_ps(sj[c][b], _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, _mm256_set1_epi16(1))));
        }
      }
    }
  }
};

// The gemm_fn (kernels.h) of a K-quant W (Q4_KW, Q5_KW, Q6_KW) with 8 interleaved rows. Blocks:
// where the rows' super-blocks come from (StoredBlocks, or a layout's: layout_rows.h).
template <typename W, typename D, class Blocks>
QC_GEMM_ATTR static void gemm_kx8_rows(int64_t n, int n_w, const void* va, size_t arb, int n_a, float* y, size_t ys,
                                       const Blocks& block) {
  typedef typename W::B B;
  constexpr int kSub = KSub<W>::kSub, kNSub = QK_K / kSub, kGroups = kSub / 4;
  constexpr int kSeg = 2;  // super-blocks per segment: 16 KB of repacked values stay in L1
  constexpr int kC = 4;  // tokens per pass over a repacked super-block (8 measured slower with VNNI)
  alignas(32) uint8_t wq[kSeg][8][8][32];  // [block][chunk k][group g][row r: values 32k+4g..+3 of row r]
  alignas(32) float fs[kSeg][kNSub][8];    // [block][sub-block][row]
  alignas(32) float fm[kSeg][kNSub][8];
  KTokens<W, kC, kSeg> t;
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t nb = n / QK_K;
  for (int r0 = 0; r0 < n_w; r0 += 8) {
    const int nr = n_w - r0 < 8 ? n_w - r0 : 8;
    for (int64_t s0 = 0; s0 < nb; s0 += kSeg) {
      const int ns = nb - s0 < kSeg ? (int)(nb - s0) : kSeg;
      for (int b = 0; b < ns; ++b) {
        float rs[8][kNSub], rm[8][kNSub];
        KUnpacked u[8];
        const B* blk[8];
        B copies[8];
        for (int r = 0; r < 8; ++r) {
          if (r < nr) {
            blk[r] = block(r0 + r, s0 + b, &copies[r]);
            KSub<W>::terms(*blk[r], rs[r], rm[r]);
            W::prepare(*blk[r], &u[r]);
          } else {
            blk[r] = nullptr;
            for (int j = 0; j < kNSub; ++j) rs[r][j] = rm[r][j] = 0.0f;
          }
        }
        for (int j = 0; j < kNSub; ++j)
          for (int r = 0; r < 8; ++r) {
            fs[b][j][r] = rs[r][j];
            fm[b][j][r] = rm[r][j];
          }
        for (int k = 0; k < 8; ++k) {
          __m256i v[8];
          for (int r = 0; r < 8; ++r) {
            __m256i sc;
            v[r] = blk[r] ? W::chunk(*blk[r], u[r], k, &sc) : _mm256_setzero_si256();
          }
          transpose_8x8_epi32(v);
          for (int g = 0; g < 8; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(wq[b][k][g]), v[g]);
        }
      }
      for (int c0 = 0; c0 < n_a; c0 += kC) {
        const int nc = n_a - c0 < kC ? n_a - c0 : kC;
        t.load(a, arb, c0, nc, s0, ns);
        __m256 acc[kC];
        for (int c = 0; c < kC; ++c) acc[c] = _mm256_setzero_ps();
        for (int b = 0; b < ns; ++b) {
          __m256 accb[kC];
          for (int c = 0; c < kC; ++c) accb[c] = _mm256_setzero_ps();
          for (int j = 0; j < kNSub; ++j) {
            // two independent sums per token, as in gemm_x8
            __m256i isum[kC], isum2[kC];
            for (int c = 0; c < kC; ++c) {
              isum[c] = KSub<W>::kIntOffset ? _mm256_set1_epi32(t.sjo[c][b][j]) : _mm256_setzero_si256();
              isum2[c] = _mm256_setzero_si256();
            }
            for (int g0 = 0; g0 < kGroups; g0 += 2) {
              const int e = j * kSub + 4 * g0;  // first value of the two groups
              const uint8_t* wp = wq[b][0][0] + 8 * e;  // wq[b][e / 32][(e % 32) / 4], no index arithmetic
              const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wp));
              const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wp + 32));
              for (int c = 0; c < kC; ++c) {
                __m256i& sum = g0 % 4 ? isum2[c] : isum[c];
                sum = D::dot2(sum, w0, bcast4(t.ab[c][b].qs + e), w1, bcast4(t.ab[c][b].qs + e + 4));
              }
            }
            for (int c = 0; c < kC; ++c) isum[c] = _mm256_add_epi32(isum[c], isum2[c]);
            const __m256 fsv = _mm256_load_ps(fs[b][j]), fmv = _mm256_load_ps(fm[b][j]);
            (void)fmv;
            for (int c = 0; c < kC; ++c) {
              accb[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), fsv, accb[c]);
              if constexpr (!KSub<W>::kIntOffset) accb[c] = _mm256_fnmadd_ps(fmv, _mm256_set1_ps(t.sj[c][b][j]), accb[c]);
            }
          }
          for (int c = 0; c < kC; ++c) acc[c] = _mm256_fmadd_ps(accb[c], _mm256_set1_ps(t.da[c][b]), acc[c]);
        }
        for (int c = 0; c < nc; ++c) {
          alignas(32) float part[8];
          _mm256_store_ps(part, acc[c]);
          float* yc = y + (c0 + c) * ys + r0;
          for (int r = 0; r < nr; ++r) yc[r] = (s0 == 0 ? 0.0f : yc[r]) + part[r];
        }
      }
    }
  }
}

// The stored rows, wrb bytes apart
template <typename W, typename D>
QC_GEMM_ATTR static void gemm_kx8(int64_t n, const void* vw, size_t wrb, int n_w, const void* va, size_t arb,
                                  int n_a, float* y, size_t ys) {
  gemm_kx8_rows<W, D>(n, n_w, va, arb, n_a, y, ys, StoredBlocks<typename W::B>{static_cast<const uint8_t*>(vw), wrb});
}

}  // namespace
}  // namespace gemm
}  // namespace qc
