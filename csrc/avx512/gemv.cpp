// AVX-512 VNNI decode kernel of Q4_0 weights: one weight row . one activation row in the Q8_0x4
// layout (act_q8_0x4.h), the same value as vec_dot_q4_0 over Q8_0 activations.
//
// Per four weight blocks (128 weights): their 64 nibble bytes in one register; masking and
// shifting give elements 0..15 and 16..31 of the four blocks, in the order of the activation's lo
// and hi halves, so two vpdpbusd make 16 int32 lanes, 4 per block. The activation's 8 * sum(a) per
// block is subtracted in the integer domain (the nibbles are q + 8); one conversion, one scale
// product and one FMA per four blocks. Two groups per iteration into two accumulators.
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

// 16 int32 lanes: lanes 4k..4k+3 sum to block k's integer dot product with the activations.
QC_VNNI static inline __m512i dot_4(const block_q4_0* b, const block_q8_0x4* a) {
  const __m512i q = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[1].qs), reinterpret_cast<const __m128i*>(b[0].qs))),
      _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[3].qs), reinterpret_cast<const __m128i*>(b[2].qs)), 1);
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const __m512i ql = _mm512_and_si512(q, m4), qh = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
  __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ql, load512(a->lo));
  s = _mm512_dpbusd_epi32(s, qh, load512(a->hi));
  return _mm512_sub_epi32(s, load512(a->sum8));
}

// w (n / 32 blocks of block_q4_0) . a (n / 128 blocks of block_q8_0x4)
QC_VNNI float gemv_q4_0(int64_t n, const void* vw, const void* va) {
  const block_q4_0* x = static_cast<const block_q4_0*>(vw);
  const block_q8_0x4* y = static_cast<const block_q8_0x4*>(va);
  const int64_t ng = n / QK8_0X4;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t g = 0;
  for (; g + 2 <= ng; g += 2) {
    const __m512i d0 = dot_4(x + 4 * g, y + g), d1 = dot_4(x + 4 * g + 4, y + g + 1);
    acc0 = _mm512_fmadd_ps(_mm512_mul_ps(scales_4(x + 4 * g), _mm512_loadu_ps(y[g].d)), _mm512_cvtepi32_ps(d0), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_mul_ps(scales_4(x + 4 * g + 4), _mm512_loadu_ps(y[g + 1].d)), _mm512_cvtepi32_ps(d1), acc1);
  }
  if (g < ng)
    acc0 = _mm512_fmadd_ps(_mm512_mul_ps(scales_4(x + 4 * g), _mm512_loadu_ps(y[g].d)), _mm512_cvtepi32_ps(dot_4(x + 4 * g, y + g)), acc0);
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

}  // namespace

void register_gemv_vnni(Kernels& k) {
  k.weight[GGML_Q4_0].gemv = gemv_q4_0;
  k.weight[GGML_Q4_0].gemv_act = QC_ACT_Q8_0X4;
}

}  // namespace avx512
}  // namespace qc
