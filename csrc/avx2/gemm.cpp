// AVX2 matrix-matrix kernels (WeightKernels::gemm) of the quantized weight types: the templates of
// gemm_impl.h with the integer dot products of this compilation (simd.h): vpmaddubsw + vpmaddwd
// (avx2), or vpdpbusd (avxvnni, avxvnni_evex).
//
// AVX2: most types use the 8-interleaved-rows kernels (gemm_x8, gemm_kx8). Q8_0 cannot (its byte
// products with a + 128 overflow vpmaddubsw's int16 pairs) and has its own 16-row kernel that
// multiplies in int16 (gemm_q8_0_wide); the K-quants have one of 16 rows that applies their
// sub-block scales in the integer sums (gemm_k_int). The 8-row kernels ran 1.6-3x the speed of R x C
// tiles of one vec_dot-like product per row and token (bench/README.md, "Kernel design measurements").
// VNNI: vpdpbusd sums 4 byte products into int32 with no int16 stage, so every type, Q8_0
// included, takes the 8-row kernels (as csrc/avx512/gemm.cpp does, but with 4 tokens per pass:
// the VEX encoding names only 16 ymm registers).
#define QC_GEMM_ATTR
#include "simd.h"
#include "../x86/gemm_impl.h"

namespace qc {
namespace QC_AVX2_NS {
namespace {

#ifndef QC_DOT_VNNI
struct Dot {
  // tokens per pass of gemm_x8 over a repacked block: 4 int32 sums, 4 float accumulators and 2-4
  // weight vectors within the 16 ymm registers
  static constexpr int kTokens = 4;
  // acc + u0 * s0 + u1 * s1 summed by 4 into the int32 lanes; the int16 sums of the two
  // vpmaddubsw must stay below 2^15: callers have u <= 255, |s| <= 31 (4 * 255 * 31 < 2^15)
  static inline __m256i dot2(__m256i acc, __m256i u0, __m256i s0, __m256i u1, __m256i s1) {
    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(u0, s0), _mm256_maddubs_epi16(u1, s1));
    __m256i r = _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    keep_order(r);
    return r;
  }
  // gemm_x8's groups of 4 values per vpmaddwd: 4 where one int16 sum holds their 8 products of
  // u <= 255 and |s| <= max_abs (Q4_0, Q4_1, Q5_0; Q5_1 keeps 2): a quarter fewer multiply-pipe
  // operations (bench/README.md, "The AVX2 K-quant tile, 16 rows")
  static constexpr int groups(int max_abs) { return 8 * 255 * max_abs < 32768 ? 4 : 2; }
  // acc + the G groups of 4 activation bytes at u (each broadcast) times s[0..G-1], one int16 sum
  template <int G>
  static inline __m256i dotn(__m256i acc, const uint8_t* u, const __m256i* s) {
    __m256i p = _mm256_maddubs_epi16(gemm::bcast4(u), s[0]);
    for (int i = 1; i < G; ++i) p = _mm256_add_epi16(p, _mm256_maddubs_epi16(gemm::bcast4(u + 4 * i), s[i]));
    __m256i r = _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    keep_order(r);
    return r;
  }
};

// Q8_0 x Q8_0 over tiles of kTileRows = 16 rows, in int16. A product of Q8_0's values needs 15
// bits (|w| <= 128, |a| <= 127), so byte multiplies (vpmaddubsw) sum two only with the signs moved
// (vpsignb) and widen again (vpmaddwd): 3 multiply-pipe operations per 32 products, the bound of the
// kernel this replaced (bench/README.md, "The AVX2 Q8_0 tile in int16"). Here the weights are
// widened once per call into the tile and the activations once per token (the Q8_0F layout,
// act_q8_x8.h: int16 values, float scale), and one vpmaddwd makes 16 products summed by pairs into
// int32: 2 operations per 32. Per pass 4 tokens: the 16 rows' values 2p, 2p + 1 (two vectors from
// L1) multiply each token's pair p, broadcast (one token per pass with the weights as memory operands
// made 3 loads per 32 products, and ran slower than the old kernel). Exact int32 block dots
// (32 * 128 * 127 < 2^31).
// Rows8: where the weights come from, rows8(r0, nr, b, v, dw): v[g] bytes 4g .. 4g + 3 of block b of
// rows r0 .. r0 + 7 (row r in lane r; zeros from row nr on), dw[r] their scales.
template <class Rows8>
static void gemm_q8_0_wide(int64_t n, int n_w, const void* va, size_t arb, int n_a, float* y, size_t ys,
                           Rows8&& rows8) {
  constexpr int kSeg = 16;  // blocks per segment: their 16 KB of int16 weights stay in L1
  constexpr int kR = kTileRows, kH = kR / 8;  // rows per tile: kH halves of 8
  static_assert(kH == 2, "two halves");
  constexpr int kT = 4;  // tokens per pass: 8 int32 sums, 2 weight vectors and a broadcast in 16 ymm registers
  alignas(32) int16_t wt[kSeg][16][kH][16];  // [block][pair p][half][row r: its values 2p, 2p + 1]
  alignas(32) float dw[kSeg][kH][8];         // [block][half][row] weight scales (0 for rows past n_w)
  // per 128-bit lane of 4 rows' dwords: values 0, 1 of each row, then values 2, 3 of each
  const __m256i pairs = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                         0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t nb = n / 32;
  for (int r0 = 0; r0 < n_w; r0 += kR) {
    const int nr = n_w - r0 < kR ? n_w - r0 : kR;
    for (int64_t s0 = 0; s0 < nb; s0 += kSeg) {
      const int ns = nb - s0 < kSeg ? (int)(nb - s0) : kSeg;
      for (int b = 0; b < ns; ++b)  // widen the tile's blocks s0 .. s0 + ns - 1
        for (int h = 0; h < kH; ++h) {
          const int hr = nr - 8 * h;  // rows of this half
          __m256i v[8];
          if (hr > 0) {
            rows8(r0 + 8 * h, hr < 8 ? hr : 8, s0 + b, v, dw[b][h]);
          } else {
            for (int g = 0; g < 8; ++g) v[g] = _mm256_setzero_si256();
            for (int r = 0; r < 8; ++r) dw[b][h][r] = 0.0f;
          }
          for (int g = 0; g < 8; ++g) {  // values 4g .. 4g + 3: the pairs 2g, 2g + 1
            const __m256i t = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v[g], pairs), 0xd8);
            _mm256_store_si256(reinterpret_cast<__m256i*>(wt[b][2 * g][h]), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(t)));
            _mm256_store_si256(reinterpret_cast<__m256i*>(wt[b][2 * g + 1][h]), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(t, 1)));
          }
        }
      for (int c0 = 0; c0 < n_a; c0 += kT) {
        const int nc = n_a - c0 < kT ? n_a - c0 : kT;
        const block_q8_0f* ab[kT];  // the tokens' blocks s0 .. (past n_a in the last pass: token c0's, never stored)
        for (int t = 0; t < kT; ++t) ab[t] = reinterpret_cast<const block_q8_0f*>(a + (c0 + (t < nc ? t : 0)) * arb) + s0;
        __m256 acc[kT][kH];
        for (int t = 0; t < kT; ++t)
          for (int h = 0; h < kH; ++h) acc[t][h] = _mm256_setzero_ps();
        for (int b = 0; b < ns; ++b) {
          __m256i isum[kT][kH];
          for (int t = 0; t < kT; ++t)
            for (int h = 0; h < kH; ++h) isum[t][h] = _mm256_setzero_si256();
#pragma GCC unroll 16
          for (int p = 0; p < 16; ++p) {
            __m256i wv[kH];
            for (int h = 0; h < kH; ++h) wv[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(wt[b][p][h]));
            for (int t = 0; t < kT; ++t) {
              const __m256i x = gemm::bcast4(ab[t][b].qs + 2 * p);  // token t's values 2p, 2p + 1
              for (int h = 0; h < kH; ++h) {
                __m256i sum = _mm256_add_epi32(isum[t][h], _mm256_madd_epi16(wv[h], x));
                keep_order(sum);
                isum[t][h] = sum;
              }
            }
          }
          const __m256 dw0 = _mm256_load_ps(dw[b][0]), dw1 = _mm256_load_ps(dw[b][1]);
          for (int t = 0; t < kT; ++t) {
            const __m256 da = _mm256_set1_ps(ab[t][b].d);
            acc[t][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t][0]), _mm256_mul_ps(dw0, da), acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t][1]), _mm256_mul_ps(dw1, da), acc[t][1]);
          }
        }
        for (int t = 0; t < nc; ++t) {
          float* yc = y + (c0 + t) * ys + r0;  // this segment's part of the token's kR outputs
          if (nr == kR) {
            for (int h = 0; h < kH; ++h)
              _mm256_storeu_ps(yc + 8 * h, s0 == 0 ? acc[t][h] : _mm256_add_ps(_mm256_loadu_ps(yc + 8 * h), acc[t][h]));
            continue;
          }
          alignas(32) float part[kR];
          for (int h = 0; h < kH; ++h) _mm256_store_ps(part + 8 * h, acc[t][h]);
          for (int r = 0; r < nr; ++r) yc[r] = (s0 == 0 ? 0.0f : yc[r]) + part[r];
        }
      }
    }
  }
}

// The stored rows, wrb bytes apart
static void gemm_q8_0_stored(int64_t n, const void* vw, size_t wrb, int n_w, const void* va, size_t arb, int n_a,
                             float* y, size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  gemm_q8_0_wide(n, n_w, va, arb, n_a, y, ys, [&](int r0, int nr, int64_t b, __m256i v[8], float* dw) {
    float mw[8];  // Q8_0 has no mins
    gemm::load_block_x8<gemm::Q8_0W>(w + r0 * wrb, wrb, nr, b, v, dw, mw);
    gemm::transpose_8x8_epi32(v);
  });
}

// K-quants (Q4_K, Q5_K, Q6_K) x Q8_K over 8 interleaved weight rows, with the sub-block scales
// applied in the integer domain. gemm_kx8 (gemm_impl.h) turns every sub-block dot into float (a
// vpmaddwd per 2 groups of 4 values, a conversion and two FMAs per sub-block and token). With
// vpmaddubsw the weights are small unsigned bytes (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63) and the
// Q8_K activations within +-127, so the int16 products of kSum groups add up without overflow
// (16 * 15 * 127, 8 * 31 * 127, 4 * 63 * 127 < 2^15), and one vpmaddwd against the row's scale
// (int16, the same word twice in each row's lane) both widens them and scales them: per
// super-block and token one exact int32 sum per row, sum_j sc_j * dot_j (< 2^31: 8 * 63 * 32 * 15
// * 127, 8 * 63 * 32 * 31 * 127, 16 * 128 * 16 * 63 * 127), then one conversion and FMA with
// d(row) * d(token). The min (Q4_K, Q5_K: dmin * m_j * S_j) or offset (Q6_K: -32 * sc_j * S_j,
// added to the int32 sum) terms come from the Q8_K bsums (Q4_K, Q5_K: summed by sub-block, one
// vphaddw), 2 per vpmaddwd against the row's int16 weights of them. Per 8 values and token: 2
// vpmaddubsw and 2 / kSum vpmaddwd instead of 2 + 1.
template <class W>
struct KInt;
// Per row and super-block, scales(block, v, &d, &dmin) gives kVec vectors of 8 int32 lanes, each
// lane two int16 words: v[0 .. kVec - 2] lane j: the scale of sub-block 8v + j, twice (the
// vpmaddwd factor of its int16 sums); v[kVec - 1] lane p: the weights of two of the token's sums
// (kMin: the mins of sub-blocks 2p and 2p + 1, against the token's sums over those sub-blocks;
// lanes 4..7 zero. Q6_K: -32 times the scales of Q8_K bsums 2p and 2p + 1, against those bsums).
template <>
struct KInt<gemm::Q4_KW> {
  typedef block_q4_K B;
  static constexpr int kSum = 8, kSub = 32;  // groups of 4 values per int16 sum; values per sub-block
  static constexpr int kVec = 2;
  static constexpr bool kMin = true;  // a dmin * min term in float (else the bsum terms join the sum)
  template <class Blk>
  static inline void scales(const Blk& b, __m256i* v, float* d, float* dmin) {
    const __m128i sm = x86::k4_scales_mins(b.scales);  // bytes 0..7 scales, 8..15 mins
    const __m256i sc = _mm256_cvtepu8_epi32(sm);
    v[0] = _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
    v[1] = _mm256_zextsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128(sm, 8)));  // mins 2p, 2p + 1 in lane p
    *d = h2f(b.d);
    *dmin = h2f(b.dmin);
  }
};
template <>
struct KInt<gemm::Q5_KW> : KInt<gemm::Q4_KW> {
  typedef block_q5_K B;
  static constexpr int kSum = 4;
};
template <>
struct KInt<gemm::Q6_KW> {
  typedef block_q6_K B;
  static constexpr int kSum = 2, kSub = 16;
  static constexpr int kVec = 3;
  static constexpr bool kMin = false;
  static inline void scales(const B& b, __m256i* v, float* d, float* dmin) {
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    const __m256i lo = _mm256_cvtepi8_epi32(sc8), hi = _mm256_cvtepi8_epi32(_mm_srli_si128(sc8, 8));
    const __m256i word = _mm256_set1_epi32(0xffff);
    v[0] = _mm256_or_si256(_mm256_and_si256(lo, word), _mm256_slli_epi32(lo, 16));
    v[1] = _mm256_or_si256(_mm256_and_si256(hi, word), _mm256_slli_epi32(hi, 16));
    v[2] = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc8), 5));  // -32 * sc
    *d = h2f(b.d);
    *dmin = 0.0f;
  }
};

// dword i (0..3) of each 128-bit lane of x, in all its dwords
static inline __m256i dword_bcast(__m256i x, int i) {
  switch (i) {
    case 0: return _mm256_shuffle_epi32(x, 0x00);
    case 1: return _mm256_shuffle_epi32(x, 0x55);
    case 2: return _mm256_shuffle_epi32(x, 0xaa);
    default: return _mm256_shuffle_epi32(x, 0xff);
  }
}
// The gemm_fn (kernels.h) of a K-quant W (Q4_KW, Q5_KW, Q6_KW) over tiles of kTileRows rows:
// gemm_kx8's repacked values (W::chunk, transposed to one int32 lane per row) of each half of 8
// rows, the scales as int16 pairs per row lane. One token at a time: 16 of its bytes loaded into
// both 128-bit lanes give 4 groups of 4 values by vpshufd, each multiplied with both halves'
// weights read from L1, so that a token's sums stay in registers. (4 tokens x 8 rows with the 8
// weight vectors held in registers needed more than 16 and spilled: bench/README.md, "The AVX2
// K-quant tile, 16 rows".)
template <class W, class Blocks>
static void gemm_k_int_rows(int64_t n, int n_w, const void* va, size_t arb, int n_a, float* y, size_t ys,
                            const Blocks& block) {
  typedef KInt<W> T;
  typedef typename T::B B;
  constexpr int kNSub = QK_K / T::kSub;
  constexpr int kSeg = 2;  // super-blocks per segment: their 8 KB of repacked values stay in L1
  constexpr int kR = kTileRows, kH = kR / 8;  // rows per tile: kH halves of 8
  alignas(32) uint8_t wq[kSeg][8][8][kH][32];  // [block][chunk k][group g][half][row r: values 32k+4g..+3]
  alignas(32) int32_t sv[kSeg][kNSub][kH][8];  // [block][sub-block][half][row]: its scale in both int16 halves
  alignas(32) int32_t bw[kSeg][8][kH][8];      // [block][bsum pair p][half][row]: weights of bsums 2p, 2p+1
  alignas(32) float dw[kSeg][kH][8], dm[kSeg][kH][8];  // [block][half][row] d, dmin (0 for rows past n_w)
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t nb = n / QK_K;
  for (int r0 = 0; r0 < n_w; r0 += kR) {
    const int nr = n_w - r0 < kR ? n_w - r0 : kR;
    for (int64_t s0 = 0; s0 < nb; s0 += kSeg) {
      const int ns = nb - s0 < kSeg ? (int)(nb - s0) : kSeg;
      for (int b = 0; b < ns; ++b)  // repack the tile's super-blocks s0 .. s0 + ns - 1
        for (int h = 0; h < kH; ++h) {
          // rows past n_w repeat the tile's first row with zero scales (never stored)
          const B* blk[8];
          B copies[8];
          gemm::KUnpacked u[8];
          __m256i sv_r[T::kVec][8];  // [vector][row], transposed below to [lane][row]
          for (int r = 0; r < 8; ++r) {
            const int row = 8 * h + r;
            blk[r] = block(r0 + (row < nr ? row : 0), s0 + b, &copies[r]);
            __m256i v[T::kVec];
            float d, dmin;
            T::scales(*blk[r], v, &d, &dmin);
            W::prepare(*blk[r], &u[r]);
            for (int i = 0; i < T::kVec; ++i) sv_r[i][r] = row < nr ? v[i] : _mm256_setzero_si256();
            dw[b][h][r] = row < nr ? d : 0.0f;
            dm[b][h][r] = row < nr ? dmin : 0.0f;
          }
          for (int i = 0; i < T::kVec; ++i) {
            gemm::transpose_8x8_epi32(sv_r[i]);
            for (int j = 0; j < 8; ++j) {
              int32_t* dst = i < T::kVec - 1 ? sv[b][8 * i + j][h] : bw[b][j][h];
              _mm256_store_si256(reinterpret_cast<__m256i*>(dst), sv_r[i][j]);
            }
          }
          for (int k = 0; k < 8; ++k) {
            __m256i v[8];
            for (int r = 0; r < 8; ++r) {
              __m256i sc;
              v[r] = W::chunk(*blk[r], u[r], k, &sc);
            }
            gemm::transpose_8x8_epi32(v);
            for (int g = 0; g < 8; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(wq[b][k][g][h]), v[g]);
          }
        }
      for (int c = 0; c < n_a; ++c) {
        const block_q8_K* ab = reinterpret_cast<const block_q8_K*>(a + c * arb) + s0;
        __m256 acc[kH];
        for (int h = 0; h < kH; ++h) acc[h] = _mm256_setzero_ps();
        for (int b = 0; b < ns; ++b) {
          __m256i isum[kH];
          for (int h = 0; h < kH; ++h) isum[h] = _mm256_setzero_si256();
#pragma GCC unroll 8  // the sub-block's scale row at a constant offset
          for (int k = 0; k < 8; ++k) {
            // the token's values 4g..4g+3 of chunk k in every lane, each used by every half
            const __m128i* qk = reinterpret_cast<const __m128i*>(ab[b].qs + 32 * k);
            const __m256i x[2] = {_mm256_broadcastsi128_si256(_mm_loadu_si128(qk)), _mm256_broadcastsi128_si256(_mm_loadu_si128(qk + 1))};
            for (int g0 = 0; g0 < 8; g0 += T::kSum) {
              __m256i s16[kH];
              for (int g = g0; g < g0 + T::kSum; ++g) {
                const __m256i qv = dword_bcast(x[g / 4], g % 4);
                for (int h = 0; h < kH; ++h) {
                  const __m256i p = _mm256_maddubs_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(wq[b][k][g][h])), qv);
                  s16[h] = g == g0 ? p : _mm256_add_epi16(s16[h], p);
                  keep_order(s16[h]);  // a chain, not GCC's tree of products live at once (it spilled)
                }
              }
              for (int h = 0; h < kH; ++h) {
                const __m256i sc = _mm256_load_si256(reinterpret_cast<const __m256i*>(sv[b][(32 * k + 4 * g0) / T::kSub][h]));
                isum[h] = _mm256_add_epi32(isum[h], _mm256_madd_epi16(s16[h], sc));
                keep_order(isum[h]);
              }
            }
          }
          const __m256 da = _mm256_set1_ps(ab[b].d);
          __m256i pair[8];  // the weights' operands of the min terms, lane p of bw[b][p]
          if constexpr (T::kMin) {  // the token's sums of the 8 sub-blocks, lane p: sub-blocks 2p, 2p + 1
            const __m128i* bs = reinterpret_cast<const __m128i*>(ab[b].bsums);
            const __m256i sums = _mm256_broadcastsi128_si256(_mm_hadd_epi16(_mm_loadu_si128(bs), _mm_loadu_si128(bs + 1)));
            for (int p = 0; p < 4; ++p) pair[p] = dword_bcast(sums, p);
          } else {
            for (int p = 0; p < 8; ++p) pair[p] = gemm::bcast4(ab[b].bsums + 2 * p);
          }
          for (int h = 0; h < kH; ++h) {
            __m256i ib = _mm256_setzero_si256();
            for (int p = 0; p < (T::kMin ? 4 : 8); ++p)
              ib = _mm256_add_epi32(ib, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(bw[b][p][h])), pair[p]));
            const __m256 dwa = _mm256_mul_ps(_mm256_load_ps(dw[b][h]), da);
            if constexpr (T::kMin) {
              acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[h]), dwa, acc[h]);
              acc[h] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ib), _mm256_mul_ps(_mm256_load_ps(dm[b][h]), da), acc[h]);
            } else {
              acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(isum[h], ib)), dwa, acc[h]);
            }
          }
        }
        float* yc = y + c * ys + r0;  // this segment's part of the token's kR outputs
        if (nr == kR) {
          for (int h = 0; h < kH; ++h)
            _mm256_storeu_ps(yc + 8 * h, s0 == 0 ? acc[h] : _mm256_add_ps(_mm256_loadu_ps(yc + 8 * h), acc[h]));
          continue;
        }
        alignas(32) float part[kR];
        for (int h = 0; h < kH; ++h) _mm256_store_ps(part + 8 * h, acc[h]);
        for (int r = 0; r < nr; ++r) yc[r] = (s0 == 0 ? 0.0f : yc[r]) + part[r];
      }
    }
  }
}
// The stored rows, wrb bytes apart
template <class W>
static void gemm_k_int(int64_t n, const void* vw, size_t wrb, int n_w, const void* va, size_t arb, int n_a,
                       float* y, size_t ys) {
  gemm_k_int_rows<W>(n, n_w, va, arb, n_a, y, ys, gemm::StoredBlocks<typename KInt<W>::B>{static_cast<const uint8_t*>(vw), wrb});
}
#else
struct Dot {
  static constexpr int kTokens = 4;  // as above: 16 ymm registers
  static inline __m256i dot2(__m256i acc, __m256i u0, __m256i s0, __m256i u1, __m256i s1) {
    return dpbusd(dpbusd(acc, u0, s0), u1, s1);
  }
  static constexpr int groups(int) { return 2; }
  template <int G>
  static inline __m256i dotn(__m256i acc, const uint8_t* u, const __m256i* s) {
    for (int i = 0; i < G; ++i) acc = dpbusd(acc, gemm::bcast4(u + 4 * i), s[i]);
    return acc;
  }
};
#endif

}  // namespace

// WeightKernels::gemm of the quantized types: 8 rows interleaved where |q - offset| <= 31 (AVX2:
// the products fit vpmaddubsw's int16 pairs)
void gemm_q4_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q4_0W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q4_1(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q4_1W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q5_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q5_0W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q5_1(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q5_1W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
#ifdef QC_DOT_VNNI
void gemm_q8_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_x8<gemm::Q8_0W, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
#else
// Q8_0's |w| <= 128 times a + 128 <= 255 would saturate them: the int16 tile (gemm_q8_0_wide)
void gemm_q8_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm_q8_0_stored(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
#endif
// gemm_q8_0's kernel over the Q8_0_R4T rows (repack.h) decode reads, where they are
// (gemm::q8_0_r4t_rows8), where prefill used to unpack these rows to the stored layout first
// (bench/README.md, "Q8_0 prefill over the decode layout on AVX2")
void gemm_q8_0_r4t(int64_t n, const void* vw, size_t, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  const gemm::LayoutRows<gemm::q8_0_r4t_rows8> rows{static_cast<const uint8_t*>(vw), n};
#ifdef QC_DOT_VNNI
  gemm::gemm_x8_rows<gemm::Q8_0W, Dot>(n, n_w, a, arb, n_a, y, ldy, rows);
#else
  gemm_q8_0_wide(n, n_w, a, arb, n_a, y, ldy, [&](int r0, int nr, int64_t b, __m256i v[8], float* dw) {
    rows(r0, nr, b, v, dw, nullptr);
  });
#endif
}
// gemm_q4_0's, gemm_q4_1's, gemm_q5_0's and gemm_q5_1's kernels over the R4T rows decode reads,
// where they are (csrc/x86/layout_rows.h)
#define QC_LAYOUT_GEMM(layout, W)                                                                                    \
  void gemm_##layout(int64_t n, const void* w, size_t, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) { \
    gemm::gemm_x8_rows<gemm::W, Dot>(n, n_w, a, arb, n_a, y, ldy,                                                    \
                                     gemm::LayoutRows<gemm::layout##_rows8>{static_cast<const uint8_t*>(w), n});     \
  }
QC_LAYOUT_GEMM(q4_0_r4t, Q4_0W) QC_LAYOUT_GEMM(q4_1_r4t, Q4_1W) QC_LAYOUT_GEMM(q5_0_r4t, Q5_0W) QC_LAYOUT_GEMM(q5_1_r4t, Q5_1W)
#undef QC_LAYOUT_GEMM
#ifdef QC_DOT_VNNI
void gemm_q4_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_kx8<gemm::Q4_KW, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q4_K_r4(int64_t n, const void* w, size_t, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_kx8_rows<gemm::Q4_KW, Dot>(n, n_w, a, arb, n_a, y, ldy, gemm::Q4KR4Blocks{static_cast<const uint8_t*>(w), n});
}
void gemm_q5_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_kx8<gemm::Q5_KW, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q5_K_r4(int64_t n, const void* w, size_t, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_kx8_rows<gemm::Q5_KW, Dot>(n, n_w, a, arb, n_a, y, ldy, gemm::Q5KR4Blocks{static_cast<const uint8_t*>(w), n});
}
void gemm_q6_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm::gemm_kx8<gemm::Q6_KW, Dot>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
#else
// vpmaddubsw: the K-quants with their scales applied in the integer sums (gemm_k_int above)
void gemm_q4_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm_k_int<gemm::Q4_KW>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
// gemm_q4_K's and gemm_q5_K's kernels over the Q4_K_R4 / Q5_K_R4 tiles decode reads (layout_rows.h)
void gemm_q4_K_r4(int64_t n, const void* w, size_t, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm_k_int_rows<gemm::Q4_KW>(n, n_w, a, arb, n_a, y, ldy, gemm::Q4KR4Blocks{static_cast<const uint8_t*>(w), n});
}
void gemm_q5_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm_k_int<gemm::Q5_KW>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
void gemm_q5_K_r4(int64_t n, const void* w, size_t, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm_k_int_rows<gemm::Q5_KW>(n, n_w, a, arb, n_a, y, ldy, gemm::Q5KR4Blocks{static_cast<const uint8_t*>(w), n});
}
void gemm_q6_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y, size_t ldy) {
  gemm_k_int<gemm::Q6_KW>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
#endif

}  // namespace QC_AVX2_NS
}  // namespace qc
