#include "repack.h"

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>

#include "blocks.h"

namespace qc {

int32_t repack_layout_of(int32_t wtype) {
  switch (wtype) {
    case GGML_Q4_0: return QC_LAYOUT_Q4_0_R4;
    case GGML_Q8_0: return QC_LAYOUT_Q8_0_R4;
    case GGML_Q4_K: return QC_LAYOUT_Q4_K_R4;
    case GGML_Q5_0: return QC_LAYOUT_Q5_0_R4;
    default: return QC_LAYOUT_STORED;
  }
}

int32_t repack_base_type(int32_t layout) {
  switch (layout) {
    case QC_LAYOUT_Q4_0_R4: return GGML_Q4_0;
    case QC_LAYOUT_Q8_0_R4: return GGML_Q8_0;
    case QC_LAYOUT_Q4_K_R4: return GGML_Q4_K;
    case QC_LAYOUT_Q5_0_R4: return GGML_Q5_0;
    default: return -1;
  }
}

namespace {

// One tile's bytes <-> the blocks of a quad it covers: rows[r * row_blocks + k] is row r's block k
// of the tile (4 blocks of 32, or 1 super-block). to_tile: stored -> tile, else back.
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

template <bool to_tile>
void tile_q5_0(block_q5_0* rows, int64_t row_blocks, uint8_t* tile) {
  half_t* scales = reinterpret_cast<half_t*>(tile + 320);
  for (int r = 0; r < 4; ++r) {
    for (int k = 0; k < 4; ++k) {
      block_q5_0& b = rows[r * row_blocks + k];
      uint8_t* q = tile + 64 * r + 16 * k;
      uint8_t* lo = tile + 256 + 16 * r + 2 * k;  // qh bits 0..15
      uint8_t* hi = lo + 8;                       // bits 16..31
      if (to_tile) {
        std::memcpy(q, b.qs, 16);
        std::memcpy(lo, b.qh, 2);
        std::memcpy(hi, b.qh + 2, 2);
        std::memcpy(&scales[4 * r + k], &b.d, sizeof(half_t));
      } else {
        std::memcpy(b.qs, q, 16);
        std::memcpy(b.qh, lo, 2);
        std::memcpy(b.qh + 2, hi, 2);
        std::memcpy(&b.d, &scales[4 * r + k], sizeof(half_t));
      }
    }
  }
}

template <bool to_tile>
void tile_q4_K(block_q4_K* rows, int64_t row_blocks, uint8_t* tile) {
  constexpr size_t kHeader = offsetof(block_q4_K, qs);  // d, dmin, scales: 16 bytes
  static_assert(kHeader == 16 && sizeof(block_q4_K) == kHeader + 128, "block_q4_K layout");
  for (int r = 0; r < 4; ++r) {
    uint8_t* b = reinterpret_cast<uint8_t*>(&rows[r * row_blocks]);
    if (to_tile) {
      std::memcpy(tile + 16 * r, b, kHeader);
      std::memcpy(tile + 64 + 128 * r, b + kHeader, 128);
    } else {
      std::memcpy(b, tile + 16 * r, kHeader);
      std::memcpy(b + kHeader, tile + 64 + 128 * r, 128);
    }
  }
}

// kBlocks: blocks of each row in a tile.
template <typename Block, int kBlocks, int kBlockElems, void (*Tile)(Block*, int64_t, uint8_t*)>
void convert(Block* stored, int64_t n_rows, int64_t n_cols, uint8_t* tiles) {
  const int64_t row_blocks = n_cols / kBlockElems, tiles_per_quad = row_blocks / kBlocks;
  const size_t tile_bytes = 4 * kBlocks * sizeof(Block);
  for (int64_t quad = 0; quad < n_rows / 4; ++quad)
    for (int64_t t = 0; t < tiles_per_quad; ++t)
      Tile(stored + quad * 4 * row_blocks + kBlocks * t, row_blocks, tiles + (quad * tiles_per_quad + t) * tile_bytes);
}

template <bool to_tile>
void convert_layout(int32_t layout, void* stored, int64_t n_rows, int64_t n_cols, void* tiles) {
  if (!repack_fits(layout, n_rows, n_cols))
    throw std::invalid_argument("repack: " + std::to_string(n_rows) + " x " + std::to_string(n_cols) +
                                " is not a multiple of 4 x " + std::to_string(repack_cols(layout)));
  uint8_t* t = static_cast<uint8_t*>(tiles);
  switch (layout) {
    case QC_LAYOUT_Q4_0_R4:
      convert<block_q4_0, 4, 32, tile_q4_0<to_tile>>(static_cast<block_q4_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q8_0_R4:
      convert<block_q8_0, 4, 32, tile_q8_0<to_tile>>(static_cast<block_q8_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q5_0_R4:
      convert<block_q5_0, 4, 32, tile_q5_0<to_tile>>(static_cast<block_q5_0*>(stored), n_rows, n_cols, t);
      break;
    case QC_LAYOUT_Q4_K_R4:
      convert<block_q4_K, 1, QK_K, tile_q4_K<to_tile>>(static_cast<block_q4_K*>(stored), n_rows, n_cols, t);
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
