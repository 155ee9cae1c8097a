// The AVX-512 table's matrix-matrix tiles (WeightKernels::gemm) of the 32-element types, with
// AVX512-VNNI (registered only where the CPU has it): gemm_x8 of csrc/x86/gemm_impl.h widened to
// 16 interleaved weight rows, one int32 lane per row of a 512-bit vector, as gemm_k.cpp widens the
// K-quant tiles: per token and 4 values one broadcast and one vpdpbusd serve 16 outputs (Zen 4:
// the same dot throughput as two 256-bit ones, half the instructions; bench/README.md, "avx512
// 16-row tiles of the 32-element types"). vpdpbusd also takes Q8_0's full byte range, which the
// AVX2 form (vpmaddubsw) cannot.
#include "simd512.h"

#define QC_GEMM_ATTR QC_VNNI
#include "../x86/gemm_impl.h"

namespace qc {
namespace avx512 {
namespace {

// gemm::min_dot_tokens' vector of 16 rows in 512 bits
struct MinDot16 {
  typedef __m512 T;
  static inline T zero() { return _mm512_setzero_ps(); }
  static inline T add(T x, T y) { return _mm512_add_ps(x, y); }
  static inline T mul(T x, T y) { return _mm512_mul_ps(x, y); }
  static inline T fma(T x, T y, T z) { return _mm512_fmadd_ps(x, y, z); }
  static inline T set1(float x) { return _mm512_set1_ps(x); }
  static inline T load(const float* x) { return _mm512_load_ps(x); }
  static inline T cvt(const int32_t* x) { return _mm512_cvtepi32_ps(_mm512_load_si512(x)); }
};

// gemm_x8 (gemm_impl.h) over 16 interleaved rows, one int32 lane per row of a 512-bit vector;
// each lane computes exactly what gemm_x8 computes for its row, in its order. Rows8: where the
// weights come from, as gemm_x8_rows takes them (8 rows at a time: rows r0 .. r0 + 7, then r0 + 8 ..).
template <typename W, class Rows8>
QC_VNNI static void gemm_x16_rows(int64_t n, int n_w, const void* va, size_t arb, int n_a, float* y, size_t ys,
                                  Rows8&& rows8) {
  constexpr int kSeg = 32;  // blocks per segment
  static_assert(!W::kMin || kSeg == x86::kMinDotSegment, "the min types sum per segment as their vec_dot does");
  constexpr int kC = 8;  // tokens per pass over a repacked block
  alignas(64) int8_t wq[kSeg][8][64];  // [block][group g][row r: bytes 4g..4g+3 of row r]
  alignas(64) float dw[kSeg][16];      // [block][row] weight scales (0 for rows past n_w)
  alignas(64) float mw[kSeg][16];      // [block][row] weight mins (kMin types)
  alignas(64) int32_t ncorr[kSeg][16];  // [block][row] -128 * sum(v)
  alignas(64) int32_t isums[W::kMin ? kC : 1][W::kMin ? kSeg : 1][16];  // kMin: [token][block][row] exact dots
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t nb = n / 32;
  const __m256i ones = _mm256_set1_epi8(1);
  for (int r0 = 0; r0 < n_w; r0 += 16) {
    const int nr = n_w - r0 < 16 ? n_w - r0 : 16;
    for (int64_t s0 = 0; s0 < nb; s0 += kSeg) {
      const int ns = nb - s0 < kSeg ? (int)(nb - s0) : kSeg;
      for (int b = 0; b < ns; ++b) {
        for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h + 7, repacked as gemm_x8 repacks 8
          __m256i v[8];
          rows8(r0 + 8 * h, nr - 8 * h, s0 + b, v, dw[b] + 8 * h, mw[b] + 8 * h);
          __m256i sum = _mm256_setzero_si256();
          for (int g = 0; g < 8; g += 2) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(wq[b][g] + 32 * h), v[g]);
            _mm256_store_si256(reinterpret_cast<__m256i*>(wq[b][g + 1] + 32 * h), v[g + 1]);
            sum = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(sum, ones, v[g]), ones, v[g + 1]);
          }
          _mm256_store_si256(reinterpret_cast<__m256i*>(ncorr[b] + 8 * h),
                             _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)));
        }
      }
      for (int c0 = 0; c0 < n_a; c0 += kC) {
        const int nc = n_a - c0 < kC ? n_a - c0 : kC;
        const block_q8_x8* ab[kC];  // the tokens' blocks s0 ..
        for (int c = 0; c < kC; ++c)  // tokens past n_a in the last pass read token c0's (never stored)
          ab[c] = reinterpret_cast<const block_q8_x8*>(a + (c0 + (c < nc ? c : 0)) * arb) + s0;
        __m512 acc[kC];
        for (int c = 0; c < kC; ++c) acc[c] = _mm512_setzero_ps();
        for (int b = 0; b < ns; ++b) {
          __m512i isum[kC], isum2[kC];  // two independent sums per token, as in gemm_x8
          const __m512i init = _mm512_load_si512(ncorr[b]);
          for (int c = 0; c < kC; ++c) {
            isum[c] = init;
            isum2[c] = _mm512_setzero_si512();
          }
          for (int g = 0; g < 8; g += 2) {
            const __m512i w0 = _mm512_load_si512(wq[b][g]);
            const __m512i w1 = _mm512_load_si512(wq[b][g + 1]);
            for (int c = 0; c < kC; ++c) {
              __m512i& sum = g % 4 ? isum2[c] : isum[c];
              sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sum, bcast4_512(ab[c][b].u + 4 * g), w0),
                                        bcast4_512(ab[c][b].u + 4 * g + 4), w1);
            }
          }
          for (int c = 0; c < kC; ++c) isum[c] = _mm512_add_epi32(isum[c], isum2[c]);
          if constexpr (W::kMin) {  // the float sums after the segment, in min_dot.h's order
            for (int c = 0; c < kC; ++c) _mm512_store_si512(isums[c][b], isum[c]);
            continue;
          }
          const __m512 dwv = _mm512_load_ps(dw[b]);
          for (int c = 0; c < kC; ++c)
            acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum[c]), dwv), _mm512_set1_ps(ab[c][b].d), acc[c]);
        }
        if constexpr (W::kMin) gemm::min_dot_tokens<MinDot16>(isums, dw, mw, ab, ns, acc);  // gemm_x8's order
        const __mmask16 rows = (__mmask16)((1u << nr) - 1);
        for (int c = 0; c < nc; ++c) {  // this segment's part of the nr outputs of token c0 + c
          float* yc = y + (c0 + c) * ys + r0;
          const __m512 prev = s0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows, yc);
          _mm512_mask_storeu_ps(yc, rows, _mm512_add_ps(prev, acc[c]));
        }
      }
    }
  }
}

// The stored rows, wrb bytes apart
template <typename W>
QC_VNNI static void gemm_x16(int64_t n, const void* vw, size_t wrb, int n_w, const void* va, size_t arb, int n_a,
                             float* y, size_t ys) {
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  gemm_x16_rows<W>(n, n_w, va, arb, n_a, y, ys, [&](int r0, int nr, int64_t b, __m256i v[8], float* dw, float* mw) {
    gemm::load_block_x8<W>(w + r0 * wrb, wrb, nr, b, v, dw, mw);
    gemm::transpose_8x8_epi32(v);
  });
}

}  // namespace

// WeightKernels::gemm of the 32-element types (table.cpp)
QC_VNNI void gemm_q4_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm_x16<gemm::Q4_0W>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q4_1(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm_x16<gemm::Q4_1W>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q5_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm_x16<gemm::Q5_0W>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q5_1(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm_x16<gemm::Q5_1W>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q8_0(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm_x16<gemm::Q8_0W>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
// gemm_q4_0's kernel over this table's Q4_0_R16 bands, the others' over the avx2 R4T tiles it keeps
// (dispatch.cpp, keep_decode): the rows where decode reads them (csrc/x86/layout_rows.h), where
// prefill unpacked them to the stored layout first (bench/README.md, "Prefill over every decode layout")
#define QC_LAYOUT_GEMM(layout, W)                                                                                  \
  QC_VNNI void gemm_##layout(int64_t n, const void* w, size_t, int n_w, const void* a, size_t arb, int n_a, float* y, \
                             size_t ldy) {                                                                         \
    gemm_x16_rows<gemm::W>(n, n_w, a, arb, n_a, y, ldy, gemm::LayoutRows<gemm::layout##_rows8>{static_cast<const uint8_t*>(w), n}); \
  }
QC_LAYOUT_GEMM(q4_0_r16, Q4_0W) QC_LAYOUT_GEMM(q4_1_r4t, Q4_1W) QC_LAYOUT_GEMM(q5_0_r4t, Q5_0W)
QC_LAYOUT_GEMM(q5_1_r4t, Q5_1W) QC_LAYOUT_GEMM(q8_0_r4t, Q8_0W)
#undef QC_LAYOUT_GEMM

}  // namespace avx512

}  // namespace qc
