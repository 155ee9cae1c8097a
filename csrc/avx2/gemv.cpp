// AVX2 decode kernel of Q4_0 weights: one weight row . one activation row in the Q8_0x4 layout
// (act_q8_0x4.h), the same value as vec_dot_q4_0 over Q8_0 activations.
//
// Per pair of weight blocks (64 weights): their 32 nibble bytes in one register; masking and
// shifting give elements 0..15 and 16..31 of both blocks, in the order of the activation's lo and
// hi halves, so two maddubs (unsigned nibbles x signed activations) and one madd make 8 int32
// lanes, 4 per block. The activation's 8 * sum(a) per block is subtracted in the integer domain
// (the nibbles are q + 8); one conversion, one scale product and one FMA per pair.
#include "simd.h"

#include "../act_q8_0x4.h"

namespace qc {
namespace avx2 {
namespace {

// Lanes 0..3 = the f16 scale of block 0 as float, 4..7 that of block 1.
static inline __m256 scales_2(const block_q4_0* b) {
  const __m128i h = _mm_cvtsi32_si128((int)((uint32_t)b[0].d | ((uint32_t)b[1].d << 16)));
  return _mm256_cvtph_ps(_mm_shuffle_epi8(h, _mm_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3)));
}

// 8 int32 lanes: lanes 4k..4k+3 sum to block k's integer dot product (b[k] . activations), k < 2.
// lo, hi: the activation bytes of these two blocks (32 each); sum8: their offset terms.
static inline __m256i dot_2(const block_q4_0* b, const int8_t* lo, const int8_t* hi, const int32_t* sum8) {
  const __m256i q = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[1].qs), reinterpret_cast<const __m128i*>(b[0].qs));
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i ql = _mm256_and_si256(q, m4), qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
  // |nibble * a| <= 15 * 128 per byte, two pairs summed: <= 7680, no int16 saturation
  const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(ql, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo))),
                                     _mm256_maddubs_epi16(qh, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi))));
  const __m256i s = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
  return _mm256_sub_epi32(s, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sum8)));
}

// w (n / 32 blocks of block_q4_0) . a (n / 128 blocks of block_q8_0x4)
float gemv_q4_0(int64_t n, const void* vw, const void* va) {
  const block_q4_0* x = static_cast<const block_q4_0*>(vw);
  const block_q8_0x4* y = static_cast<const block_q8_0x4*>(va);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t g = 0; g < n / QK8_0X4; ++g, x += 4, ++y) {
    const __m256i d01 = dot_2(x, y->lo, y->hi, y->sum8), d23 = dot_2(x + 2, y->lo + 32, y->hi + 32, y->sum8 + 8);
    acc0 = _mm256_fmadd_ps(_mm256_mul_ps(scales_2(x), _mm256_loadu_ps(y->d)), _mm256_cvtepi32_ps(d01), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_mul_ps(scales_2(x + 2), _mm256_loadu_ps(y->d + 8)), _mm256_cvtepi32_ps(d23), acc1);
  }
  return hsum_ps(_mm256_add_ps(acc0, acc1));
}

}  // namespace

void register_gemv(Kernels& k) {
  k.weight[GGML_Q4_0].gemv = gemv_q4_0;
  k.weight[GGML_Q4_0].gemv_act = QC_ACT_Q8_0X4;
}

}  // namespace avx2
}  // namespace qc
