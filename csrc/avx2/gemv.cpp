// AVX2 decode kernels of Q4_0 and Q5_0 weights (WeightKernels::gemv), and of the repacked Q4_0_R4,
// Q5_0_R4 and Q8_0_R4 (LayoutKernels::gemv, below): rows . one activation row in the Q8_0x4 layout
// (act_q8_0x4.h), the values of vec_dot_q4_0 / _q5_0 / _q8_0 over Q8_0 activations.
//
// Per pair of weight blocks (64 weights): their 32 nibble bytes in one register; masking and
// shifting give elements 0..15 and 16..31 of both blocks, in the order of the activation's lo and
// hi halves (Q5_0 adds its 5th bits, spread from the two blocks' qh words), so two maddubs
// (unsigned values x signed activations) and one madd make 8 int32 lanes, 4 per block. The
// activation's 8 * sum(a) per lane (16 * for Q5_0) is subtracted in the integer domain (the
// values are q + 8, q + 16); one conversion, one scale product and one FMA per pair. Several
// rows per pass share the activation group's loads. In the VNNI compilations (simd.h,
// QC_DOT_VNNI) the two dpbusd accumulate onto the negated offset directly. Each kernel also has
// its several-activation-row form (gemv_rows, batched decode): the weights unpacked once for two
// activation rows (8 accumulators of the 16 registers).
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

// y[i * ys + r] = row r of w (R rows of wrb bytes, n / 32 blocks each) . activation row i (A
// rows, arb bytes apart). With prefetch: the R rows after these (and the R after those) are
// prefetched at the pace they are read (gemv.h). The weights are unpacked once for the A rows,
// each row's arithmetic in the order of A = 1 (the gemv of that row alone), bit for bit.
template <typename W, int R, bool prefetch, int A>
static void rows(int64_t n, const uint8_t* w, size_t wrb, const uint8_t* va, size_t arb, float* y, size_t ys) {
  typedef typename W::B B;
  const bool to_l1 = R * wrb <= kPrefetchL1Tile;
  __m256 acc[A][R];
  for (int i = 0; i < A; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < n / QK8_0X4; ++g) {
    if (prefetch) prefetch_tiles<R * 4 * sizeof(B)>(w + R * wrb, R * wrb, g, to_l1);
    for (int h = 0; h < 2; ++h) {  // blocks 2h, 2h + 1 of the group
      const block_q8_0x4* a[A];
      __m256i noff[A];
      for (int i = 0; i < A; ++i) {
        a[i] = reinterpret_cast<const block_q8_0x4*>(va + i * arb) + g;
        noff[i] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(load(a[i]->sum8 + 8 * h), W::kOffShift));
      }
      for (int r = 0; r < R; ++r) {
        const B* b = reinterpret_cast<const B*>(w + r * wrb) + 4 * g + 2 * h;
        __m256i ql, qh;
        W::values(b, &ql, &qh);
        const __m256 dw = scales_2(b);
        for (int i = 0; i < A; ++i) {
          const __m256i dot = dot_2(ql, qh, load(a[i]->lo + 32 * h), load(a[i]->hi + 32 * h), noff[i]);
          acc[i][r] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_loadu_ps(a[i]->d + 8 * h)), _mm256_cvtepi32_ps(dot), acc[i][r]);
        }
      }
    }
  }
  for (int i = 0; i < A; ++i)
    for (int r = 0; r < R; ++r) y[i * ys + r] = hsum_ps(acc[i][r]);
}

// gemv_fn (kernels.h) of Q4_0 and Q5_0, and their gemv_rows_fn: activation rows two at a time (8
// accumulators of the 16 registers)
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

// ---- the repacked layouts Q4_0_R4, Q5_0_R4 and Q8_0_R4 (repack.h) -------------------------
// The same form (two blocks per 256-bit step, 8 int32 lanes, 4 per block), reading each tile's
// rows in order instead of four rows' blocks; the 16 scales of a tile are converted once, each
// row's pair spread by one permute. The tiles are prefetched in software kTilePrefetch ahead: in
// the model's decode steps they waited for memory without it, though not in a loop over the
// matrices alone (bench/README.md, "Several sequences at once", "Repacked Q5_0").
constexpr size_t kTilePrefetch = 4096;

// Q4_0_R4: row r's nibble bytes of blocks 2h, 2h + 1 at tile + 64r + 32h (16 each, in block
// order), the scales at tile + 256. The nibbles are q + 8: the offset is sum8.
// weights(): row r's values for blocks 2h, 2h + 1, unpacked once for every activation row; dot():
// against one activation row's.
struct Q4_0R4 {
  static constexpr size_t kTile = 288, kScales = 256;
  struct Values {
    __m256i ql, qh;
  };
  static inline Values weights(const uint8_t* tile, int r, int h) {
    Values v;
    unpack_nibbles_2(load(tile + 64 * r + 32 * h), &v.ql, &v.qh);
    return v;
  }
  static inline __m256i dot(const Values& v, __m256i lo, __m256i hi, __m256i sum8) {
    return dot_2(v.ql, v.qh, lo, hi, _mm256_sub_epi32(_mm256_setzero_si256(), sum8));
  }
};

// Q5_0_R4: Q4_0_R4's nibbles, row r's 5th bits of blocks 2h, 2h + 1 at tile + 256 + 16r + 4h
// (elements 0..15 of each) and 8 bytes further (16..31), the scales at tile + 320: the values and
// the arithmetic of Q5_0G (bit for bit the stored layout's gemv). The values are q + 16: the
// offset is 2 * sum8.
struct Q5_0R4 {
  static constexpr size_t kTile = 352, kScales = 320;
  struct Values {
    __m256i ql, qh;
  };
  static inline Values weights(const uint8_t* tile, int r, int h) {
    const __m256i fifth = _mm256_set1_epi8(0x10);
    uint32_t lo_bits, hi_bits;
    std::memcpy(&lo_bits, tile + 256 + 16 * r + 4 * h, 4);
    std::memcpy(&hi_bits, tile + 256 + 16 * r + 8 + 4 * h, 4);
    Values v;
    unpack_nibbles_2(load(tile + 64 * r + 32 * h), &v.ql, &v.qh);
    v.ql = _mm256_or_si256(v.ql, _mm256_and_si256(bits_to_bytes_32(lo_bits), fifth));
    v.qh = _mm256_or_si256(v.qh, _mm256_and_si256(bits_to_bytes_32(hi_bits), fifth));
    return v;
  }
  static inline __m256i dot(const Values& v, __m256i lo, __m256i hi, __m256i sum8) {
    return dot_2(v.ql, v.qh, lo, hi, _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum8, 1)));
  }
};

// Q8_0_R4: row r's lo bytes of blocks 2h, 2h + 1 at tile + 128r + 32h, its hi bytes 64 further,
// as q + 128; the scales at tile + 512.
struct Q8_0R4 {
  static constexpr size_t kTile = 544, kScales = 512;
#ifdef QC_DOT_VNNI
  // unsigned weights as stored: 128 * sum(a) per lane = 16 * sum8
  struct Values {
    __m256i ul, uh;
  };
  static inline Values weights(const uint8_t* tile, int r, int h) {
    const uint8_t* q = tile + 128 * r + 32 * h;
    return Values{load(q), load(q + 64)};
  }
  static inline __m256i dot(const Values& v, __m256i lo, __m256i hi, __m256i sum8) {
    const __m256i noff = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum8, 4));
    return dpbusd(dpbusd(noff, v.ul, lo), v.uh, hi);
  }
#else
  // vpmaddubsw would saturate on (q + 128) * a; back to signed q, then |q| x a with a's sign
  // moved onto it: |q| <= 128, |a| <= 127, a pair <= 32512
  struct Values {
    __m256i ql, qh, al, ah;  // signed q and |q|
  };
  static inline Values weights(const uint8_t* tile, int r, int h) {
    const uint8_t* q = tile + 128 * r + 32 * h;
    const __m256i top = _mm256_set1_epi8((char)0x80);
    Values v;
    v.ql = _mm256_xor_si256(load(q), top), v.qh = _mm256_xor_si256(load(q + 64), top);
    v.al = _mm256_abs_epi8(v.ql), v.ah = _mm256_abs_epi8(v.qh);
    return v;
  }
  static inline __m256i dot(const Values& v, __m256i lo, __m256i hi, __m256i) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(v.al, _mm256_sign_epi8(lo, v.ql)), ones);
    const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(v.ah, _mm256_sign_epi8(hi, v.qh)), ones);
    return _mm256_add_epi32(pl, ph);
  }
#endif
};

// y[i * ys + 4 * quad + r] for n_rows (a multiple of 4) rows, the quads' tiles one after another
// from w, and A activation rows (arb bytes apart): each tile's weights unpacked and its scales
// converted once for the A rows, each row's arithmetic in the order of A = 1 (bit for bit the
// gemv of that row alone).
template <class L, int A>
void quad_rows(const uint8_t* tile, int64_t n_tiles, const uint8_t* va, size_t arb, float* y, size_t ys) {
  // row_scales[2 * (r % 2) + h]: from the 8 scales of rows r & ~1 and r | 1, lanes 0..3 = block
  // 2h of row r, lanes 4..7 = block 2h + 1
  __m256i row_scales[4];
  for (int j = 0; j < 4; ++j) {
    const int b = 2 * j;  // 4 * (r % 2) + 2h: row r % 2 of the pair, block 2h
    row_scales[j] = _mm256_setr_epi32(b, b, b, b, b + 1, b + 1, b + 1, b + 1);
  }
  __m256 acc[A][4];
  for (int i = 0; i < A; ++i)
    for (int r = 0; r < 4; ++r) acc[i][r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < n_tiles; ++g, tile += L::kTile) {
    for (size_t c = 0; c < L::kTile; c += 64) __builtin_prefetch(tile + kTilePrefetch + c, 0, 3);
    const __m128i* sc = reinterpret_cast<const __m128i*>(tile + L::kScales);
    const __m256 dw[2] = {_mm256_cvtph_ps(_mm_loadu_si128(sc)), _mm256_cvtph_ps(_mm_loadu_si128(sc + 1))};
    const block_q8_0x4* a[A];
    for (int i = 0; i < A; ++i) a[i] = reinterpret_cast<const block_q8_0x4*>(va + i * arb) + g;
    for (int h = 0; h < 2; ++h) {  // blocks 2h, 2h + 1 of the tile
      for (int r = 0; r < 4; ++r) {
        const __m256 dr = _mm256_permutevar8x32_ps(dw[r / 2], row_scales[2 * (r % 2) + h]);
        const typename L::Values v = L::weights(tile, r, h);
        for (int i = 0; i < A; ++i) {
          const __m256 d = _mm256_mul_ps(dr, _mm256_loadu_ps(a[i]->d + 8 * h));
          const __m256i dot = L::dot(v, load(a[i]->lo + 32 * h), load(a[i]->hi + 32 * h), load(a[i]->sum8 + 8 * h));
          acc[i][r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), acc[i][r]);
        }
      }
    }
  }
  for (int i = 0; i < A; ++i)
    for (int r = 0; r < 4; ++r) y[i * ys + r] = hsum_ps(acc[i][r]);
}

// gemv_rows_fn over the layout: per quad, the activation rows two at a time (then the one left),
// the quad's tiles read from memory by the first pair and from L1 by the others.
template <class L>
void gemv_r4_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a, float* y,
                  size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t n_tiles = n / 128;  // repack_cols of these layouts
  for (int quad = 0; quad < n_rows / 4; ++quad) {
    const uint8_t* tile = w + (size_t)quad * 4 * wrb;
    int i = 0;
    for (; i + 2 <= n_a; i += 2) quad_rows<L, 2>(tile, n_tiles, a + i * arb, arb, y + i * ys + 4 * quad, ys);
    if (i < n_a) quad_rows<L, 1>(tile, n_tiles, a + i * arb, arb, y + i * ys + 4 * quad, ys);
  }
}

}  // namespace

// The decode kernels (gemv_fn, kernels.h) of Q4_0 and Q5_0, and the LayoutKernels::gemv of the
// repacked Q4_0_R4 / Q5_0_R4 / Q8_0_R4 (n_rows a multiple of 4)
void gemv_q4_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv<Q4_0G>(n, w, wrb, n_rows, a, y);
}
void gemv_q5_0(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv<Q5_0G>(n, w, wrb, n_rows, a, y);
}
void gemv_q4_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_r4_rows<Q4_0R4>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
void gemv_q5_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_r4_rows<Q5_0R4>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
void gemv_q8_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_r4_rows<Q8_0R4>(n, w, wrb, n_rows, a, 0, 1, y, 0);
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
void gemv_q4_0_r4_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                       size_t ys) {
  gemv_r4_rows<Q4_0R4>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q5_0_r4_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                       size_t ys) {
  gemv_r4_rows<Q5_0R4>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}
void gemv_q8_0_r4_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a, float* y,
                       size_t ys) {
  gemv_r4_rows<Q8_0R4>(n, w, wrb, n_rows, a, arb, n_a, y, ys);
}

}  // namespace QC_AVX2_NS
}  // namespace qc
