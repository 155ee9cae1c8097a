// AVX2 decode kernels of Q4_0 and Q5_0 weights (WeightKernels::gemv): rows . one activation row
// in the Q8_0x4 layout (act_q8_0x4.h), the values of vec_dot_q4_0 / _q5_0 over Q8_0 activations.
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
struct Q4_0G {
  typedef block_q4_0 B;
  static constexpr int kOffShift = 0;
  static inline void values(const B* b, __m256i* ql, __m256i* qh) {
    const __m256i q = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b[1].qs), reinterpret_cast<const __m128i*>(b[0].qs));
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    *ql = _mm256_and_si256(q, m4);
    *qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
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

}  // namespace

void register_gemv(Kernels& k) {
  k.weight[GGML_Q4_0].gemv = gemv<Q4_0G>;
  k.weight[GGML_Q4_0].gemv_act = QC_ACT_Q8_0X4;
  k.weight[GGML_Q5_0].gemv = gemv<Q5_0G>;
  k.weight[GGML_Q5_0].gemv_act = QC_ACT_Q8_0X4;
}

}  // namespace QC_AVX2_NS
}  // namespace qc
