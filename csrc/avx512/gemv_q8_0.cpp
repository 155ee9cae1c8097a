// AVX-512 VNNI decode kernel of Q8_0 weights (WeightKernels::gemv): up to 4 rows per pass
// against one Q8_0 activation row, the values of vec_dot_q8_0 (quants_32.cpp).
//
// Two blocks (64 values, 68 bytes) per step, gathered as in the Q4_0 kernel (gemv.cpp): every
// field of a block pair starts at an even byte (block k's scale is word 17k, its 32 values words
// 17k + 1 .. 17k + 16), so two loads (64 bytes, then the 4 after them, masked) and two word
// permutes give the 64 value bytes and the two scales. vpdpbusd multiplies unsigned by signed
// bytes: the weights are made unsigned by flipping their top bit (w + 128), and 128 * sum(a)
// per int32 lane comes off through the accumulator's start value, computed once per step for
// all rows together with the activation's own gather and scale conversion.
#include "simd512.h"

#include "../gemv.h"

namespace qc {
namespace avx512 {
namespace {

struct Q8_0x2Index {
  __m512i values;  // output word 16k + i <- word 17k + 1 + i (k < 2, i < 16)
  __m512i scales;  // output words 8k .. 8k + 7 <- word 17k (the upper 16 words unused)
  Q8_0x2Index() {
    alignas(64) int16_t v[32], d[32];
    for (int j = 0; j < 32; ++j) {
      v[j] = (int16_t)(17 * (j / 16) + 1 + j % 16);
      d[j] = (int16_t)(j < 16 ? 17 * (j / 8) : 0);
    }
    values = _mm512_load_si512(v);
    scales = _mm512_load_si512(d);
  }
};

constexpr size_t kPair = 2 * sizeof(block_q8_0);

// The 64 value bytes and 16 float scales (8 per block) of the block pair at p; tail: only one
// block is left (the second reads as zeros: zero values and a zero scale, a zero product).
template <bool tail>
QC_VNNI static inline void gather_pair(const uint8_t* p, const Q8_0x2Index& ix, __m512i* q, __m512* d) {
  const __m512i v0 = tail ? _mm512_maskz_loadu_epi16(0x1ffff, p) : load512(p);
  const __m512i v1 = tail ? _mm512_setzero_si512() : _mm512_maskz_loadu_epi16(0x3, p + 64);
  *q = _mm512_permutex2var_epi16(v0, ix.values, v1);
  *d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(ix.scales, v0)));
}

// acc[r] += the block pair g of row r of w . that of a (tail: a last single block)
template <int R, bool tail>
QC_VNNI static inline void step(const uint8_t* w, size_t wrb, const uint8_t* a, int64_t g, const Q8_0x2Index& ix,
                                __m512* acc) {
  const __m512i top = _mm512_set1_epi8((char)0x80);
  __m512i aq;
  __m512 da;
  gather_pair<tail>(a + g * kPair, ix, &aq, &da);
  const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), top, aq));
  for (int r = 0; r < R; ++r) {
    __m512i q;
    __m512 dw;
    gather_pair<tail>(w + r * wrb + g * kPair, ix, &q, &dw);
    const __m512i s = _mm512_dpbusd_epi32(start, _mm512_xor_si512(q, top), aq);
    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da), _mm512_cvtepi32_ps(s), acc[r]);
  }
}

// y[r] = row r of w (R <= 4 rows of wrb bytes, n / 32 blocks each) . a. With prefetch: the R
// rows after these (and the R after those) are prefetched at the pace they are read (gemv.h).
template <int R, bool prefetch>
QC_VNNI static void rows(int64_t n, const uint8_t* w, size_t wrb, const uint8_t* a, float* y, const Q8_0x2Index& ix) {
  const bool to_l1 = R * wrb <= kPrefetchL1Tile;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  const int64_t nb = n / 32;
  for (int64_t g = 0; g < nb / 2; ++g) {
    if (prefetch) prefetch_tiles<R * kPair>(w + R * wrb, R * wrb, g, to_l1);
    step<R, false>(w, wrb, a, g, ix, acc);
  }
  if (nb % 2) step<R, true>(w, wrb, a, nb / 2, ix, acc);
  for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}

}  // namespace

// gemv_fn (kernels.h) of Q8_0
QC_VNNI void gemv_q8_0(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  static const Q8_0x2Index ix;
  row_passes(n_rows, [&](auto R, int r) { rows<R, R == 4>(n, w + r * wrb, wrb, a, y + r, ix); });
}

}  // namespace avx512
}  // namespace qc
