// AVX-512 table's matrix-matrix tiles (WeightKernels::gemm). The AVX-512 table starts as a copy
// of the AVX2 one and re-registers the vec_dots of the types it has VNNI kernels for, which
// resets their gemm entries. With AVX512-VNNI: the tiles of csrc/avx2/gemm_impl.h with vpdpbusd
// (one instruction for 32 byte products summed by 4 and accumulated, where AVX2 needs
// vpmaddubsw + vpmaddwd + vpaddd) and, for the K-quants, vpdpwssd for the scale weighting.
// Without VNNI: the AVX2 tiles again.
#include <cpuid.h>

#include <cstring>

#include "simd512.h"

#define QC_GEMM_ATTR QC_VNNI
#include "../avx2/gemm_impl.h"
#include "../gemm.h"

namespace qc {
namespace avx512 {
namespace {
using namespace gemm;

struct VnniDot {
  // acc + 8 int32 lanes, each the sum of 4 adjacent byte products u * s (u unsigned, s signed)
  QC_VNNI static inline __m256i udot_acc(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
  // acc + the byte products u * s weighted by the int16 scales sc (both words of an int32 lane
  // equal: the 4 bytes of a lane share a sub-block). The 4-product sums (|.| <= 4 * 63 * 127 <
  // 2^15) are exact in the low word of each lane; vpdpwssd multiplies that word by the scale
  // and the high word (0 or -1) by the 0 that replaces the scale's copy.
  QC_VNNI static inline __m256i wdot_acc(__m256i acc, __m256i u, __m256i s, __m256i sc) {
    const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
    return _mm256_dpwssd_epi32(acc, p, _mm256_and_si256(sc, _mm256_set1_epi32(0xffff)));
  }
};

constexpr int kRK = 4, kCK = 4;  // 16 int32 sums + 4 + 4 unpacked in the 32 registers

// ---- 32-element block types: 8 weight rows interleaved, one int32 lane per row ---------------
//
// The R x C tile of gemm_impl.h spends, per (row, token, block), one dot instruction and then a
// conversion, a scale product and an FMA on a vector whose 8 lanes are partial sums of the same
// output. Here the 8 lanes are 8 weight rows instead: a tile of 8 rows is repacked once per
// segment of blocks (unpacked to signed bytes v = q - offset, transposed so that vector g of a
// block holds bytes 4g..4g+3 of each of the 8 rows) and then reused by every token: per
// (token, block) 8 vpdpbusd against the token's bytes 4g..4g+3 broadcast, then one conversion
// and FMA for all 8 rows. vpdpbusd wants an unsigned side: the activations are shifted to
// a + 128 (a ^ 0x80, once per token and segment) and the 128 * sum(v) of each row and block,
// computed at the repack, starts the sum. Exact in int32: 32 * 255 * 128 < 2^31.

// x[0..7] (8 rows of 8 dwords) -> x[g] = dword g of every row, row r in lane r.
QC_VNNI static inline void transpose_8x8_epi32(__m256i x[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0..3, rows 4..7
    u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]);  // dwords 0 (and 4)
    u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]);  // 1 (5)
    u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);  // 2 (6)
    u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);  // 3 (7)
  }
  for (int g = 0; g < 4; ++g) {
    x[g] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x20);
    x[g + 4] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x31);
  }
}

// The gemm_fn (kernels.h) of a 32-element block type W (a policy of gemm_impl.h).
template <typename W>
QC_VNNI void gemm_x8(int64_t n, const void* vw, size_t wrb, int n_w, const void* va, size_t arb, int n_a, float* y,
                     size_t ys) {
  typedef typename W::B B;
  typedef typename W::A A;
  constexpr int kSeg = 32;  // blocks per segment: the repacked rows (8 KB) and kC tokens (4 KB) stay in L1
  constexpr int kC = 4;     // tokens per pass over a repacked block (one weight load for kC dot products)
  alignas(32) int8_t wq[kSeg][8][32];    // [block][group g][row r: bytes 4g..4g+3 of row r]
  alignas(32) float dw[kSeg][8];         // [block][row] weight scales (0 for rows past n_w)
  alignas(32) float mw[kSeg][8];         // [block][row] weight mins (kMin types)
  alignas(32) int32_t ncorr[kSeg][8];    // [block][row] -128 * sum(v)
  alignas(32) uint8_t au[kC][kSeg][32];  // [token][block] a + 128
  alignas(32) float da[kC][kSeg], sa[kC][kSeg];  // [token][block] activation scale d and s (Q8_1)
  std::memset(au, 0, sizeof(au));  // tokens past n_a in the last pass multiply zeros, never stored
  std::memset(da, 0, sizeof(da));
  std::memset(sa, 0, sizeof(sa));
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t nb = n / 32;
  const __m256i ones = _mm256_set1_epi8(1), flip = _mm256_set1_epi8((char)0x80);
  for (int r0 = 0; r0 < n_w; r0 += 8) {
    const int nr = n_w - r0 < 8 ? n_w - r0 : 8;
    for (int64_t s0 = 0; s0 < nb; s0 += kSeg) {
      const int ns = nb - s0 < kSeg ? (int)(nb - s0) : kSeg;
      for (int b = 0; b < ns; ++b) {  // repack the 8 rows' blocks s0 .. s0 + ns - 1
        __m256i v[8];
        for (int r = 0; r < 8; ++r) {
          if (r < nr) {
            const B& blk = reinterpret_cast<const B*>(w + (r0 + r) * wrb)[s0 + b];
            v[r] = _mm256_sub_epi8(W::q(blk), _mm256_set1_epi8(W::kOff));
            dw[b][r] = h2f(blk.d);
            if constexpr (W::kMin) mw[b][r] = h2f(blk.m);
          } else {
            v[r] = _mm256_setzero_si256();
            dw[b][r] = 0.0f;
            mw[b][r] = 0.0f;
          }
        }
        transpose_8x8_epi32(v);
        __m256i sum = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(wq[b][g]), v[g]);
          sum = _mm256_dpbusd_epi32(sum, ones, v[g]);
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(ncorr[b]), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)));
      }
      for (int c0 = 0; c0 < n_a; c0 += kC) {
        const int nc = n_a - c0 < kC ? n_a - c0 : kC;
        for (int c = 0; c < nc; ++c) {
          const A* ab = reinterpret_cast<const A*>(a + (c0 + c) * arb) + s0;
          for (int b = 0; b < ns; ++b) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(au[c][b]), _mm256_xor_si256(load256(ab[b].qs), flip));
            da[c][b] = h2f(ab[b].d);
            if constexpr (W::kMin) sa[c][b] = h2f(ab[b].s);
          }
        }
        __m256 acc[kC];
        for (int c = 0; c < kC; ++c) acc[c] = _mm256_setzero_ps();
        for (int b = 0; b < ns; ++b) {
          __m256i isum[kC];
          const __m256i init = _mm256_load_si256(reinterpret_cast<const __m256i*>(ncorr[b]));
          for (int c = 0; c < kC; ++c) isum[c] = init;
          for (int g = 0; g < 8; ++g) {
            const __m256i wg = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq[b][g]));
            for (int c = 0; c < kC; ++c) {
              int32_t a4;
              std::memcpy(&a4, au[c][b] + 4 * g, 4);
              isum[c] = _mm256_dpbusd_epi32(isum[c], _mm256_set1_epi32(a4), wg);
            }
          }
          const __m256 dwv = _mm256_load_ps(dw[b]);
          for (int c = 0; c < kC; ++c)
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[c]), dwv), _mm256_set1_ps(da[c][b]), acc[c]);
          if constexpr (W::kMin) {
            const __m256 mwv = _mm256_load_ps(mw[b]);
            for (int c = 0; c < kC; ++c) acc[c] = _mm256_fmadd_ps(mwv, _mm256_set1_ps(sa[c][b]), acc[c]);
          }
        }
        for (int c = 0; c < nc; ++c) {  // this segment's part of the 8 outputs of token c0 + c
          alignas(32) float part[8];
          _mm256_store_ps(part, acc[c]);
          float* yc = y + (c0 + c) * ys + r0;
          for (int r = 0; r < nr; ++r) yc[r] = (s0 == 0 ? 0.0f : yc[r]) + part[r];
        }
      }
    }
  }
}

bool cpu_has_vnni() {
  unsigned a, b, c, d;
  // CPUID leaf 7, sub-leaf 0: ECX bit 11 = AVX512_VNNI (the OS support for the AVX-512 state was
  // checked by dispatch.cpp before this table was built)
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 11));
}

}  // namespace
}  // namespace avx512

void register_gemm_kernels_avx512(Kernels& k) {
  register_gemm_kernels_avx2(k);
  if (!avx512::cpu_has_vnni()) return;
  using avx512::VnniDot;
  using namespace gemm;
  k.weight[GGML_Q4_0].gemm = avx512::gemm_x8<Q4_0W>;
  k.weight[GGML_Q4_1].gemm = avx512::gemm_x8<Q4_1W>;
  k.weight[GGML_Q5_0].gemm = avx512::gemm_x8<Q5_0W>;
  k.weight[GGML_Q5_1].gemm = avx512::gemm_x8<Q5_1W>;
  k.weight[GGML_Q8_0].gemm = avx512::gemm_x8<Q8_0W>;
  k.weight[GGML_Q4_K].gemm = gemm_k<Q4_KW, VnniDot, avx512::kRK, avx512::kCK>;
  k.weight[GGML_Q5_K].gemm = gemm_k<Q5_KW, VnniDot, avx512::kRK, avx512::kCK>;
  k.weight[GGML_Q6_K].gemm = gemm_k<Q6_KW, VnniDot, avx512::kRK, avx512::kCK>;
}

}  // namespace qc
