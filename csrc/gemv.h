// Shared pieces of the decode kernels (WeightKernels::gemv) that read several weight rows per
// pass: the passes over the rows, and the prefetch of the rows that come next.
//
// Kernels that read R rows side by side (a few dozen bytes of each per step) defeat the hardware
// prefetchers: streamed from memory, the AVX-512 4-row Q4_0 kernel ran at half the speed of a
// one-row-at-a-time loop, though twice as fast in cache. So while a tile of R rows is read, the
// next tile (the same size, contiguous after it) is prefetched in step: at step g, its bytes
// [g, g + 1) * kStep, kStep being the bytes of the R rows consumed per step; and the tile after
// that one likewise into L2, which keeps more of the stream in flight. Prefetches never fault, so
// the tiles after the last rows need no special case. The next tile goes into L1 for tiles up to
// kPrefetchL1Tile bytes, into L2 for larger ones (a larger tile pushed the activations out of L1).
// The figures behind each choice: bench/README.md, "Kernel design measurements".
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "repack.h"

namespace qc {

constexpr size_t kPrefetchL1Tile = 8192;

// [p, p + n) into L1, once the loads before it in program order are issued: the compiler may not
// move loads across it. Scheduled by gcc ahead of a tile's own loads, the prefetches held those
// loads up and the AVX2 decode ran slower (bench/README.md, "Tile prefetches after the tile's loads").
static inline void prefetch_after_loads(const uint8_t* p, size_t n) {
  __asm__ volatile("" ::: "memory");
  for (size_t c = 0; c < n; c += 64) __builtin_prefetch(p + c, 0, 3);
}

// The AVX2 decode passes over a layout's tiles (and the Q6_K rows block by block), one activation
// row or several, prefetch them this far ahead into L2: four rows prefetching 2 KB ahead into L1
// took up to twice as long from memory on Zen 4 (bench/README.md, "Several-row tile prefetch on
// avx512"), and one row ran faster there too ("One-row tile prefetch into L2 on AVX2"); the avx512
// one-row passes leave it to the hardware (avx512/gemv.cpp, prefetch_ahead).
constexpr size_t kTilePrefetch = 8192;

// The tiles ahead of a pass at [p, p + n), after the loads before it in program order (as
// prefetch_after_loads).
static inline void prefetch_tiles_ahead(const uint8_t* p, size_t n) {
  __asm__ volatile("" ::: "memory");
  for (size_t c = 0; c < n; c += 64) __builtin_prefetch(p + kTilePrefetch + c, 0, 2);
}

// At step g of a tile of tile_bytes: step g of the next tile (at next) and of the one after it.
// The loop counts to the constant kStep: over [g * kStep, (g + 1) * kStep) gcc 12 deleted the
// prefetches from some kernels' loops (the stored Q4_K gemv's, issue #16); not unrolled, as before.
template <size_t kStep>
static inline void prefetch_tiles(const uint8_t* next, size_t tile_bytes, int64_t g, bool to_l1) {
  const uint8_t* p = next + (size_t)g * kStep;
#pragma GCC unroll 1
  for (size_t off = 0; off < kStep; off += 64) {
    if (to_l1) __builtin_prefetch(p + off, 0, 3);
    else __builtin_prefetch(p + off, 0, 2);
    __builtin_prefetch(p + tile_bytes + off, 0, 2);
  }
}

// The passes of a kernel reading up to 4 rows at a time over n_rows rows: pass(R, r) reads rows
// r .. r + R - 1, R a std::integral_constant (so the kernel can take it as a template argument):
// passes of 4, then one pass of the 1..3 left. Only the passes of 4 should prefetch (the rows
// after the last pass are not read).
template <typename Pass>
static inline void row_passes(int n_rows, Pass&& pass) {
  int r = 0;
  for (; r + 4 <= n_rows; r += 4) pass(std::integral_constant<int, 4>(), r);
  switch (n_rows - r) {
    case 3: pass(std::integral_constant<int, 3>(), r); break;
    case 2: pass(std::integral_constant<int, 2>(), r); break;
    case 1: pass(std::integral_constant<int, 1>(), r); break;
    default: break;
  }
}

// The activation rows of a several-row pass, kMaxA at a time and then the 1 .. kMaxA - 1 left:
// pass(A, i) takes rows i .. i + A - 1, A a std::integral_constant. The first pass over a set of
// weight rows loads them, the others find them in L1.
template <int kMaxA, typename Pass>
static inline void a_passes(int n_a, Pass&& pass) {
  static_assert(kMaxA >= 1 && kMaxA <= 4, "1 .. 4 activation rows per pass");
  int i = 0;
  for (; i + kMaxA <= n_a; i += kMaxA) pass(std::integral_constant<int, kMaxA>(), i);
  switch (n_a - i) {
    case 3: if constexpr (kMaxA > 3) pass(std::integral_constant<int, 3>(), i); break;
    case 2: if constexpr (kMaxA > 2) pass(std::integral_constant<int, 2>(), i); break;
    case 1: if constexpr (kMaxA > 1) pass(std::integral_constant<int, 1>(), i); break;
    default: break;
  }
}

// The passes of a gemv_rows kernel (kernels.h) over n_rows weight rows x n_a activation rows:
// per pass of weight rows (row_passes), the activation rows by a_passes: rows(R, A, r, i) reads
// weight rows r .. r + R - 1 for activation rows i .. i + A - 1, R and A std::integral_constants.
template <int kMaxA, typename Rows>
static inline void row_passes_a(int n_rows, int n_a, Rows&& rows) {
  row_passes(n_rows, [&](auto R, int r) { a_passes<kMaxA>(n_a, [&](auto A, int i) { rows(R, A, r, i); }); });
}

// A quad layout's tiles (repack.h: quads in slabs of repack_rows_of(layout) rows, panels of
// repack_panel_cols) slab by slab and in a slab panel by panel, for a kernel that keeps one
// accumulator (Acc, kAccBytes) per (quad, activation row) from panel to panel: for n_rows rows of
// n columns (wrb bytes each) from w, in tiles of tile_bytes, piece(acc, tile, g0, g1) reads tiles
// g0 .. g1 - 1 of `quads` consecutive quads of a slab (1, or 2 where the slab's quad count is even;
// tile: the first quad's first tile, the next quad's g1 - g0 tiles after it in its panel) into
// acc[k * n_a + i] for quad k and activation row i < n_a; then done(acc, quad) has that quad's sums
// of every activation row.
template <size_t kAccBytes, typename Acc, typename Piece, typename Done>
static inline void slab_panels(int32_t layout, int64_t n, const uint8_t* w, size_t wrb, int n_rows, size_t tile_bytes,
                               int n_a, Piece&& piece, Done&& done, int quads = 1) {
  struct alignas(kAccBytes) Bytes {
    uint8_t b[kAccBytes];
  };
  static_assert(sizeof(Acc) == kAccBytes, "one accumulator");
  const int slab = (int)repack_rows_of(layout) / 4;  // quads per slab
  const int64_t n_tiles = n / repack_cols(layout), panel_tiles = repack_panel_cols(layout) / repack_cols(layout);
  const int64_t panel = panel_tiles && panel_tiles < n_tiles ? panel_tiles : n_tiles;
  static thread_local std::vector<Bytes> buf;  // [quad of the slab][activation row]; grows, then stays
  if (buf.size() < (size_t)(slab * n_a)) buf.resize((size_t)(slab * n_a));
  Acc* acc = reinterpret_cast<Acc*>(buf.data());
  for (int s = 0; s < n_rows / (4 * slab); ++s) {
    const uint8_t* first = w + (size_t)s * 4 * slab * wrb;
    for (int k = 0; k < slab * n_a; ++k) acc[k] = Acc{};
    for (int64_t g0 = 0; g0 < n_tiles; g0 += panel) {
      const int64_t g1 = n_tiles - g0 < panel ? n_tiles : g0 + panel;
      for (int q = 0; q < slab; q += quads)
        piece(acc + q * n_a, first + (size_t)panel_tile(q, g0, slab, n_tiles, panel) * tile_bytes, g0, g1);
    }
    for (int q = 0; q < slab; ++q) done(acc + q * n_a, s * slab + q);
  }
}

}  // namespace qc
