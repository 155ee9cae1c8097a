// AVX2 decode kernels of Q4_0 and Q5_0 weights (WeightKernels::gemv), and of the repacked Q4_0_R4
// and Q8_0_R4 (LayoutKernels::gemv, below): rows . one activation row in the Q8_0x4 layout
// (act_q8_0x4.h), the values of vec_dot_q4_0 / _q5_0 / _q8_0 over Q8_0 activations.
//
// Per pair of weight blocks (64 weights): their 32 nibble bytes in one register; masking and
// shifting give elements 0..15 and 16..31 of both blocks, in the order of the activation's lo and
// hi halves (Q5_0 adds its 5th bits, spread from the two blocks' qh words), so two maddubs
// (unsigned values x signed activations) and one madd make 8 int32 lanes, 4 per block. The
// activation's 8 * sum(a) per lane (16 * for Q5_0) is subtracted in the integer domain (the
// values are q + 8, q + 16); one conversion, one scale product and one FMA per pair. Several
// rows per pass share the activation group's loads. In the VNNI compilations (simd.h,
// QC_DOT_VNNI) the two dpbusd accumulate onto the negated offset directly.
#include "simd.h"

#include "../act_q8_0x4.h"
#include "../gemv.h"
#include "../repack.h"

namespace qc {
namespace QC_AVX2_NS {
namespace {

// Lanes 0..3 = the f16 scale of block 0 as float, 4..7 that of block 1.
template <typename B>
static inline __m256 scales_2(const B* b) {
  const __m128i h = _mm_cvtsi32_si128((int)((uint32_t)b[0].d | ((uint32_t)b[1].d << 16)));
  return _mm256_cvtph_ps(_mm_shuffle_epi8(h, _mm_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3)));
}

// 8 int32 lanes from the unsigned weight bytes of two blocks, in the activation's lo and hi order
// (ql: elements 0..15 of block 0, then of block 1; qh: elements 16..31): lanes 4k..4k+3 sum to
// block k's integer dot product; noff: minus the offset terms of the unsigned values.
static inline __m256i dot_2(__m256i ql, __m256i qh, __m256i lo, __m256i hi, __m256i noff) {
#ifdef QC_DOT_VNNI
  return dpbusd(dpbusd(noff, ql, lo), qh, hi);
#else
  // |u * a| <= 31 * 128 per byte, two pairs summed: <= 15872, no int16 saturation
  const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(ql, lo), _mm256_maddubs_epi16(qh, hi));
  return _mm256_add_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)), noff);
#endif
}

// The weight types: kOffShift: the offset of the unsigned values is (8 << kOffShift) (8 for
// Q4_0, 16 for Q5_0), i.e. sum8 << kOffShift; values(b, &ql, &qh): two blocks' unsigned values.
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
    unpack_nibbles_2(_mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[1].qs), reinterpret_cast<const __m128i*>(b[0].qs)),
                     ql, qh);
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
};

static inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// y[r] = row r of w (R rows of wrb bytes, n / 32 blocks each) . a. With prefetch: the R rows
// after these (and the R after those) are prefetched at the pace they are read (gemv.h).
template <typename W, int R, bool prefetch>
static void rows(int64_t n, const uint8_t* w, size_t wrb, const block_q8_0x4* a, float* y) {
  typedef typename W::B B;
  const bool to_l1 = R * wrb <= kPrefetchL1Tile;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < n / QK8_0X4; ++g) {
    if (prefetch) prefetch_tiles<R * 4 * sizeof(B)>(w + R * wrb, R * wrb, g, to_l1);
    for (int h = 0; h < 2; ++h) {  // blocks 2h, 2h + 1 of the group
      const __m256i lo = load(a[g].lo + 32 * h), hi = load(a[g].hi + 32 * h);
      const __m256i noff = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(load(a[g].sum8 + 8 * h), W::kOffShift));
      const __m256 da = _mm256_loadu_ps(a[g].d + 8 * h);
      for (int r = 0; r < R; ++r) {
        const B* b = reinterpret_cast<const B*>(w + r * wrb) + 4 * g + 2 * h;
        __m256i ql, qh;
        W::values(b, &ql, &qh);
        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(scales_2(b), da), _mm256_cvtepi32_ps(dot_2(ql, qh, lo, hi, noff)), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r] = hsum_ps(acc[r]);
}

// gemv_fn (kernels.h) of Q4_0 and Q5_0
template <typename W>
void gemv(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const block_q8_0x4* a = static_cast<const block_q8_0x4*>(va);
  row_passes(n_rows, [&](auto R, int r) { rows<W, R, R == 4>(n, w + r * wrb, wrb, a, y + r); });
}

// ---- the repacked layouts Q4_0_R4 and Q8_0_R4 (repack.h) ----------------------------------
// The same form (two blocks per 256-bit step, 8 int32 lanes, 4 per block), reading each tile's
// rows in order instead of four rows' blocks; the 16 scales of a tile are converted once, each
// row's pair spread by one permute.

// Q4_0_R4: row r's nibble bytes of blocks 2h, 2h + 1 at tile + 64r + 32h (16 each, in block
// order), the scales at tile + 256. The nibbles are q + 8: the offset is sum8.
struct Q4_0R4 {
  static constexpr size_t kTile = 288, kScales = 256;
  static inline __m256i dot(const uint8_t* tile, int r, int h, __m256i lo, __m256i hi, __m256i sum8) {
    __m256i ql, qh;
    unpack_nibbles_2(load(tile + 64 * r + 32 * h), &ql, &qh);
    return dot_2(ql, qh, lo, hi, _mm256_sub_epi32(_mm256_setzero_si256(), sum8));
  }
};

// Q8_0_R4: row r's lo bytes of blocks 2h, 2h + 1 at tile + 128r + 32h, its hi bytes 64 further,
// as q + 128; the scales at tile + 512.
struct Q8_0R4 {
  static constexpr size_t kTile = 544, kScales = 512;
  static inline __m256i dot(const uint8_t* tile, int r, int h, __m256i lo, __m256i hi, __m256i sum8) {
    const uint8_t* q = tile + 128 * r + 32 * h;
#ifdef QC_DOT_VNNI
    // unsigned weights as stored: 128 * sum(a) per lane = 16 * sum8
    const __m256i noff = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum8, 4));
    return dpbusd(dpbusd(noff, load(q), lo), load(q + 64), hi);
#else
    // vpmaddubsw would saturate on (q + 128) * a; back to signed q, then |q| x a with a's sign
    // moved onto it: |q| <= 128, |a| <= 127, a pair <= 32512
    const __m256i top = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
    const __m256i ql = _mm256_xor_si256(load(q), top), qh = _mm256_xor_si256(load(q + 64), top);
    const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(ql), _mm256_sign_epi8(lo, ql)), ones);
    const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(qh), _mm256_sign_epi8(hi, qh)), ones);
    (void)sum8;
    return _mm256_add_epi32(pl, ph);
#endif
  }
};

// y[r] for n_rows (a multiple of 4) rows: the quads' tiles one after another from w.
template <class L>
void gemv_r4(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const block_q8_0x4* a = static_cast<const block_q8_0x4*>(va);
  // row_scales[2 * (r % 2) + h]: from the 8 scales of rows r & ~1 and r | 1, lanes 0..3 = block
  // 2h of row r, lanes 4..7 = block 2h + 1
  __m256i row_scales[4];
  for (int j = 0; j < 4; ++j) {
    const int b = 2 * j;  // 4 * (r % 2) + 2h: row r % 2 of the pair, block 2h
    row_scales[j] = _mm256_setr_epi32(b, b, b, b, b + 1, b + 1, b + 1, b + 1);
  }
  const int64_t n_tiles = n / 128;  // repack_cols of both layouts
  for (int quad = 0; quad < n_rows / 4; ++quad) {
    const uint8_t* tile = w + (size_t)quad * 4 * wrb;
    __m256 acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < n_tiles; ++g, tile += L::kTile) {
      const __m128i* sc = reinterpret_cast<const __m128i*>(tile + L::kScales);
      const __m256 dw[2] = {_mm256_cvtph_ps(_mm_loadu_si128(sc)), _mm256_cvtph_ps(_mm_loadu_si128(sc + 1))};
      for (int h = 0; h < 2; ++h) {  // blocks 2h, 2h + 1 of the tile
        const __m256i lo = load(a[g].lo + 32 * h), hi = load(a[g].hi + 32 * h), sum8 = load(a[g].sum8 + 8 * h);
        const __m256 da = _mm256_loadu_ps(a[g].d + 8 * h);
        for (int r = 0; r < 4; ++r) {
          const __m256 d = _mm256_mul_ps(_mm256_permutevar8x32_ps(dw[r / 2], row_scales[2 * (r % 2) + h]), da);
          acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(L::dot(tile, r, h, lo, hi, sum8)), acc[r]);
        }
      }
    }
    for (int r = 0; r < 4; ++r) y[4 * quad + r] = hsum_ps(acc[r]);
  }
}

}  // namespace

// The decode kernels (gemv_fn, kernels.h) of Q4_0 and Q5_0, and the LayoutKernels::gemv of the
// repacked Q4_0_R4 / Q8_0_R4 (n_rows a multiple of 4)
void gemv_q4_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv<Q4_0G>(n, w, wrb, n_rows, a, y);
}
void gemv_q5_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv<Q5_0G>(n, w, wrb, n_rows, a, y);
}
void gemv_q4_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_r4<Q4_0R4>(n, w, wrb, n_rows, a, y);
}
void gemv_q8_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_r4<Q8_0R4>(n, w, wrb, n_rows, a, y);
}

}  // namespace QC_AVX2_NS
}  // namespace qc
