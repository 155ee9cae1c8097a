// Repacked weight layouts: a matrix's rows regrouped once (by a Model's first decode step), four
// (or sixteen) rows interleaved, so that a decode kernel (WeightKernels::gemv's counterpart LayoutKernels::gemv)
// reads one sequential stream in exactly the order it consumes it. Not GGUF types: they exist
// only in the memory a Model repacks its weights into (model.cpp); the file keeps its own layout.
//
// Why: the decode kernels that read four rows of the stored layout side by side jump between
// four streams and rearrange every group of blocks with word permutes; the
// repacked layout ran faster both in cache and streamed (bench/README.md, "Kernel design measurements").
//
// Every layout covers rows Ri .. Ri + R - 1 (R = repack_rows_of(layout): 4, a "quad"; 16, a
// "band", or a "slab" of four quads) in tiles of repack_cols(layout) columns, the tiles of a quad
// (or band) one after another, then the next one's (in a slab: panel by panel, repack_panel_cols);
// a tile holds exactly the bytes of the rows' blocks it replaces, so row r of the matrix still
// starts at byte r * row_bytes when r is a multiple of R, and the repacked matrix is as large as
// the stored one. A matrix repacks only if its rows are a multiple of R and its row length a
// multiple of the tile's (repack_fits).
//
// Q4_0_R4 tile, 288 bytes: bytes 64r + 16k + j = row r's block k qs[j] (both nibbles as stored),
//   then 16 binary16 scales, scale 4r + k = row r's block k d.
// Q8_0_R4 tile, 544 bytes: bytes 128r + 16k + j = row r's block k qs[j] + 128 (as unsigned), bytes
//   128r + 64 + 16k + j = its qs[16 + j] + 128, then the 16 scales as above. Unsigned so that the
//   byte dot product (unsigned x signed) takes the weights as they are; the kernel subtracts
//   128 * sum(a) once per tile.
// Q4_0_R4T tile, 288 bytes: the same blocks in the form the AVX2 decode kernel computes on
//   (avx2/gemv.cpp, "Quad"), so that it reads them without regrouping: per pair h of blocks
//   (2h, 2h + 1) four 32-byte vectors j, the one at 64j + 32h holding at byte 16s + 4r + e row r's
//   block 2h + s qs[4j + e] (a pair's vectors span the 256 bytes, as Q4_0_R4's rows do); then the
//   16 scales at 256 as in Q4_0_R4.
// Q5_0_R4T tile, 352 bytes: Q4_0_R4T's 256 bytes of nibbles; then per pair h the 32 bytes at
//   256 + 32h of 5th bits: bit J of byte 16s + 4r + e = bit 4J + e of row r's block 2h + s qh
//   (bits 0..3: elements 4J + e of the lo halves, 4..7: of the hi halves); then the 16 scales at
//   320, in Q4_0_R4's order.
// Q4_1_R4T tile, 160 bytes (64 columns: two blocks per row): the nibble bytes as one pair of
//   Q4_0_R4T's, vector j at 32j; then the 16 binary16 of [d of rows 0..3 of block 0, of block 1
//   | m of the same], halves 128 + 2(4s + r) and 144 + 2(4s + r): each half the register of its
//   vector's 8 (row, block) lanes (avx2/gemv_32.cpp). It pairs with Q8_1 activations.
// Q5_1_R4T tile, 192 bytes (64 columns): Q4_1_R4T's nibbles, then the pair's 32 bytes of 5th bits
//   at 128 as Q5_0_R4T's, then its [d | m] at 160 and 176. It pairs with Q8_1 activations.
// Q8_0_R4T tile, 272 bytes (64 columns: two blocks per row, so that rows of 576 fit): the blocks
//   in the Quad form of Q4_0_R4T with bytes for nibbles: eight 32-byte vectors j at 32j, byte 16s
//   + 4r + e of vector j holding row r's block s qs[4j + e], signed as stored (vectors 0..3: the
//   activation's lo halves, 4..7 its hi halves); then the 8 binary16 scales at 256, 4s + r = row
//   r's block s d (the lanes' order). It pairs with Q8_0x4 activations, a tile with one half of
//   a group.
// Q4_0_R4T, Q5_0_R4T and Q8_0_R4T put their quads four to a slab (16 rows: repack_rows_of), the
// slab's tiles in column panels (repack_panel_cols, panel_tile below).
// Q4_0_R16 tile, 576 bytes (16 rows, 64 columns: two blocks per row): per block s the four 64-byte
//   vectors j at 256s + 64j, byte 4r + e holding row r's block s qs[4j + e] (both nibbles as
//   stored: one 32-bit lane per row, so that one activation group of 4 bytes broadcast to every
//   lane, straight from memory, goes against 16 rows at once); then the 32 binary16 scales at
//   512, 16s + r = row r's block s d.
// The others pair with the Q8_0x4 activation layout (act_q8_0x4.h): lo/hi halves of each 16-value
// stripe in the same block order, so a tile row and the activation group line up byte for byte.
// Q4_K_R4 tile, 576 bytes (256 columns, one super-block per row): bytes 16r .. 16r + 15 = row r's
//   header (d, dmin, the 12 bytes of packed scales and mins), then bytes 64 + 128r .. + 127 = its
//   qs. The 4 headers are one 64-byte load, one row per 128-bit lane, the register the Q4_K decode
//   kernel (avx512/gemv_k.cpp) otherwise assembles from four loads; it pairs with plain Q8_K.
// Q5_K_R4 tile, 704 bytes (256 columns): Q4_K_R4's 4 headers at 16r, then bytes 64 + 160r .. + 159 =
//   row r's qh and qs as stored (the avx2 Quad kernel's one sequential stream; the stored rows
//   side by side decoded one activation row 10-50% slower from memory, four 1.5x slower:
//   bench/README.md, "AVX2 Q5_K_R4").
#pragma once
#include <cstddef>
#include <cstdint>

namespace qc {

enum : int32_t {
  QC_LAYOUT_STORED = 0,  // as in the file
  QC_LAYOUT_Q4_0_R4,
  QC_LAYOUT_Q8_0_R4,
  QC_LAYOUT_Q4_K_R4,
  QC_LAYOUT_Q5_0_R4T,
  QC_LAYOUT_Q4_0_R4T,
  QC_LAYOUT_Q4_1_R4T,
  QC_LAYOUT_Q5_1_R4T,
  QC_LAYOUT_Q8_0_R4T,
  QC_LAYOUT_Q4_0_R16,
  QC_LAYOUT_Q5_K_R4,
  QC_LAYOUT_COUNT,
};

// Rows per unit, which a matrix is repacked, split and unpacked by: a tile's (4, or the 16 of
// Q4_0_R16's bands), or a slab's (16: the R4T layouts with panels).
static constexpr int64_t repack_rows_of(int32_t layout) {
  return layout == QC_LAYOUT_Q4_0_R16 || layout == QC_LAYOUT_Q4_0_R4T || layout == QC_LAYOUT_Q5_0_R4T ||
                 layout == QC_LAYOUT_Q8_0_R4T
             ? 16
             : 4;
}

// Columns per panel, 0: none. A layout with panels keeps its tiles of four rows (a quad) in slabs
// of repack_rows_of(layout) rows, and within a slab orders them panel by panel: panel p (tiles
// p * P .. p * P + P - 1 of every quad, P = panel columns / tile columns; the last panel what is
// left) holds quad 0's tiles of it, then quad 1's, and so on. So a decode pass over a slab still
// reads one sequential stream, and the activation's columns of a panel stay in L1 from one quad
// to the next: a quad of a long row (38 KB at 8960 Q8_0 columns) with its activation does not fit
// in L1, and read quad by quad such rows decoded 15-20% slower (bench/README.md, "Column panels").
// Rows no longer than a panel keep the quads' tiles one after another, as without panels.
static constexpr int64_t repack_panel_cols(int32_t layout) {
  return layout == QC_LAYOUT_Q4_0_R4T || layout == QC_LAYOUT_Q5_0_R4T || layout == QC_LAYOUT_Q8_0_R4T ? 2048 : 0;
}

// Where tile t of quad q is in its slab, in tiles from the slab's first: g quads per slab, n_tiles
// tiles per quad row, panels of p tiles (repack_panel_cols)
static constexpr int64_t panel_tile(int64_t q, int64_t t, int64_t g, int64_t n_tiles, int64_t p) {
  const int64_t first = t - t % p, width = n_tiles - first < p ? n_tiles - first : p;  // of t's panel
  return first * g + q * width + (t - first);
}

// The stored type a layout comes from (-1: none). Which layout a type repacks into is the kernel
// table's choice (WeightKernels::layout, set with the layout's decode kernel).
int32_t repack_base_type(int32_t layout);

// Columns per tile.
static constexpr int64_t repack_cols(int32_t layout) {
  if (layout == QC_LAYOUT_Q4_K_R4 || layout == QC_LAYOUT_Q5_K_R4) return 256;
  if (layout == QC_LAYOUT_Q4_1_R4T || layout == QC_LAYOUT_Q5_1_R4T || layout == QC_LAYOUT_Q8_0_R4T ||
      layout == QC_LAYOUT_Q4_0_R16)
    return 64;
  return 128;
}

static constexpr bool repack_fits(int32_t layout, int64_t rows, int64_t cols) {
  return rows > 0 && rows % repack_rows_of(layout) == 0 && cols > 0 && cols % repack_cols(layout) == 0;
}

// Where tile t of group g (a quad; Q4_0_R16's band) is among the tiles of a matrix of n_cols
// columns in the layout, counted from its first tile: quads in slabs and panels where the layout
// has them, the other groups' tiles one after another
static constexpr int64_t repack_tile_at(int32_t layout, int64_t g, int64_t t, int64_t n_cols) {
  const int64_t n_tiles = n_cols / repack_cols(layout);
  if (!repack_panel_cols(layout)) return g * n_tiles + t;
  const int64_t slab = repack_rows_of(layout) / 4, panel = repack_panel_cols(layout) / repack_cols(layout);
  return g / slab * slab * n_tiles + panel_tile(g % slab, t, slab, n_tiles, panel);
}

// n_rows (a multiple of repack_rows_of(layout)) stored rows of n_cols at src -> dst in the layout, and back; the two
// are exact inverses. src and dst do not overlap.
void repack_rows(int32_t layout, const void* src, int64_t n_rows, int64_t n_cols, void* dst);
void unrepack_rows(int32_t layout, const void* src, int64_t n_rows, int64_t n_cols, void* dst);

}  // namespace qc
