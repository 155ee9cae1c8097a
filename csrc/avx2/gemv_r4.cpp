// AVX2 decode kernels over the repacked layouts Q4_0_R4 and Q8_0_R4 (repack.h), one activation
// row in the Q8_0x4 layout (act_q8_0x4.h): the values of vec_dot_q4_0 / _q8_0 over Q8_0
// activations, up to the order of the float sums. The form of gemv.cpp's kernels (two blocks per
// 256-bit step, 8 int32 lanes, 4 per block), reading each tile's rows in order instead of four
// rows' blocks; the 16 scales of a tile are converted once, each row's pair spread by one permute.
#include "simd.h"

#include "../act_q8_0x4.h"
#include "../repack.h"

namespace qc {
namespace QC_AVX2_NS {
namespace {

static inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Q4_0_R4: row r's nibble bytes of blocks 2h, 2h + 1 at tile + 64r + 32h (16 each, in block
// order), the scales at tile + 256. The nibbles are q + 8: the offset is sum8.
struct Q4_0R4 {
  static constexpr size_t kTile = 288, kScales = 256;
  static inline __m256i dot(const uint8_t* tile, int r, int h, __m256i lo, __m256i hi, __m256i sum8) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i q = load(tile + 64 * r + 32 * h);
    const __m256i ql = _mm256_and_si256(q, m4), qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    const __m256i noff = _mm256_sub_epi32(_mm256_setzero_si256(), sum8);
#ifdef QC_DOT_VNNI
    return dpbusd(dpbusd(noff, ql, lo), qh, hi);
#else
    // |u * a| <= 15 * 128 per byte, two pairs summed: no int16 saturation
    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(ql, lo), _mm256_maddubs_epi16(qh, hi));
    return _mm256_add_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)), noff);
#endif
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

void register_gemv_r4(Kernels& k) {
  k.layout[QC_LAYOUT_Q4_0_R4] = {gemv_r4<Q4_0R4>, QC_ACT_Q8_0X4};
  k.layout[QC_LAYOUT_Q8_0_R4] = {gemv_r4<Q8_0R4>, QC_ACT_Q8_0X4};
}

}  // namespace QC_AVX2_NS
}  // namespace qc
