// What the fused attention kernels (avx512/attn_tiles.h: f32/f16 caches, avx2/attn_tiles.h: f32,
// f16, q8_0, q4_0) share: the tile shapes and the attn_fn that runs a path's tile kernel over a
// call's queries. A path's kernel is Tiles::run<NQ, K, V> (TileFns below): keys [i_begin, i_end)
// of a part of n_keys keys for NQ <= 8 queries q, their state m, l (NQ), acc (NQ, head_dim); s (128)
// and c (8) scratch; with pf it prefetches the rows kPrefetch keys ahead. Included inside each
// path's namespace by its ops.cpp.
#pragma once

// Query lanes of a group of NQ queries: the power of two >= NQ.
template <int NQ>
constexpr int group_width = NQ <= 1 ? 1 : NQ <= 2 ? 2 : NQ <= 4 ? 4 : 8;
// Keys per tile for G query lanes: 16, or 64 / G for 1 or 2 (their tiles' softmax chains would
// leave the core idle): scores of at most 128 floats, and a divisor of kAttnBlock (parts' starts).
template <int G>
constexpr int tile_keys = G >= 4 ? 16 : 64 / G;
static_assert(kAttnBlock % 64 == 0, "tiles must not straddle a part's start");
// Per 16 keys scored, the rows of the 16 keys this far ahead are asked for (the hardware's own
// prefetch does not keep up here; larger bursts or distances were slower).
constexpr int kPrefetch = 32;

// A path's tile kernels Tiles::run<NQ, K, V> by NQ = 1..8; K, V are the kernel's own cache
// parameters (avx512: whether K, V are f16; avx2: the cache types, any of f32, f16, q8_0, q4_0,
// then with head_dim / 32 * 128 floats of its own scratch past c).
template <class Tiles, auto K, auto V>
struct TileFns {
  typedef void (*fn)(const float*, const uint8_t*, size_t, const uint8_t*, size_t, int64_t, int64_t, int64_t, bool, int,
                     float, float*, float*, float*, float*, float*);
  static constexpr fn tiles[9] = {nullptr,
                                  Tiles::template run<1, K, V>,
                                  Tiles::template run<2, K, V>,
                                  Tiles::template run<3, K, V>,
                                  Tiles::template run<4, K, V>,
                                  Tiles::template run<5, K, V>,
                                  Tiles::template run<6, K, V>,
                                  Tiles::template run<7, K, V>,
                                  Tiles::template run<8, K, V>};
};

// attn_fn (kernels.h) over Fns::tiles: up to 8 queries over all keys in one call; more in groups
// of 8 per 64 keys (those rows in L1 for the later groups).
template <class Fns>
void attn_tiles(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v, size_t v_row_bytes,
                int64_t n_keys, int head_dim, float scale, float* m, float* l, float* acc, float* scratch) {
  float* s = scratch;  // (128) one tile's scores, then probabilities
  float* c = s + 128;  // (8) rescale of the old state; then the kernel's own scratch
  const uint8_t* kb = static_cast<const uint8_t*>(k);
  const uint8_t* vb = static_cast<const uint8_t*>(v);
  if (n_q <= 8) {
    Fns::tiles[n_q](q, kb, k_row_bytes, vb, v_row_bytes, n_keys, 0, n_keys, true, head_dim, scale, m, l, acc, s, c);
    return;
  }
  for (int64_t i0 = 0; i0 < n_keys; i0 += 64)
    for (int j0 = 0; j0 < n_q; j0 += 8) {
      const int nq = n_q - j0 < 8 ? n_q - j0 : 8;
      Fns::tiles[nq](q + (int64_t)j0 * head_dim, kb, k_row_bytes, vb, v_row_bytes, n_keys, i0,
                     i0 + 64 < n_keys ? i0 + 64 : n_keys, j0 == 0, head_dim, scale, m + j0, l + j0,
                     acc + (int64_t)j0 * head_dim, s, c);
    }
}

// attn_fn for f32/f16 K and V caches through Tiles::run<NQ, KF16, VF16>.
template <class Tiles, int32_t KT, int32_t VT>
void attn_float(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v, size_t v_row_bytes,
                int64_t n_keys, int head_dim, float scale, float* m, float* l, float* acc, float* scratch) {
  attn_tiles<TileFns<Tiles, KT == GGML_F16, VT == GGML_F16>>(q, n_q, k, k_row_bytes, v, v_row_bytes, n_keys, head_dim,
                                                              scale, m, l, acc, scratch);
}

// attn_fn for any K and V cache types through Tiles::run<NQ, KT, VT>.
template <class Tiles, int32_t KT, int32_t VT>
void attn_typed(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v, size_t v_row_bytes,
                int64_t n_keys, int head_dim, float scale, float* m, float* l, float* acc, float* scratch) {
  attn_tiles<TileFns<Tiles, KT, VT>>(q, n_q, k, k_row_bytes, v, v_row_bytes, n_keys, head_dim, scale, m, l, acc,
                                     scratch);
}

// Registers a path's fused tiles for the four f32/f16 K, V pairs.
#define QC_SET_ATTN_FLOAT(k, Tiles)                                                  \
  set_attn(k, GGML_F32, GGML_F32, QC_FN(attn_float<Tiles, GGML_F32, GGML_F32>)); \
  set_attn(k, GGML_F32, GGML_F16, QC_FN(attn_float<Tiles, GGML_F32, GGML_F16>)); \
  set_attn(k, GGML_F16, GGML_F32, QC_FN(attn_float<Tiles, GGML_F16, GGML_F32>)); \
  set_attn(k, GGML_F16, GGML_F16, QC_FN(attn_float<Tiles, GGML_F16, GGML_F16>));

// Registers a path's fused tiles (run<NQ, KT, VT>) for the 16 K, V pairs of f32, f16, q8_0, q4_0.
#define QC_SET_ATTN_TILES_K(k, Tiles, KT)                                \
  set_attn(k, KT, GGML_F32, QC_FN(attn_typed<Tiles, KT, GGML_F32>));   \
  set_attn(k, KT, GGML_F16, QC_FN(attn_typed<Tiles, KT, GGML_F16>));   \
  set_attn(k, KT, GGML_Q8_0, QC_FN(attn_typed<Tiles, KT, GGML_Q8_0>)); \
  set_attn(k, KT, GGML_Q4_0, QC_FN(attn_typed<Tiles, KT, GGML_Q4_0>));
#define QC_SET_ATTN_TILES(k, Tiles)             \
  QC_SET_ATTN_TILES_K(k, Tiles, GGML_F32)       \
  QC_SET_ATTN_TILES_K(k, Tiles, GGML_F16)       \
  QC_SET_ATTN_TILES_K(k, Tiles, GGML_Q8_0)      \
  QC_SET_ATTN_TILES_K(k, Tiles, GGML_Q4_0)
