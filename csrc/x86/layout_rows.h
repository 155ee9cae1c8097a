// The repacked layouts' rows (repack.h) as the prefill tiles of gemm_impl.h take them, read where
// decode keeps them (LayoutKernels::gemm), instead of unpacked to the stored layout first. Each
// reader gives block b of 8 rows from r0 (row offsets from w, the first row of a unit of the
// layout): v[g] = values 4g .. 4g + 3 of the 8 rows minus the type's offset, row r in lane r (what
// load_block_x8 + transpose_8x8_epi32 give for stored rows), dw[r] and mw[r] their scales and mins.
// The layouts keep a quad's bytes 4g .. 4g + 3 side by side already, so a vector is one or two
// loads and no transpose (bench/README.md, "Q8_0 prefill over the decode layout on AVX2").
// Part of gemm_impl.h (its namespace; the includer's QC_GEMM_ATTR).
#pragma once

namespace qc {
namespace gemm {
namespace {

// Tile t of quad q (rows 4q .. 4q + 3 from w) of an R4T layout of n columns (repack_tile_at)
template <typename B>
static inline const uint8_t* quad_tile(const uint8_t* w, int32_t layout, int64_t n, int64_t q, int64_t t) {
  return w + repack_tile_at(layout, q, t, n) * 4 * (repack_cols(layout) / 32) * (int64_t)sizeof(B);
}

// Q8_0_R4T (its units are slabs of 16 rows, so 8 rows are always there): vector g of a tile holds
// block s's bytes 4g .. 4g + 3 of the quad at 16s, so each v[g] is two 16-byte loads
QC_GEMM_ATTR static inline void q8_0_r4t_rows8(const uint8_t* w, int64_t n, int r0, int, int64_t b, __m256i v[8],
                                               float* dw, float*) {
  const uint8_t* tile[2];  // rows r0 .. r0 + 3, r0 + 4 .. r0 + 7
  for (int h = 0; h < 2; ++h) tile[h] = quad_tile<block_q8_0>(w, QC_LAYOUT_Q8_0_R4T, n, r0 / 4 + h, b / 2);
  const int64_t half = 16 * (b % 2);
  for (int g = 0; g < 8; ++g)
    v[g] = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(tile[1] + 32 * g + half),
                               reinterpret_cast<const __m128i*>(tile[0] + 32 * g + half));
  for (int h = 0; h < 2; ++h)  // the quad's 4 scales of block b, side by side
    _mm_storeu_ps(dw + 4 * h, _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(tile[h] + 256 + 8 * (b % 2)))));
}

// x: lane r = bytes qs[4j .. 4j + 3] of row r's Q4 block -> v[j] (low nibbles: values 4j ..) and
// v[j + 4] (high nibbles: values 16 + 4j ..), minus kOff
template <int kOff>
QC_GEMM_ATTR static inline void nibble_groups(__m256i x, int j, __m256i v[8]) {
  const __m256i low4 = _mm256_set1_epi8(0x0f), off = _mm256_set1_epi8(kOff);
  v[j] = _mm256_sub_epi8(_mm256_and_si256(x, low4), off);
  v[j + 4] = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(x, 4), low4), off);
}

// Two quads' 16-byte lanes at the same offset of tiles a and b (b null: rows past the matrix, zeros)
QC_GEMM_ATTR static inline __m256i quad_pair(const uint8_t* a, const uint8_t* b, int64_t at) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + at));
  return b ? _mm256_inserti128_si256(_mm256_castsi128_si256(lo), _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + at)), 1)
           : _mm256_zextsi128_si256(lo);
}

// The two quads' tiles of rows r0 .. r0 + 7 of a layout of quads (Q4_1_R4T, Q5_1_R4T: nr, the
// rows left from r0, is a multiple of 4; the second null where only 4 are), their tile t; zeros
// where no row is left; and the d and m of their block s from the binary16 at dm (d of row r at
// 2(4s + r), m 16 bytes on)
template <typename B>
QC_GEMM_ATTR static inline void quad_tiles(const uint8_t* w, int32_t layout, int64_t n, int r0, int nr, int64_t t,
                                           const uint8_t* tile[2]) {
  tile[0] = quad_tile<B>(w, layout, n, r0 / 4, t);
  tile[1] = nr > 4 ? quad_tile<B>(w, layout, n, r0 / 4 + 1, t) : nullptr;
}
QC_GEMM_ATTR static inline void zero_rows8(__m256i v[8], float* dw, float* mw) {  // no row left (nr <= 0)
  for (int g = 0; g < 8; ++g) v[g] = _mm256_setzero_si256();
  for (int r = 0; r < 8; ++r) dw[r] = mw[r] = 0.0f;
}
QC_GEMM_ATTR static inline void quad_dm(const uint8_t* const tile[2], int64_t dm, int s, float* dw, float* mw) {
  for (int h = 0; h < 2; ++h) {
    const half_t* d = tile[h] ? reinterpret_cast<const half_t*>(tile[h] + dm) + 4 * s : nullptr;
    for (int r = 0; r < 4; ++r) {
      dw[4 * h + r] = d ? x86::h2f(d[r]) : 0.0f;
      mw[4 * h + r] = d ? x86::h2f(d[8 + r]) : 0.0f;
    }
  }
}

// nibble_groups with the 5th bits (Q5_0, Q5_1): lane r of planes holds at bit J of byte e the
// 5th bit of value 4J + e of row r's block (repack.h, Q5_0_R4T)
template <int kOff>
QC_GEMM_ATTR static inline void nibble5_groups(__m256i x, __m256i planes, int j, __m256i v[8]) {
  const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1), off = _mm256_set1_epi8(kOff);
  const __m256i b0 = _mm256_and_si256(_mm256_srli_epi16(planes, j), one);
  const __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(planes, j + 4), one);
  v[j] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(x, low4), _mm256_slli_epi16(b0, 4)), off);
  v[j + 4] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(x, 4), low4), _mm256_slli_epi16(b1, 4)), off);
}

// Q4_0_R4T and Q5_0_R4T (kPlanes; slabs of 16 rows: 8 rows always there): per pair p of blocks
// (2p, 2p + 1) vector j at 64j + 32p, block s of the pair at 16s; Q5_0's 5th bits of pair p at
// 256 + 32p; then the scales (at 256, or 320), 4r + k for row r's block k of the tile
template <typename B, int32_t kLayout, bool kPlanes>
QC_GEMM_ATTR static inline void r4t_rows8(const uint8_t* w, int64_t n, int r0, int, int64_t b, __m256i v[8],
                                          float* dw, float*) {
  const uint8_t* tile[2];  // rows r0 .. r0 + 3, r0 + 4 .. r0 + 7
  for (int h = 0; h < 2; ++h) tile[h] = quad_tile<B>(w, kLayout, n, r0 / 4 + h, b / 4);
  const int k = (int)(b % 4), lane = 32 * (k / 2) + 16 * (k % 2);
  const __m256i planes = kPlanes ? quad_pair(tile[0], tile[1], 256 + lane) : _mm256_setzero_si256();
  for (int j = 0; j < 4; ++j) {
    const __m256i x = quad_pair(tile[0], tile[1], 64 * j + lane);
    if constexpr (kPlanes) nibble5_groups<16>(x, planes, j, v);
    else nibble_groups<8>(x, j, v);
  }
  for (int h = 0; h < 2; ++h) {
    const half_t* d = reinterpret_cast<const half_t*>(tile[h] + (kPlanes ? 320 : 256));
    for (int r = 0; r < 4; ++r) dw[4 * h + r] = x86::h2f(d[4 * r + k]);
  }
}
static constexpr auto* q4_0_r4t_rows8 = &r4t_rows8<block_q4_0, QC_LAYOUT_Q4_0_R4T, false>;
static constexpr auto* q5_0_r4t_rows8 = &r4t_rows8<block_q5_0, QC_LAYOUT_Q5_0_R4T, true>;

// Q4_1_R4T and Q5_1_R4T (kPlanes): vector j at 32j, block s of the tile's two at 16s; Q5_1's 5th
// bits at 128 + 16s; then d and m (at 128, or 160)
template <typename B, int32_t kLayout, bool kPlanes>
QC_GEMM_ATTR static inline void min_r4t_rows8(const uint8_t* w, int64_t n, int r0, int nr, int64_t b, __m256i v[8],
                                              float* dw, float* mw) {
  if (nr <= 0) return zero_rows8(v, dw, mw);
  const uint8_t* tile[2];
  quad_tiles<B>(w, kLayout, n, r0, nr, b / 2, tile);
  const int s = (int)(b % 2);
  const __m256i planes = kPlanes ? quad_pair(tile[0], tile[1], 128 + 16 * s) : _mm256_setzero_si256();
  for (int j = 0; j < 4; ++j) {
    const __m256i x = quad_pair(tile[0], tile[1], 32 * j + 16 * s);
    if constexpr (kPlanes) nibble5_groups<0>(x, planes, j, v);
    else nibble_groups<0>(x, j, v);
  }
  quad_dm(tile, kPlanes ? 160 : 128, s, dw, mw);
}
static constexpr auto* q4_1_r4t_rows8 = &min_r4t_rows8<block_q4_1, QC_LAYOUT_Q4_1_R4T, false>;
static constexpr auto* q5_1_r4t_rows8 = &min_r4t_rows8<block_q5_1, QC_LAYOUT_Q5_1_R4T, true>;

// Q4_0_R16 (bands of 16 rows, one after another; 8 rows always there): block s of a tile's two,
// vector j at 256s + 64j with row r's bytes at 4r; the scales at 512 + 2(16s + r)
QC_GEMM_ATTR static inline void q4_0_r16_rows8(const uint8_t* w, int64_t n, int r0, int, int64_t b, __m256i v[8],
                                               float* dw, float*) {
  constexpr int64_t kTileBytes = 16 * 2 * sizeof(block_q4_0);
  const uint8_t* tile = w + repack_tile_at(QC_LAYOUT_Q4_0_R16, r0 / 16, b / 2, n) * kTileBytes;
  const int s = (int)(b % 2), h = (r0 % 16) / 8;  // rows 8h .. 8h + 7 of the band
  for (int j = 0; j < 4; ++j)
    nibble_groups<8>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + 256 * s + 64 * j + 32 * h)), j, v);
  _mm256_storeu_ps(dw, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + 512 + 2 * (16 * s + 8 * h)))));
}

// A reader above as the tiles' Rows8 (gemm_x8_rows, gemm_x16_rows): the rows of the layout at w
template <void (*Read)(const uint8_t*, int64_t, int, int, int64_t, __m256i*, float*, float*)>
struct LayoutRows {
  const uint8_t* w;
  int64_t n;  // columns
  QC_GEMM_ATTR void operator()(int r0, int nr, int64_t b, __m256i v[8], float* dw, float* mw) const {
    Read(w, n, r0, nr, b, v, dw, mw);
  }
};

// K-quant super-blocks as the K tiles take them, one row's at a time: blocks(row, sb, tmp) gives
// row's super-block sb in place (stored rows) or copied into *tmp (Q4_K_R4, Q5_K_R4, whose tiles
// keep a row's header and values apart: repack.h)
template <typename B>
struct StoredBlocks {
  const uint8_t* w;
  size_t wrb;
  const B* operator()(int row, int64_t sb, B*) const { return &reinterpret_cast<const B*>(w + row * wrb)[sb]; }
};
template <typename B, int32_t kLayout>
struct KR4Blocks {
  const uint8_t* w;  // a quad's first row
  int64_t n;
  const B* operator()(int row, int64_t sb, B* tmp) const {
    constexpr size_t kRest = sizeof(B) - 16;  // past the header (d, dmin, scales)
    const uint8_t* tile = w + repack_tile_at(kLayout, row / 4, sb, n) * 4 * (int64_t)sizeof(B);
    std::memcpy(tmp, tile + 16 * (row % 4), 16);
    std::memcpy(reinterpret_cast<uint8_t*>(tmp) + 16, tile + 64 + kRest * (row % 4), kRest);
    return tmp;
  }
};
typedef KR4Blocks<block_q4_K, QC_LAYOUT_Q4_K_R4> Q4KR4Blocks;
typedef KR4Blocks<block_q5_K, QC_LAYOUT_Q5_K_R4> Q5KR4Blocks;

}  // namespace
}  // namespace gemm
}  // namespace qc
