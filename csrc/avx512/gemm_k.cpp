// The AVX-512 table's K-quant prefill tiles (WeightKernels::gemm of Q4_K, Q5_K, Q6_K) with
// AVX512-VNNI: gemm_kx8 of csrc/x86/gemm_impl.h widened to 16 interleaved weight rows, one int32
// lane per row of a 512-bit vector. Per token and 4 values one broadcast and one vpdpbusd serve 16
// outputs, and the sub-block conversion and FMAs 16 rows: half the instructions of the 256-bit
// form for the same products. Zen 4 has no more dot throughput in 512 bits (two halves), yet this
// ran 15-30% faster there (bench/README.md, "avx512 K-quant prefill tiles"). Each row lane
// computes exactly what gemm_kx8 computes for it, in its order.
#include "simd512.h"

#define QC_GEMM_ATTR QC_VNNI
#include "../x86/gemm_impl.h"

namespace qc {
namespace avx512 {
namespace {

// The gemm_fn (kernels.h) of a K-quant W (gemm::Q4_KW, Q5_KW, Q6_KW) over 16 interleaved rows.
template <typename W, class Blocks>
QC_VNNI static void gemm_kx16_rows(int64_t n, int n_w, const void* va, size_t arb, int n_a, float* y, size_t ys,
                                   const Blocks& block) {
  using gemm::KSub;
  typedef typename W::B B;
  constexpr int kSub = KSub<W>::kSub, kNSub = QK_K / kSub, kGroups = kSub / 4;
  constexpr int kSeg = 2;  // super-blocks per segment: 8 KB of repacked values stay in L1
  constexpr int kC = 4;    // tokens per pass over a repacked super-block (8, with one sum each: level)
  alignas(64) uint8_t wq[kSeg][8][8][64];  // [block][chunk k][group g][row r: values 32k+4g..+3 of row r]
  alignas(64) float fs[kSeg][kNSub][16];   // [block][sub-block][row]
  alignas(64) float fm[kSeg][kNSub][16];
  gemm::KTokens<W, kC, kSeg> t;
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t nb = n / QK_K;
  for (int r0 = 0; r0 < n_w; r0 += 16) {
    const int nr = n_w - r0 < 16 ? n_w - r0 : 16;
    for (int64_t s0 = 0; s0 < nb; s0 += kSeg) {
      const int ns = nb - s0 < kSeg ? (int)(nb - s0) : kSeg;
      for (int b = 0; b < ns; ++b) {
        for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h + 7 of the tile, as gemm_kx8 repacks 8
          float rs[8][kNSub], rm[8][kNSub];
          gemm::KUnpacked u[8];
          const B* blk[8];
          B copies[8];
          for (int i = 0; i < 8; ++i) {
            const int r = 8 * h + i;
            if (r < nr) {
              blk[i] = block(r0 + r, s0 + b, &copies[i]);
              KSub<W>::terms(*blk[i], rs[i], rm[i]);
              W::prepare(*blk[i], &u[i]);
            } else {
              blk[i] = nullptr;
              for (int j = 0; j < kNSub; ++j) rs[i][j] = rm[i][j] = 0.0f;
            }
          }
          for (int j = 0; j < kNSub; ++j)
            for (int i = 0; i < 8; ++i) {
              fs[b][j][8 * h + i] = rs[i][j];
              fm[b][j][8 * h + i] = rm[i][j];
            }
          for (int k = 0; k < 8; ++k) {
            __m256i v[8];
            for (int i = 0; i < 8; ++i) {
              __m256i sc;
              v[i] = blk[i] ? W::chunk(*blk[i], u[i], k, &sc) : _mm256_setzero_si256();
            }
            gemm::transpose_8x8_epi32(v);
            for (int g = 0; g < 8; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(wq[b][k][g] + 32 * h), v[g]);
          }
        }
      }
      for (int c0 = 0; c0 < n_a; c0 += kC) {
        const int nc = n_a - c0 < kC ? n_a - c0 : kC;
        t.load(a, arb, c0, nc, s0, ns);
        __m512 acc[kC];
        for (int c = 0; c < kC; ++c) acc[c] = _mm512_setzero_ps();
        for (int b = 0; b < ns; ++b) {
          __m512 accb[kC];
          for (int c = 0; c < kC; ++c) accb[c] = _mm512_setzero_ps();
          for (int j = 0; j < kNSub; ++j) {
            // two independent sums per token, as in gemm_kx8
            __m512i isum[kC], isum2[kC];
            for (int c = 0; c < kC; ++c) {
              isum[c] = KSub<W>::kIntOffset ? _mm512_set1_epi32(t.sjo[c][b][j]) : _mm512_setzero_si512();
              isum2[c] = _mm512_setzero_si512();
            }
            for (int g0 = 0; g0 < kGroups; g0 += 2) {
              const int e = j * kSub + 4 * g0;  // first value of the two groups
              const uint8_t* wp = wq[b][0][0] + 16 * e;  // wq[b][e / 32][(e % 32) / 4], no index arithmetic
              const __m512i w0 = _mm512_load_si512(wp);
              const __m512i w1 = _mm512_load_si512(wp + 64);
              for (int c = 0; c < kC; ++c) {
                __m512i& sum = g0 % 4 ? isum2[c] : isum[c];
                sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sum, w0, bcast4_512(t.ab[c][b].qs + e)), w1,
                                          bcast4_512(t.ab[c][b].qs + e + 4));
              }
            }
            const __m512 fsv = _mm512_load_ps(fs[b][j]), fmv = _mm512_load_ps(fm[b][j]);
            (void)fmv;
            for (int c = 0; c < kC; ++c) {
              accb[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(isum[c], isum2[c])), fsv, accb[c]);
              if constexpr (!KSub<W>::kIntOffset) accb[c] = _mm512_fnmadd_ps(fmv, _mm512_set1_ps(t.sj[c][b][j]), accb[c]);
            }
          }
          for (int c = 0; c < kC; ++c) acc[c] = _mm512_fmadd_ps(accb[c], _mm512_set1_ps(t.da[c][b]), acc[c]);
        }
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
QC_VNNI static void gemm_kx16(int64_t n, const void* vw, size_t wrb, int n_w, const void* va, size_t arb, int n_a,
                              float* y, size_t ys) {
  gemm_kx16_rows<W>(n, n_w, va, arb, n_a, y, ys, gemm::StoredBlocks<typename W::B>{static_cast<const uint8_t*>(vw), wrb});
}

}  // namespace

// WeightKernels::gemm of the K-quants (quants.cpp registers them)
QC_VNNI void gemm_q4_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm_kx16<gemm::Q4_KW>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
// gemm_q4_K's kernel over the Q4_K_R4 tiles decode reads (gemm::Q4KR4Blocks)
QC_VNNI void gemm_q4_K_r4(int64_t n, const void* w, size_t, int n_w, const void* a, size_t arb, int n_a, float* y,
                          size_t ldy) {
  gemm_kx16_rows<gemm::Q4_KW>(n, n_w, a, arb, n_a, y, ldy, gemm::Q4KR4Blocks{static_cast<const uint8_t*>(w), n});
}
QC_VNNI void gemm_q5_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm_kx16<gemm::Q5_KW>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}
QC_VNNI void gemm_q6_K(int64_t n, const void* w, size_t wrb, int n_w, const void* a, size_t arb, int n_a, float* y,
                     size_t ldy) {
  gemm_kx16<gemm::Q6_KW>(n, w, wrb, n_w, a, arb, n_a, y, ldy);
}

}  // namespace avx512
}  // namespace qc
