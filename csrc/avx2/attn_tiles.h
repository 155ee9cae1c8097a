// The AVX2 attention over K and V caches of f32, f16, q8_0 or q4_0 rows (KvRow below: a quantized
// row's elements dequantized exactly into floats, so a key's score takes the same float
// arithmetic as from an f32 cache): csrc/avx512/attn_tiles.h's fused pass per tile of keys (16; 32 or 64 for 2 or 1 queries) in 8-lane vectors. Per group of
// up to 8 query heads: the tile's scores key-major (G lanes per key, G = the group's queries
// rounded up to a power of two), from 8 dot-product accumulators summed together by one shuffle
// tree per 8 / G keys; the
// online-softmax step vectorised over the group's queries; each tile's values summed from zero
// and added to the rescaled acc. Every (query, key) score takes the same instructions whatever
// the group, the key's place in a tile or the caller's split (parts start at multiples of
// kAttnBlock, a multiple of the tile). Elements past a multiple of 8 (head_dim % 8) go through
// the same vectors, zero-padded. Included by ops.cpp inside its namespace (exp_ps, tail_mask, load8).
#pragma once

#include "../attn_tiles.h"

// x with lanes l and l ^ S exchanged (S = 4, 2, 1).
template <int S>
static inline __m256 swap_lanes(__m256 x) {
  if constexpr (S == 4) return _mm256_permute2f128_ps(x, x, 0x01);
  if constexpr (S == 2) return _mm256_permute_ps(x, 0x4E);
  return _mm256_permute_ps(x, 0xB1);
}

// Lanes l without bit S: x_l + x_(l^S); with it: y_l + y_(l^S) (one shuffle; the blends are cheap).
template <int S>
static inline __m256 pair_sums(__m256 x, __m256 y) {
  constexpr int hi = S == 4 ? 0xF0 : S == 2 ? 0xCC : 0xAA;
  return _mm256_add_ps(_mm256_blend_ps(x, y, hi), swap_lanes<S>(_mm256_blend_ps(y, x, hi)));
}

// The lane sums of a[0 .. 7] in one vector: lane l holds a[rev3(l)]'s (rev3: l's 3 bits
// reversed); every sum in the same order (lanes l ^ 4 added, then ^ 2, ^ 1).
constexpr int rev3(int l) { return (l & 1) << 2 | (l & 2) | (l & 4) >> 2; }
static inline __m256 reduce8(const __m256* a) {
  const __m256 b0 = pair_sums<4>(a[0], a[1]), b1 = pair_sums<4>(a[2], a[3]);
  const __m256 b2 = pair_sums<4>(a[4], a[5]), b3 = pair_sums<4>(a[6], a[7]);
  return pair_sums<1>(pair_sums<2>(b0, b1), pair_sums<2>(b2, b3));
}

// Every lane = op over the lanes of x with the same index mod G (G a power of two <= 8).
template <int G, typename Op>
static inline __m256 fold_lanes(__m256 x, Op op) {
  if constexpr (G <= 4) x = op(x, swap_lanes<4>(x));
  if constexpr (G <= 2) x = op(x, swap_lanes<2>(x));
  if constexpr (G <= 1) x = op(x, swap_lanes<1>(x));
  return x;
}

// op over x[0 .. N) lane by lane, as a tree (N a power of two).
template <int N, typename Op>
static inline __m256 tree(const __m256* x, Op op) {
  if constexpr (N == 1) return x[0];
  else return op(tree<N / 2>(x, op), tree<N / 2>(x + N / 2, op));
}

// 8 elements of a row from element idx as floats, of which the first n (< 8) are read, the rest 0.
template <bool F16>
static inline __m256 load8_part(const void* base, int64_t idx, int n) {
  alignas(32) float x[8] = {};
  for (int e = 0; e < n; ++e)
    x[e] = F16 ? _cvtsh_ss(static_cast<const half_t*>(base)[idx + e]) : static_cast<const float*>(base)[idx + e];
  return _mm256_load_ps(x);
}

// A cache row (bytes from its start) of type T as floats. kBlock elements share a scale; at(row, d)
// is where the block of element d starts (d a multiple of kBlock), scale(blk) its scale, key(blk,
// e, sc) its elements e .. e + 7 exactly (binary16 scale times int8, or times nibble - 8, is exact
// in float); value(row, d) elements d .. d + 7 without the scale (the tile's value sums fold each
// row's block scale into its probabilities, scaled_probs).
template <int32_t T>
struct KvRow;
template <int32_t T>
struct KvRowFloat {
  static constexpr int kBlock = 8;
  struct Scale {};
  static const uint8_t* at(const uint8_t* row, int d) { return row + (size_t)d * (T == GGML_F16 ? 2 : 4); }
  static Scale scale(const uint8_t*) { return {}; }
  static __m256 key(const uint8_t* blk, int e, Scale) { return load8<T == GGML_F16>(blk, e); }
  static __m256 value(const uint8_t* row, int d) { return load8<T == GGML_F16>(row, d); }
};
template <>
struct KvRow<GGML_F32> : KvRowFloat<GGML_F32> {};
template <>
struct KvRow<GGML_F16> : KvRowFloat<GGML_F16> {};
template <>
struct KvRow<GGML_Q8_0> {
  static constexpr int kBlock = 32;
  typedef __m256 Scale;
  static const uint8_t* at(const uint8_t* row, int d) { return row + d / 32 * sizeof(block_q8_0); }
  static Scale scale(const uint8_t* blk) { return _mm256_set1_ps(_cvtsh_ss(reinterpret_cast<const block_q8_0*>(blk)->d)); }
  static __m256 ints(const uint8_t* blk, int e) {
    const int8_t* qs = reinterpret_cast<const block_q8_0*>(blk)->qs + e;
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs))));
  }
  static __m256 key(const uint8_t* blk, int e, Scale sc) { return _mm256_mul_ps(ints(blk, e), sc); }
  static __m256 value(const uint8_t* row, int d) { return ints(at(row, d), d % 32); }
};
template <>
struct KvRow<GGML_Q4_0> {
  static constexpr int kBlock = 32;
  struct Scale {
    __m256 d, m8d;  // d, -8 d
  };
  static const uint8_t* at(const uint8_t* row, int d) { return row + d / 32 * sizeof(block_q4_0); }
  static Scale scale(const uint8_t* blk) {
    const __m256 x = _mm256_set1_ps(_cvtsh_ss(reinterpret_cast<const block_q4_0*>(blk)->d));
    return {x, _mm256_mul_ps(x, _mm256_set1_ps(-8.0f))};
  }
  // the nibbles 0 .. 15 of the block's elements e .. e + 7 (low nibbles its first 16, high the rest)
  static __m256 nibbles(const uint8_t* blk, int e) {
    const uint8_t* qs = reinterpret_cast<const block_q4_0*>(blk)->qs + e % 16;
    const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs)));
    return _mm256_cvtepi32_ps(e >= 16 ? _mm256_srli_epi32(x, 4) : _mm256_and_si256(x, _mm256_set1_epi32(15)));
  }
  static __m256 key(const uint8_t* blk, int e, Scale sc) { return _mm256_fmadd_ps(nibbles(blk, e), sc.d, sc.m8d); }
  static __m256 value(const uint8_t* row, int d) { return _mm256_sub_ps(nibbles(at(row, d), d % 32), _mm256_set1_ps(8.0f)); }
};

// s (TK G, TK = tile_keys<G>) = scale * q_j . k_i at s[i G + j] for the NQ queries q (NQ, head_dim) and keys i of
// the tile's rows k of type KT (kb bytes apart); keys nk.. (past the part's end, not read) -inf.
// Before keys i .. i + 15 the rows i .. i + 15 of pk / pv (kb / vb bytes apart, n_pf of them) are
// asked for: the caller's prefetch, spread over a long tile.
template <int NQ, int32_t KT>
static inline void tile_scores(float* s, int nk, const float* q, const uint8_t* k, int head_dim, float scale,
                               const uint8_t* pk, const uint8_t* pv, size_t kb, size_t vb, int64_t n_pf) {
  constexpr int G = group_width<NQ>, KB = 8 / G, TK = tile_keys<G>;
  typedef KvRow<KT> R;
  const int d8 = head_dim & ~7;  // quantized rows: head_dim, a multiple of 32
  for (int i = 0; i < TK; i += KB) {
    if (i % 16 == 0 && i < n_pf) {
      const int64_t np = n_pf - i < 16 ? n_pf - i : 16;
      prefetch_bytes(pk + i * kb, np * kb);
      prefetch_bytes(pv + i * vb, np * vb);
    }
    if (i >= nk) {
      _mm256_storeu_ps(s + i * G, _mm256_set1_ps(-INFINITY));
      continue;
    }
    const uint8_t* row[KB];
    QC_UNROLL for (int b = 0; b < KB; ++b) row[b] = k + (size_t)(i + b < nk ? i + b : i) * kb;
    __m256 acc[8];
    QC_UNROLL for (int a = 0; a < 8; ++a) acc[a] = _mm256_setzero_ps();
    auto step = [&](const __m256* kv, int d, const __m256i* qm) {  // qm: the last, partial chunk's lanes
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        const __m256 qv = qm ? _mm256_maskload_ps(q + j * head_dim + d, *qm) : _mm256_loadu_ps(q + j * head_dim + d);
        QC_UNROLL for (int b = 0; b < KB; ++b) acc[rev3(b * G + j)] = _mm256_fmadd_ps(qv, kv[b], acc[rev3(b * G + j)]);
      }
    };
    for (int d = 0; d < d8; d += R::kBlock) {
      const uint8_t* blk[KB];
      typename R::Scale sc[KB];
      QC_UNROLL for (int b = 0; b < KB; ++b) blk[b] = R::at(row[b], d), sc[b] = R::scale(blk[b]);
      QC_UNROLL for (int w = 0; w < R::kBlock; w += 8) {
        __m256 kv[KB];
        QC_UNROLL for (int b = 0; b < KB; ++b) kv[b] = R::key(blk[b], w, sc[b]);
        step(kv, d + w, nullptr);
      }
    }
    if constexpr (R::kBlock == 8)
      if (d8 < head_dim) {  // head_dim not a multiple of 8: the last elements zero-padded
        __m256 kv[KB];
        QC_UNROLL for (int b = 0; b < KB; ++b) kv[b] = load8_part<KT == GGML_F16>(row[b], d8, head_dim - d8);
        const __m256i qm = tail_mask(head_dim - d8);
        step(kv, d8, &qm);
      }
    const __m256 x = _mm256_mul_ps(reduce8(acc), _mm256_set1_ps(scale));
    const int valid = nk - i >= KB ? 8 : (nk - i) * G;
    _mm256_storeu_ps(s + i * G, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, _mm256_castsi256_ps(tail_mask(valid))));
  }
}

// The online-softmax step of a tile for NQ queries: s (TK G) scores -> exp(score - new max);
// m, l (NQ) updated; c (G) = exp(old max - new max), the rescale of the old acc.
template <int NQ>
static inline void tile_softmax(float* s, float* m, float* l, float* c) {
  constexpr int G = group_width<NQ>, V = tile_keys<G> * G / 8;  // V vectors of scores
  const __m256i live = tail_mask(NQ);
  // lane i G + j -> query j's m or l (the group's lanes past NQ 0)
  const __m256i by_query = _mm256_and_si256(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(G - 1));
  __m256 x[V];
  QC_UNROLL for (int g = 0; g < V; ++g) x[g] = _mm256_loadu_ps(s + 8 * g);
  __m256 mx = tree<V>(x, [](__m256 a, __m256 b) { return _mm256_max_ps(a, b); });
  mx = fold_lanes<G>(mx, [](__m256 a, __m256 b) { return _mm256_max_ps(a, b); });
  const __m256 m_old = _mm256_permutevar8x32_ps(_mm256_maskload_ps(m, live), by_query);
  const __m256 m_new = _mm256_max_ps(m_old, mx);
  const __m256 cv = exp_ps(_mm256_sub_ps(m_old, m_new));  // 0 before the first key (m = -inf)
  QC_UNROLL for (int g = 0; g < V; ++g) {
    x[g] = exp_ps(_mm256_sub_ps(x[g], m_new));
    _mm256_storeu_ps(s + 8 * g, x[g]);
  }
  __m256 sum = tree<V>(x, [](__m256 a, __m256 b) { return _mm256_add_ps(a, b); });
  sum = fold_lanes<G>(sum, [](__m256 a, __m256 b) { return _mm256_add_ps(a, b); });
  const __m256 l_old = _mm256_permutevar8x32_ps(_mm256_maskload_ps(l, live), by_query);
  _mm256_maskstore_ps(l, live, _mm256_add_ps(_mm256_mul_ps(l_old, cv), sum));
  _mm256_maskstore_ps(m, live, m_new);
  _mm256_maskstore_ps(c, live, cv);
}

// acc (NQ, head_dim) columns [d, d + 8 CW) = acc * c_j + sum_i p[i G + j] v_i over the tile's
// nk rows v of type VT (vb bytes apart; a quantized row's values unscaled, p scaled_probs' for the
// columns' block): NQ * CW accumulators from zero, added to the rescaled acc at the end (a tile's
// sum first). n_last < 8: the last chunk's columns (head_dim % 8, float rows only).
template <int NQ, int CW, int32_t VT>
static inline void tile_values_cols(float* acc, const float* p, const float* c, int nk, const uint8_t* v, size_t vb,
                                    int head_dim, int d, int n_last = 8) {
  constexpr int G = group_width<NQ>;
  __m256 a[NQ * CW];
  QC_UNROLL for (int e = 0; e < NQ * CW; ++e) a[e] = _mm256_setzero_ps();
  for (int i = 0; i < nk; ++i) {
    __m256 vv[CW];
    const uint8_t* row = v + (size_t)i * vb;
    QC_UNROLL for (int cc = 0; cc < CW; ++cc) {
      if constexpr (KvRow<VT>::kBlock == 8)
        vv[cc] = n_last < 8 ? load8_part<VT == GGML_F16>(row, d, n_last) : KvRow<VT>::value(row, d + 8 * cc);
      else
        vv[cc] = KvRow<VT>::value(row, d + 8 * cc);
    }
    QC_UNROLL for (int j = 0; j < NQ; ++j) {
      const __m256 pj = _mm256_broadcast_ss(p + i * G + j);
      QC_UNROLL for (int cc = 0; cc < CW; ++cc) a[j * CW + cc] = _mm256_fmadd_ps(pj, vv[cc], a[j * CW + cc]);
    }
  }
  const __m256i cm = tail_mask(n_last);
  QC_UNROLL for (int j = 0; j < NQ; ++j) {
    const __m256 cj = _mm256_set1_ps(c[j]);
    QC_UNROLL for (int cc = 0; cc < CW; ++cc) {
      float* o = acc + j * head_dim + d + 8 * cc;
      _mm256_maskstore_ps(o, cm, _mm256_add_ps(_mm256_mul_ps(_mm256_maskload_ps(o, cm), cj), a[j * CW + cc]));
    }
  }
}

// ps (head_dim / 32, TK G): the probabilities s (TK G) of the tile's keys times the block scales of
// their rows in a q8_0/q4_0 V (vb bytes apart); keys nk.. (probability 0, rows not read) 0.
template <int NQ, int32_t VT>
static inline void scaled_probs(float* ps, const float* s, int nk, const uint8_t* v, size_t vb, int head_dim) {
  constexpr int G = group_width<NQ>, KB = 8 / G, TK = tile_keys<G>;
  constexpr int kShift = G == 1 ? 0 : G == 2 ? 1 : G == 4 ? 2 : 3;
  const __m256i key_of_lane = _mm256_srli_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), kShift);
  alignas(32) float dv[TK + 8] = {};  // the keys' scales of one block (8 past the end: whole loads)
  for (int b = 0; b < head_dim / 32; ++b) {
    for (int i = 0; i < nk; ++i) dv[i] = _cvtsh_ss(*reinterpret_cast<const half_t*>(KvRow<VT>::at(v + (size_t)i * vb, 32 * b)));
    for (int i = nk; i < TK; ++i) dv[i] = 0.0f;
    QC_UNROLL for (int g = 0; g < TK * G / 8; ++g) {
      const __m256 d = G == 8 ? _mm256_broadcast_ss(dv + g) : _mm256_permutevar8x32_ps(_mm256_loadu_ps(dv + g * KB), key_of_lane);
      _mm256_storeu_ps(ps + b * TK * G + 8 * g, _mm256_mul_ps(_mm256_loadu_ps(s + 8 * g), d));
    }
  }
}

// This path's tile kernel for attn_typed (../attn_tiles.h says what run computes).
struct FusedTiles {
  template <int NQ, int32_t KT, int32_t VT>
  static void run(const float* q, const uint8_t* k, size_t k_row_bytes, const uint8_t* v, size_t v_row_bytes,
                  int64_t n_keys, int64_t i_begin, int64_t i_end, bool pf, int head_dim, float scale, float* m,
                  float* l, float* acc, float* s, float* c) {
    constexpr int G = group_width<NQ>, TK = tile_keys<G>;
    constexpr bool kQuantV = KvRow<VT>::kBlock == 32;
    // value columns per pass: with the value and broadcast registers, at most 16 in all (a
    // quantized V: within one block of 32, whose scaled probabilities the pass reads)
    constexpr int CW = NQ >= 5 ? 1 : kQuantV ? (NQ >= 3 ? 2 : 4) : NQ >= 3 ? 3 : NQ == 2 ? 4 : 8;
    float* ps = c + 8;  // quantized V: (head_dim / 32, TK G) scaled_probs
    const int d8 = head_dim & ~7;
    for (int64_t i0 = i_begin; i0 < i_end; i0 += TK) {
      const int nk = i_end - i0 < TK ? (int)(i_end - i0) : TK;
      const int64_t r = i0 + kPrefetch, n_pf = pf && r < n_keys ? n_keys - r : 0;  // the rows kPrefetch keys ahead
      tile_scores<NQ, KT>(s, nk, q, k + i0 * k_row_bytes, head_dim, scale, n_pf ? k + r * k_row_bytes : k,
                          n_pf ? v + r * v_row_bytes : v, k_row_bytes, v_row_bytes, n_pf);
      tile_softmax<NQ>(s, m, l, c);
      const uint8_t* vt = v + i0 * v_row_bytes;
      if constexpr (kQuantV) {
        scaled_probs<NQ, VT>(ps, s, nk, vt, v_row_bytes, head_dim);
        for (int d = 0; d < head_dim; d += 8 * CW)
          tile_values_cols<NQ, CW, VT>(acc, ps + d / 32 * TK * G, c, nk, vt, v_row_bytes, head_dim, d);
      } else {
        int d = 0;
        for (; d + 8 * CW <= d8; d += 8 * CW) tile_values_cols<NQ, CW, VT>(acc, s, c, nk, vt, v_row_bytes, head_dim, d);
        for (; d < d8; d += 8) tile_values_cols<NQ, 1, VT>(acc, s, c, nk, vt, v_row_bytes, head_dim, d);
        if (d < head_dim) tile_values_cols<NQ, 1, VT>(acc, s, c, nk, vt, v_row_bytes, head_dim, d, head_dim - d);
      }
    }
  }
};
