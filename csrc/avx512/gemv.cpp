// AVX-512 VNNI decode kernels of Q4_0 and Q5_0 weights (WeightKernels::gemv): rows . one activation
// row in the Q8_0x4 layout (act_q8_0x4.h), the values of vec_dot_q4_0 / _q5_0 over Q8_0 activations.
//
// Per four weight blocks (128 weights) of a row: their 64 nibble bytes in one register (gathered
// by word permutes, below); masking and shifting give elements 0..15 and 16..31 of the four blocks, in the order of the activation's
// lo and hi halves, so two vpdpbusd make 16 int32 lanes, 4 per block. The activation's 8 * sum(a)
// per lane is subtracted in the integer domain (the nibbles are q + 8); one conversion, one scale
// product and one FMA per four blocks. Four rows per pass share the activation group's registers
// (measured 1.3x one row per pass: the loads, not the arithmetic, were the limit). Q5_0 also
// has the several-activation-row form (gemv_rows, batched decode): its unpacking is most of its work.
#include "simd512.h"

#include "../act_q8_0x4.h"
#include "../gemv.h"

namespace qc {
namespace avx512 {
namespace {

// Four Q4_0 blocks are 72 bytes = 36 words, and every field starts at an even byte: block k's
// scale is word 9k, its 16 nibble bytes words 9k+1 .. 9k+8. Two loads (64 bytes, then the 8 after
// them, masked: nothing past the group is touched) and two word permutes (AVX512BW) give the 64
// nibble bytes in block order and the four scales 4 times each, in place of 8 loads and inserts.
struct Q4_0x4Index {
  __m512i nibbles;  // words 9k + 1 + i for output word 8k + i
  __m512i scales;   // word 9k for output words 4k .. 4k + 3 (the upper 16 words unused)
  Q4_0x4Index() {
    alignas(64) int16_t n[32], d[32];
    for (int j = 0; j < 32; ++j) {
      n[j] = (int16_t)(9 * (j / 8) + 1 + j % 8);
      d[j] = (int16_t)(j < 16 ? 9 * (j / 4) : 0);
    }
    nibbles = _mm512_load_si512(n);
    scales = _mm512_load_si512(d);
  }
};

// y[r] = row r of w (R rows of wrb bytes, n / 32 blocks each) . a. With prefetch: the R rows
// after these (and the R after those) are prefetched at the pace they are read (gemv.h).
template <int R, bool prefetch>
QC_VNNI static void rows(int64_t n, const uint8_t* w, size_t wrb, const block_q8_0x4* a, float* y, const Q4_0x4Index& ix) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const bool to_l1 = R * wrb <= kPrefetchL1Tile;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < n / QK8_0X4; ++g) {
    if (prefetch) prefetch_tiles<R * 4 * sizeof(block_q4_0)>(w + R * wrb, R * wrb, g, to_l1);
    const __m512i lo = load512(a[g].lo), hi = load512(a[g].hi);
    const __m512i nsum8 = _mm512_sub_epi32(_mm512_setzero_si512(), load512(a[g].sum8));
    const __m512 da = _mm512_loadu_ps(a[g].d);
    for (int r = 0; r < R; ++r) {
      const uint8_t* b = w + r * wrb + (size_t)g * 4 * sizeof(block_q4_0);
      const __m512i v0 = load512(b), v1 = _mm512_maskz_loadu_epi16(0xf, b + 64);
      const __m512i q = _mm512_permutex2var_epi16(v0, ix.nibbles, v1);
      const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(ix.scales, v0)));
      const __m512i ql = _mm512_and_si512(q, m4), qh = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      const __m512i s = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(nsum8, ql, lo), qh, hi);
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da), _mm512_cvtepi32_ps(s), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}

}  // namespace

// gemv_fn (kernels.h) of Q4_0
QC_VNNI void gemv_q4_0(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const block_q8_0x4* a = static_cast<const block_q8_0x4*>(va);
  static const Q4_0x4Index ix;
  row_passes(n_rows, [&](auto R, int r) { rows<R, R == 4>(n, w + r * wrb, wrb, a, y + r, ix); });
}

namespace {

// ---- Q5_0: the same form, plus the 5th bits --------------------------------------------------
//
// Four Q5_0 blocks are 88 bytes = 44 words, every field again at an even byte: block k's scale
// is word 11k, its 32 high bits words 11k + 1 (elements 0..15) and 11k + 2 (16..31), its nibbles
// words 11k + 3 .. 11k + 10. Per group: two loads (64 bytes, then 24 masked), one permute for
// the nibbles and one for the scales and high bits; the high-bit words, 16 bits per block for
// each of the lo and hi halves, are exactly the two 64-bit byte masks (lane order 16k + j) that
// add 16 to the nibble bytes. The values are u - 16: the offset is 2 * sum8.
struct Q5_0x4Index {
  __m512i nibbles;  // output word 8k + i <- word 11k + 3 + i
  __m512i fields;   // output words 4k..4k+3 <- 11k (scales); 16 + k <- 11k + 1; 20 + k <- 11k + 2
  Q5_0x4Index() {
    alignas(64) int16_t n[32], f[32];
    for (int j = 0; j < 32; ++j) {
      n[j] = (int16_t)(11 * (j / 8) + 3 + j % 8);
      f[j] = (int16_t)(j < 16 ? 11 * (j / 4) : j < 20 ? 11 * (j - 16) + 1 : j < 24 ? 11 * (j - 20) + 2 : 0);
    }
    nibbles = _mm512_load_si512(n);
    fields = _mm512_load_si512(f);
  }
};

// y[i * ys + r] = row r of w (R rows of wrb bytes) . activation row i (A rows, arb bytes apart):
// the weights' unpacking (permutes, 5th-bit masks, scales) done once per group for the A rows,
// each row's arithmetic in the order of the one-row kernel (A = 1), so its value is bit for bit
// that of the gemv of the row alone.
template <int R, bool prefetch, int A>
QC_VNNI static void rows_q5_0(int64_t n, const uint8_t* w, size_t wrb, const uint8_t* va, size_t arb, float* y,
                              size_t ys, const Q5_0x4Index& ix) {
  const __m512i m4 = _mm512_set1_epi8(0x0f), fifth = _mm512_set1_epi8(0x10);
  const bool to_l1 = R * wrb <= kPrefetchL1Tile;
  __m512 acc[A][R];
  for (int i = 0; i < A; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < n / QK8_0X4; ++g) {
    if (prefetch) prefetch_tiles<R * 4 * sizeof(block_q5_0)>(w + R * wrb, R * wrb, g, to_l1);
    const block_q8_0x4* a[A];
    __m512i nsum16[A];
    for (int i = 0; i < A; ++i) {
      a[i] = reinterpret_cast<const block_q8_0x4*>(va + i * arb) + g;
      nsum16[i] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(load512(a[i]->sum8), 1));
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* b = w + r * wrb + (size_t)g * 4 * sizeof(block_q5_0);
      const __m512i v0 = load512(b), v1 = _mm512_maskz_loadu_epi16(0xfff, b + 64);
      const __m512i q = _mm512_permutex2var_epi16(v0, ix.nibbles, v1);
      const __m512i f = _mm512_permutex2var_epi16(v0, ix.fields, v1);
      const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(f));
      const __m128i bits = _mm512_extracti32x4_epi32(f, 2);  // words 16..23: the lo, then the hi masks
      const __mmask64 k_lo = _cvtu64_mask64((uint64_t)_mm_cvtsi128_si64(bits));
      const __mmask64 k_hi = _cvtu64_mask64((uint64_t)_mm_extract_epi64(bits, 1));
      const __m512i ql = _mm512_and_si512(q, m4), qh = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      const __m512i ul = _mm512_mask_add_epi8(ql, k_lo, ql, fifth), uh = _mm512_mask_add_epi8(qh, k_hi, qh, fifth);
      for (int i = 0; i < A; ++i) {
        const __m512i s = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(nsum16[i], ul, load512(a[i]->lo)), uh, load512(a[i]->hi));
        acc[i][r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_loadu_ps(a[i]->d)), _mm512_cvtepi32_ps(s), acc[i][r]);
      }
    }
  }
  for (int i = 0; i < A; ++i)
    for (int r = 0; r < R; ++r) y[i * ys + r] = _mm512_reduce_add_ps(acc[i][r]);
}

}  // namespace

// gemv_fn (kernels.h) of Q5_0, and its gemv_rows_fn
QC_VNNI void gemv_q5_0(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  static const Q5_0x4Index ix;
  row_passes(n_rows, [&](auto R, int r) {
    rows_q5_0<R, R == 4, 1>(n, w + r * wrb, wrb, static_cast<const uint8_t*>(va), 0, y + r, 0, ix);
  });
}
QC_VNNI void gemv_q5_0_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a,
                            float* y, size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  static const Q5_0x4Index ix;
  row_passes_a<4>(n_rows, n_a, [&](auto R, auto A, int r, int i) {
    rows_q5_0<R, R == 4, A>(n, w + r * wrb, wrb, a + i * arb, arb, y + i * ys + r, ys, ix);
  });
}

}  // namespace avx512
}  // namespace qc
