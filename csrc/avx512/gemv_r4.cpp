// AVX-512 VNNI decode kernels over the repacked layouts Q4_0_R4, Q5_0_R4 and Q8_0_R4 (repack.h),
// one activation row in the Q8_0x4 layout (act_q8_0x4.h): the values of vec_dot_q4_0 / _q5_0 /
// _q8_0 over Q8_0 activations, up to the order of the float sums (Q5_0_R4: bit for bit those of
// the stored layout's gemv_q5_0, gemv.cpp, whose arithmetic it repeats per 128 columns).
//
// Per tile (4 rows x 128 columns) and row: the row's bytes are already in the activation's order,
// so a plain load feeds vpdpbusd (16 int32 lanes, 4 per block), with the offset of the unsigned
// weights (Q4_0: nibbles q + 8, Q8_0: q + 128) taken off through the activation's sum8 in the
// integer domain; the 16 scales of the tile are converted once and each row's 4 spread over its
// lanes by one permute. The tiles come in the order they are read, and are prefetched in software
// 4 KB ahead all the same (kTilePrefetch).
#include "simd512.h"

#include <cstring>

#include "../act_q8_0x4.h"
#include "../repack.h"

namespace qc {
namespace avx512 {
namespace {

// Software prefetch this far ahead of the tile being read: in the model's decode steps the tiles
// waited for memory without it, though not in a loop over the matrices alone (bench/README.md,
// "Several sequences at once", "Repacked Q5_0").
constexpr size_t kTilePrefetch = 4096;

// Lane 4k + j of row r's scale vector is scale 4r + k of the tile.
struct RowScaleIndex {
  __m512i row[4];
  RowScaleIndex() {
    alignas(64) int32_t ix[4][16];
    for (int r = 0; r < 4; ++r)
      for (int j = 0; j < 16; ++j) ix[r][j] = 4 * r + j / 4;
    for (int r = 0; r < 4; ++r) row[r] = _mm512_load_si512(ix[r]);
  }
};

// Q4_0_R4: row r's 64 nibble bytes at tile + 64r, the scales at tile + 256.
struct Q4_0R4 {
  static constexpr size_t kTile = 288, kScales = 256;
  // row r's weights against the activation's lo and hi halves
  QC_VNNI static void weights(const uint8_t* tile, int r, __m512i& ql, __m512i& qh) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i q = load512(tile + 64 * r);
    ql = _mm512_and_si512(q, m4), qh = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
  }
  // the weights are q + 8: 8 * sum(a) per lane
  QC_VNNI static __m512i offset(const block_q8_0x4& a) {
    return _mm512_sub_epi32(_mm512_setzero_si512(), load512(a.sum8));
  }
};

// Q5_0_R4: row r's 64 nibble bytes at tile + 64r as Q4_0_R4's, its lo and hi 5th-bit masks (one
// bit per byte of ql, qh) at tile + 256 + 16r and 8 bytes further, the scales at + 320.
struct Q5_0R4 {
  static constexpr size_t kTile = 352, kScales = 320;
  QC_VNNI static void weights(const uint8_t* tile, int r, __m512i& ql, __m512i& qh) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), fifth = _mm512_set1_epi8(0x10);
    const __m512i q = load512(tile + 64 * r);
    uint64_t bits[2];
    std::memcpy(bits, tile + 256 + 16 * r, 16);
    const __m512i l = _mm512_and_si512(q, m4), h = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    ql = _mm512_mask_add_epi8(l, _cvtu64_mask64(bits[0]), l, fifth);
    qh = _mm512_mask_add_epi8(h, _cvtu64_mask64(bits[1]), h, fifth);
  }
  // the weights are q + 16: 16 * sum(a) per lane = 2 * sum8
  QC_VNNI static __m512i offset(const block_q8_0x4& a) {
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(load512(a.sum8), 1));
  }
};

// Q8_0_R4: row r's 64 lo bytes at tile + 128r, its 64 hi bytes after them, the scales at + 512.
struct Q8_0R4 {
  static constexpr size_t kTile = 544, kScales = 512;
  QC_VNNI static void weights(const uint8_t* tile, int r, __m512i& ql, __m512i& qh) {
    ql = load512(tile + 128 * r), qh = load512(tile + 128 * r + 64);
  }
  // the weights are q + 128: 128 * sum(a) per lane = 16 * sum8
  QC_VNNI static __m512i offset(const block_q8_0x4& a) {
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(load512(a.sum8), 4));
  }
};

// One quad's 4 outputs for A activation rows (A <= 2, a_row_bytes apart), y[i * ys + r] for row
// i: each row's arithmetic in the same order whatever A (a row alone, A = 1, is the decode gemv), the
// weights unpacked and the scales spread once per tile for all A rows. A = 2 keeps both rows' activations
// in registers (8 zmm) beside the 8 accumulators; more rows would spill (32 zmm in all).
template <class L, int A>
QC_VNNI inline void quad_rows(const uint8_t* tile, int64_t n_tiles, const RowScaleIndex& ix, const uint8_t* va,
                              size_t arb, float* y, size_t ys) {
  __m512 acc[A][4];
  for (int i = 0; i < A; ++i)
    for (int r = 0; r < 4; ++r) acc[i][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < n_tiles; ++g, tile += L::kTile) {
    for (size_t c = 0; c < L::kTile; c += 64) __builtin_prefetch(tile + kTilePrefetch + c, 0, 3);
    __m512i lo[A], hi[A], offset[A];
    __m512 da[A];
    for (int i = 0; i < A; ++i) {
      const block_q8_0x4& b = reinterpret_cast<const block_q8_0x4*>(va + i * arb)[g];
      lo[i] = load512(b.lo), hi[i] = load512(b.hi), offset[i] = L::offset(b), da[i] = _mm512_loadu_ps(b.d);
    }
    const __m512 dw = _mm512_cvtph_ps(load256(tile + L::kScales));
    for (int r = 0; r < 4; ++r) {
      const __m512 dr = _mm512_permutexvar_ps(ix.row[r], dw);
      __m512i wl, wh;
      L::weights(tile, r, wl, wh);
      for (int i = 0; i < A; ++i) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(offset[i], wl, lo[i]), wh, hi[i]);
        acc[i][r] = _mm512_fmadd_ps(_mm512_mul_ps(dr, da[i]), _mm512_cvtepi32_ps(dot), acc[i][r]);
      }
    }
  }
  for (int i = 0; i < A; ++i)
    for (int r = 0; r < 4; ++r) y[i * ys + r] = _mm512_reduce_add_ps(acc[i][r]);
}

// gemv_rows_fn over the layout (n_rows a multiple of 4, the quads' tiles one after another from w): per quad, the activation rows two at a time (then the one left),
// the quad's tiles read from memory by the first pair and from L1 by the others.
template <class L>
QC_VNNI void gemv_r4_rows(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a,
                          float* y, size_t y_stride) {
  static const RowScaleIndex ix;
  const uint8_t* w = static_cast<const uint8_t*>(vw);
  const uint8_t* a = static_cast<const uint8_t*>(va);
  const int64_t n_tiles = n / 128;
  for (int quad = 0; quad < n_rows / 4; ++quad) {
    const uint8_t* tile = w + (size_t)quad * 4 * wrb;
    int i = 0;
    for (; i + 2 <= n_a; i += 2) quad_rows<L, 2>(tile, n_tiles, ix, a + i * arb, arb, y + i * y_stride + 4 * quad, y_stride);
    if (i < n_a) quad_rows<L, 1>(tile, n_tiles, ix, a + i * arb, arb, y + i * y_stride + 4 * quad, y_stride);
  }
}

}  // namespace

// LayoutKernels::gemv and gemv_rows of Q4_0_R4, Q5_0_R4 and Q8_0_R4 (the table: quants.cpp)
QC_VNNI void gemv_q4_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_r4_rows<Q4_0R4>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
QC_VNNI void gemv_q5_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_r4_rows<Q5_0R4>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
QC_VNNI void gemv_q8_0_r4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {
  gemv_r4_rows<Q8_0R4>(n, w, wrb, n_rows, a, 0, 1, y, 0);
}
QC_VNNI void gemv_q4_0_r4_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a,
                               float* y, size_t y_stride) {
  gemv_r4_rows<Q4_0R4>(n, w, wrb, n_rows, a, arb, n_a, y, y_stride);
}
QC_VNNI void gemv_q5_0_r4_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a,
                               float* y, size_t y_stride) {
  gemv_r4_rows<Q5_0R4>(n, w, wrb, n_rows, a, arb, n_a, y, y_stride);
}
QC_VNNI void gemv_q8_0_r4_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a,
                               float* y, size_t y_stride) {
  gemv_r4_rows<Q8_0R4>(n, w, wrb, n_rows, a, arb, n_a, y, y_stride);
}

}  // namespace avx512
}  // namespace qc
