#include "repack.h"

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>

#include "blocks.h"

namespace qc {

int32_t repack_base_type(int32_t layout) {
  switch (layout) {
    case QC_LAYOUT_Q4_0_R4: return GGML_Q4_0;
    case QC_LAYOUT_Q8_0_R4:
    case QC_LAYOUT_Q8_0_R4T: return GGML_Q8_0;
    case QC_LAYOUT_Q4_K_R4: return GGML_Q4_K;
    case QC_LAYOUT_Q5_K_R4: return GGML_Q5_K;
    case QC_LAYOUT_Q5_0_R4T: return GGML_Q5_0;
    case QC_LAYOUT_Q4_0_R4T:
    case QC_LAYOUT_Q4_0_R16: return GGML_Q4_0;
    case QC_LAYOUT_Q4_1_R4T: return GGML_Q4_1;
    case QC_LAYOUT_Q5_1_R4T: return GGML_Q5_1;
    default: return -1;
  }
}

namespace {

// One tile's bytes <-> the blocks of the rows it covers: rows[r * row_blocks + k] is row r's block k
// of the tile (4 or 2 blocks of 32, or 1 super-block). to_tile: stored -> tile, else back.
template <bool to_tile>
void tile_q4_0(block_q4_0* rows, int64_t row_blocks, uint8_t* tile) {
  half_t* scales = reinterpret_cast<half_t*>(tile + 256);
  for (int r = 0; r < 4; ++r) {
    for (int k = 0; k < 4; ++k) {
      block_q4_0& b = rows[r * row_blocks + k];
      uint8_t* q = tile + 64 * r + 16 * k;
      if (to_tile) {
        std::memcpy(q, b.qs, 16);
        std::memcpy(&scales[4 * r + k], &b.d, sizeof(half_t));
      } else {
        std::memcpy(b.qs, q, 16);
        std::memcpy(&b.d, &scales[4 * r + k], sizeof(half_t));
      }
    }
  }
}

// 16 bytes from src to dst, +128 on each (two's complement: the top bit flipped), both ways
static inline void copy_flip_16(uint8_t* dst, const uint8_t* src) {
  uint64_t v[2];
  std::memcpy(v, src, 16);
  v[0] ^= 0x8080808080808080ull;
  v[1] ^= 0x8080808080808080ull;
  std::memcpy(dst, v, 16);
}

template <bool to_tile>
void tile_q8_0(block_q8_0* rows, int64_t row_blocks, uint8_t* tile) {
  half_t* scales = reinterpret_cast<half_t*>(tile + 512);
  for (int r = 0; r < 4; ++r) {
    for (int k = 0; k < 4; ++k) {
      block_q8_0& b = rows[r * row_blocks + k];
      uint8_t* lo = tile + 128 * r + 16 * k;
      uint8_t* hi = lo + 64;
      uint8_t* qs = reinterpret_cast<uint8_t*>(b.qs);
      if (to_tile) {
        copy_flip_16(lo, qs);
        copy_flip_16(hi, qs + 16);
        std::memcpy(&scales[4 * r + k], &b.d, sizeof(half_t));
      } else {
        copy_flip_16(qs, lo);
        copy_flip_16(qs + 16, hi);
        std::memcpy(&b.d, &scales[4 * r + k], sizeof(half_t));
      }
    }
  }
}

// Two Q5_0 blocks' qh (bit 32b + 4J + e: block b's element 4J + e's 5th bit) <-> their Q5_0_R4T
// plane bytes (bit 32b + 8e + J): the index bits (J, e) -> (e, J), a transpose done as four swaps
// of two index bits each (delta swaps: no loop over bits, so that prefill's unpacking of repacked
// rows stays near a copy). A swap is its own inverse: back is the same swaps in reverse.
static inline uint64_t swap_bits(uint64_t x, uint64_t mask, int d) {
  const uint64_t t = ((x >> d) ^ x) & mask;
  return x ^ t ^ (t << d);
}
static inline uint64_t qh_to_planes(uint64_t x) {
  x = swap_bits(x, 0x0a0a0a0a0a0a0a0aull, 3);   // index bits 0 <-> 2
  x = swap_bits(x, 0x00cc00cc00cc00ccull, 6);   // 1 <-> 3
  x = swap_bits(x, 0x0000f0f00000f0f0ull, 12);  // 2 <-> 4
  return swap_bits(x, 0x0000ff000000ff00ull, 8);  // 3 <-> 4
}
static inline uint64_t planes_to_qh(uint64_t x) {
  x = swap_bits(x, 0x0000ff000000ff00ull, 8);
  x = swap_bits(x, 0x0000f0f00000f0f0ull, 12);
  x = swap_bits(x, 0x00cc00cc00cc00ccull, 6);
  return swap_bits(x, 0x0a0a0a0a0a0a0a0aull, 3);
}

// The R4T layouts' bytes: a block's qs[4j .. 4j + 3] (j < kVectors) <-> its row's lane of vector
// j, at lane + kStride * j (lane: 32h + 16s + 4r, kStride 64; Q4_1_R4T: 16s + 4r, kStride 32;
// Q8_0_R4T: 16s + 4r, kStride 32, kVectors 8; Q4_0_R16: 256s + 4r; repack.h)
template <bool to_tile, int kStride = 64, int kVectors = 4>
static inline void lane_bytes(uint8_t* qs, uint8_t* lane) {
  for (int j = 0; j < kVectors; ++j) {
    if (to_tile) std::memcpy(lane + kStride * j, qs + 4 * j, 4);
    else std::memcpy(qs + 4 * j, lane + kStride * j, 4);
  }
}

// Row r's two blocks b[0], b[1] of a Q4_1_R4T / Q5_1_R4T tile: their nibble lanes of the pair,
// their d and m at dm[4s + r] and dm[8 + 4s + r]
template <bool to_tile, typename B>
static inline void pair_min_lanes(B* b, int r, uint8_t* tile, half_t* dm) {
  for (int s = 0; s < 2; ++s) {
    lane_bytes<to_tile, 32>(b[s].qs, tile + 16 * s + 4 * r);
    half_t* d = &dm[4 * s + r];
    half_t* m = &dm[8 + 4 * s + r];
    if (to_tile) std::memcpy(d, &b[s].d, sizeof(half_t)), std::memcpy(m, &b[s].m, sizeof(half_t));
    else std::memcpy(&b[s].d, d, sizeof(half_t)), std::memcpy(&b[s].m, m, sizeof(half_t));
  }
}

// Block k of row r in a Q4_0_R4T / Q5_0_R4T tile: its nibble lane (pair k / 2, half k % 2), its
// scale at scales[4r + k]
template <bool to_tile, typename B>
static inline void block_lanes(B& b, int r, int k, uint8_t* tile, half_t* scales) {
  lane_bytes<to_tile>(b.qs, tile + 32 * (k / 2) + 16 * (k % 2) + 4 * r);
  if (to_tile) std::memcpy(&scales[4 * r + k], &b.d, sizeof(half_t));
  else std::memcpy(&b.d, &scales[4 * r + k], sizeof(half_t));
}

// Two blocks' qh (qh0, qh1: row r's blocks s = 0, 1 of a pair) <-> their 8 plane bytes, at planes
// (s = 0) and planes + 16 (s = 1): one 64-bit transpose
template <bool to_tile>
static inline void plane_bytes(uint8_t* qh0, uint8_t* qh1, uint8_t* planes) {
  uint32_t half[2];
  std::memcpy(&half[0], to_tile ? qh0 : planes, 4);
  std::memcpy(&half[1], to_tile ? qh1 : planes + 16, 4);
  const uint64_t x = half[0] | (uint64_t)half[1] << 32;
  const uint64_t y = to_tile ? qh_to_planes(x) : planes_to_qh(x);
  half[0] = (uint32_t)y, half[1] = (uint32_t)(y >> 32);
  std::memcpy(to_tile ? planes : qh0, &half[0], 4);
  std::memcpy(to_tile ? planes + 16 : qh1, &half[1], 4);
}

// Q4_1_R4T: the lanes of one pair, then d and m of its 8 (row, block) lanes at 128
template <bool to_tile>
void tile_q4_1t(block_q4_1* rows, int64_t row_blocks, uint8_t* tile) {
  for (int r = 0; r < 4; ++r)
    pair_min_lanes<to_tile>(&rows[r * row_blocks], r, tile, reinterpret_cast<half_t*>(tile + 128));
}

// Q5_1_R4T: Q4_1_R4T's lanes, the pair's planes at 128, d and m at 160
template <bool to_tile>
void tile_q5_1t(block_q5_1* rows, int64_t row_blocks, uint8_t* tile) {
  for (int r = 0; r < 4; ++r) {
    block_q5_1* b = &rows[r * row_blocks];
    plane_bytes<to_tile>(b[0].qh, b[1].qh, tile + 128 + 4 * r);
    pair_min_lanes<to_tile>(b, r, tile, reinterpret_cast<half_t*>(tile + 160));
  }
}

// Q4_0_R4T: the nibble bytes four at a time into their row's lane, the scales as in Q4_0_R4
template <bool to_tile>
void tile_q4_0t(block_q4_0* rows, int64_t row_blocks, uint8_t* tile) {
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < 4; ++k)
      block_lanes<to_tile>(rows[r * row_blocks + k], r, k, tile, reinterpret_cast<half_t*>(tile + 256));
}

// Q5_0_R4T: Q4_0_R4T's lanes, the 5th bits into bit planes, the scales at 320
template <bool to_tile>
void tile_q5_0t(block_q5_0* rows, int64_t row_blocks, uint8_t* tile) {
  for (int r = 0; r < 4; ++r)
    for (int h = 0; h < 2; ++h) {  // blocks 2h + s, s = 0, 1
      block_q5_0* b = &rows[r * row_blocks + 2 * h];
      plane_bytes<to_tile>(b[0].qh, b[1].qh, tile + 256 + 32 * h + 4 * r);
      for (int s = 0; s < 2; ++s) block_lanes<to_tile>(b[s], r, 2 * h + s, tile, reinterpret_cast<half_t*>(tile + 320));
    }
}

// Q4_0_R16: row r's block s qs[4j .. 4j + 3] into lane r of vector j of block s, its scale at
// 512 + 2(16s + r)
template <bool to_tile>
void tile_q4_0r16(block_q4_0* rows, int64_t row_blocks, uint8_t* tile) {
  half_t* scales = reinterpret_cast<half_t*>(tile + 512);
  for (int r = 0; r < 16; ++r)
    for (int s = 0; s < 2; ++s) {
      block_q4_0& b = rows[r * row_blocks + s];
      lane_bytes<to_tile>(b.qs, tile + 256 * s + 4 * r);
      if (to_tile) std::memcpy(&scales[16 * s + r], &b.d, sizeof(half_t));
      else std::memcpy(&b.d, &scales[16 * s + r], sizeof(half_t));
    }
}

// Q8_0_R4T: the signed bytes four at a time into their row's lane of the eight vectors, the scales
// in the lanes' order at 256
template <bool to_tile>
void tile_q8_0t(block_q8_0* rows, int64_t row_blocks, uint8_t* tile) {
  half_t* scales = reinterpret_cast<half_t*>(tile + 256);
  for (int r = 0; r < 4; ++r)
    for (int s = 0; s < 2; ++s) {
      block_q8_0& b = rows[r * row_blocks + s];
      lane_bytes<to_tile, 32, 8>(reinterpret_cast<uint8_t*>(b.qs), tile + 16 * s + 4 * r);
      if (to_tile) std::memcpy(&scales[4 * s + r], &b.d, sizeof(half_t));
      else std::memcpy(&b.d, &scales[4 * s + r], sizeof(half_t));
    }
}

// Q4_K_R4 and Q5_K_R4: the 4 headers (d, dmin, the packed scales and mins: 16 bytes), then each
// row's rest of the block (Q4_K: qs; Q5_K: qh, qs) in turn
template <typename B, bool to_tile>
void tile_k(B* rows, int64_t row_blocks, uint8_t* tile) {
  constexpr size_t kHeader = offsetof(B, scales) + sizeof(B::scales), kRest = sizeof(B) - kHeader;
  static_assert(kHeader == 16, "K-quant header");
  for (int r = 0; r < 4; ++r) {
    uint8_t* b = reinterpret_cast<uint8_t*>(&rows[r * row_blocks]);
    if (to_tile) {
      std::memcpy(tile + 16 * r, b, kHeader);
      std::memcpy(tile + 64 + kRest * r, b + kHeader, kRest);
    } else {
      std::memcpy(b, tile + 16 * r, kHeader);
      std::memcpy(b + kHeader, tile + 64 + kRest * r, kRest);
    }
  }
}

// kBlocks: blocks of each row in a tile; kRows: rows of a tile (a group's). Each tile where
// repack_tile_at puts it.
template <typename Block, int kBlocks, int kBlockElems, void (*Tile)(Block*, int64_t, uint8_t*), int kRows = 4>
void convert(int32_t layout, Block* stored, int64_t n_rows, int64_t n_cols, uint8_t* tiles) {
  const int64_t row_blocks = n_cols / kBlockElems, tiles_per_group = row_blocks / kBlocks;
  const size_t tile_bytes = kRows * kBlocks * sizeof(Block);
  for (int64_t group = 0; group < n_rows / kRows; ++group)
    for (int64_t t = 0; t < tiles_per_group; ++t)
      Tile(stored + group * kRows * row_blocks + kBlocks * t, row_blocks,
           tiles + repack_tile_at(layout, group, t, n_cols) * tile_bytes);
}

template <bool to_tile>
void convert_layout(int32_t layout, void* stored, int64_t n_rows, int64_t n_cols, void* tiles) {
  if (!repack_fits(layout, n_rows, n_cols))
    throw std::invalid_argument("repack: " + std::to_string(n_rows) + " x " + std::to_string(n_cols) +
                                " is not a multiple of " + std::to_string(repack_rows_of(layout)) + " x " +
                                std::to_string(repack_cols(layout)));
  uint8_t* t = static_cast<uint8_t*>(tiles);
  switch (layout) {
    case QC_LAYOUT_Q4_0_R4:
      convert<block_q4_0, 4, 32, tile_q4_0<to_tile>>(layout, static_cast<block_q4_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q8_0_R4:
      convert<block_q8_0, 4, 32, tile_q8_0<to_tile>>(layout, static_cast<block_q8_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q8_0_R4T:
      convert<block_q8_0, 2, 32, tile_q8_0t<to_tile>>(layout, static_cast<block_q8_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q5_0_R4T:
      convert<block_q5_0, 4, 32, tile_q5_0t<to_tile>>(layout, static_cast<block_q5_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q4_0_R4T:
      convert<block_q4_0, 4, 32, tile_q4_0t<to_tile>>(layout, static_cast<block_q4_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q4_0_R16:
      convert<block_q4_0, 2, 32, tile_q4_0r16<to_tile>, 16>(layout, static_cast<block_q4_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q4_1_R4T:
      convert<block_q4_1, 2, 32, tile_q4_1t<to_tile>>(layout, static_cast<block_q4_1*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q5_1_R4T:
      convert<block_q5_1, 2, 32, tile_q5_1t<to_tile>>(layout, static_cast<block_q5_1*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q4_K_R4:
      convert<block_q4_K, 1, QK_K, tile_k<block_q4_K, to_tile>>(layout, static_cast<block_q4_K*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q5_K_R4:
      convert<block_q5_K, 1, QK_K, tile_k<block_q5_K, to_tile>>(layout, static_cast<block_q5_K*>(stored), n_rows, n_cols, t);
      break;
    default:
      throw std::invalid_argument("repack: unknown layout " + std::to_string(layout));
  }
}

}  // namespace

void repack_rows(int32_t layout, const void* src, int64_t n_rows, int64_t n_cols, void* dst) {
  // the stored rows are only read on this direction
  convert_layout<true>(layout, const_cast<void*>(src), n_rows, n_cols, dst);
}

void unrepack_rows(int32_t layout, const void* src, int64_t n_rows, int64_t n_cols, void* dst) {
  convert_layout<false>(layout, dst, n_rows, n_cols, const_cast<void*>(src));
}

}  // namespace qc
