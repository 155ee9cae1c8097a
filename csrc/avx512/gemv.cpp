// AVX-512 VNNI decode kernel of Q4_0 weights (WeightKernels::gemv): rows of Q4_0 . one activation
// row in the Q8_0x4 layout (act_q8_0x4.h), the values of vec_dot_q4_0 over Q8_0 activations.
//
// Per four weight blocks (128 weights) of a row: their 64 nibble bytes in one register; masking
// and shifting give elements 0..15 and 16..31 of the four blocks, in the order of the activation's
// lo and hi halves, so two vpdpbusd make 16 int32 lanes, 4 per block. The activation's 8 * sum(a)
// per lane is subtracted in the integer domain (the nibbles are q + 8); one conversion, one scale
// product and one FMA per four blocks. Four rows per pass share the activation group's registers
// (measured 1.3x one row per pass: the loads, not the arithmetic, were the limit).
#include "simd512.h"

#include "../act_q8_0x4.h"

namespace qc {
namespace avx512 {
namespace {

// Lanes 4k..4k+3 = the f16 scale of block k as float (k < 4).
static inline __m512 scales_4(const block_q4_0* b) {
  const __m128i h = _mm_setr_epi16((short)b[0].d, (short)b[1].d, (short)b[2].d, (short)b[3].d, 0, 0, 0, 0);
  const __m512 f = _mm512_castps128_ps512(_mm_cvtph_ps(h));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3), f);
}

// The 64 nibble bytes of blocks b[0..3], block k in bytes 16k..16k+15.
static inline __m512i nibbles_4(const block_q4_0* b) {
  const __m256i b01 = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[1].qs), reinterpret_cast<const __m128i*>(b[0].qs));
  const __m256i b23 = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[3].qs), reinterpret_cast<const __m128i*>(b[2].qs));
  return _mm512_inserti64x4(_mm512_castsi256_si512(b01), b23, 1);
}

// y[r] = row r of w (R rows of wrb bytes, n / 32 blocks each) . a
template <int R>
QC_VNNI static void rows(int64_t n, const uint8_t* w, size_t wrb, const block_q8_0x4* a, float* y) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < n / QK8_0X4; ++g) {
    const __m512i lo = load512(a[g].lo), hi = load512(a[g].hi), sum8 = load512(a[g].sum8);
    const __m512 da = _mm512_loadu_ps(a[g].d);
    for (int r = 0; r < R; ++r) {
      const block_q4_0* b = reinterpret_cast<const block_q4_0*>(w + r * wrb) + 4 * g;
      const __m512i q = nibbles_4(b);
      const __m512i ql = _mm512_and_si512(q, m4), qh = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      const __m512i s = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ql, lo), qh, hi), sum8);
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(scales_4(b), da), _mm512_cvtepi32_ps(s), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}

// gemv_fn (kernels.h) of Q4_0
QC_VNNI void gemv_q4_0(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, float* y) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const block_q8_0x4* a = static_cast<const block_q8_0x4*>(va);
  int r = 0;
  for (; r + 4 <= n_rows; r += 4) rows<4>(n, w + r * wrb, wrb, a, y + r);
  for (; r < n_rows; ++r) rows<1>(n, w + r * wrb, wrb, a, y + r);
}

}  // namespace

void register_gemv_vnni(Kernels& k) {
  k.weight[GGML_Q4_0].gemv = gemv_q4_0;
  k.weight[GGML_Q4_0].gemv_act = QC_ACT_Q8_0X4;
}

}  // namespace avx512
}  // namespace qc
