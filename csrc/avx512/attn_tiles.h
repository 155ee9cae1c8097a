// The AVX-512 attention over float K and V rows (f32 or f16 caches): one fused pass per tile of
// keys (16; 32 or 64 for 2 or 1 queries) instead of attn_groups.h's block loop. Per group of up
// to 8 query heads: the tile's scores key-major (G lanes per key, G = the group's queries rounded
// up to a power of two), from 16 dot-product accumulators summed together by one shuffle tree
// (no scalar writeback); the online-softmax step vectorised over the group's queries; the tile's
// values summed and added to the rescaled acc. Every (query, key) score takes the same
// instructions whatever the group, the key's place in a tile or the caller's split (parts start
// at multiples of kAttnBlock, a multiple of the tile), so batched and verifying passes reproduce
// plain decode. Included by ops.cpp inside its namespace (exp_ps, chunk_mask, load16 from there).
#pragma once

#include "../attn_tiles.h"

// x with lanes l and l ^ S exchanged (S = 8, 4, 2, 1).
template <int S>
static inline __m512 swap_lanes(__m512 x) {
  if constexpr (S == 8) return _mm512_shuffle_f32x4(x, x, 0x4E);
  if constexpr (S == 4) return _mm512_shuffle_f32x4(x, x, 0xB1);
  if constexpr (S == 2) return _mm512_permute_ps(x, 0x4E);
  return _mm512_permute_ps(x, 0xB1);
}

// Lanes l without bit S: x_l + x_(l^S); with it: y_l + y_(l^S) (one shuffle; the blends are cheap).
template <int S>
static inline __m512 pair_sums(__m512 x, __m512 y) {
  constexpr __mmask16 hi = S == 8 ? 0xFF00 : S == 4 ? 0xF0F0 : S == 2 ? 0xCCCC : 0xAAAA;
  return _mm512_add_ps(_mm512_mask_blend_ps(hi, x, y), swap_lanes<S>(_mm512_mask_blend_ps(hi, y, x)));
}

// The lane sums of a[0 .. 15] in one vector: lane l holds a[rev4(l)]'s (rev4: l's 4 bits
// reversed); every sum in the same order (lanes l ^ 8 added, then ^ 4, ^ 2, ^ 1), whichever
// accumulator it is.
constexpr int rev4(int l) { return (l & 1) << 3 | (l & 2) << 1 | (l & 4) >> 1 | (l & 8) >> 3; }
static inline __m512 reduce16(const __m512* a) {
  __m512 b[8], c[4], d[2];
  QC_UNROLL for (int i = 0; i < 8; ++i) b[i] = pair_sums<8>(a[2 * i], a[2 * i + 1]);
  QC_UNROLL for (int i = 0; i < 4; ++i) c[i] = pair_sums<4>(b[2 * i], b[2 * i + 1]);
  QC_UNROLL for (int i = 0; i < 2; ++i) d[i] = pair_sums<2>(c[2 * i], c[2 * i + 1]);
  return pair_sums<1>(d[0], d[1]);
}

// Every lane = op over the lanes of x with the same index mod G (G a power of two <= 16), the
// same order for each (partners at lane distance 8, 4, 2, 1 down to G).
template <int G, typename Op>
static inline __m512 fold_lanes(__m512 x, Op op) {
  if constexpr (G <= 8) x = op(x, _mm512_shuffle_f32x4(x, x, 0x4E));
  if constexpr (G <= 4) x = op(x, _mm512_shuffle_f32x4(x, x, 0xB1));
  if constexpr (G <= 2) x = op(x, _mm512_permute_ps(x, 0x4E));
  if constexpr (G <= 1) x = op(x, _mm512_permute_ps(x, 0xB1));
  return x;
}

// s (TK G, TK = tile_keys<G>) = scale * q_j . k_i at s[i G + j] for the NQ queries q (NQ, head_dim) and keys i of
// the tile's rows k (head_dim elements apart); keys nk.. (past the part's end, not read) -inf.
// Before keys i .. i + 15 the rows i .. i + 15 of pk / pv (kb / vb bytes apart, n_pf of them) are
// asked for: the caller's prefetch, spread over a long tile.
template <int NQ, bool F16>
static inline void tile_scores(float* s, int nk, const float* q, const void* k, int head_dim, float scale,
                               const uint8_t* pk, const uint8_t* pv, size_t kb, size_t vb, int64_t n_pf) {
  constexpr int G = group_width<NQ>, KB = 16 / G, TK = tile_keys<G>;
  for (int i = 0; i < TK; i += KB) {
    if (i % 16 == 0 && i < n_pf) {
      const int64_t np = n_pf - i < 16 ? n_pf - i : 16;
      prefetch_bytes(pk + i * kb, np * kb);
      prefetch_bytes(pv + i * vb, np * vb);
    }
    if (i >= nk) {
      _mm512_storeu_ps(s + i * G, _mm512_set1_ps(-INFINITY));
      continue;
    }
    int64_t row[KB];
    QC_UNROLL for (int b = 0; b < KB; ++b) row[b] = (int64_t)(i + b < nk ? i + b : i) * head_dim;
    __m512 acc[16];
    QC_UNROLL for (int a = 0; a < 16; ++a) acc[a] = _mm512_setzero_ps();
    for (int d = 0; d < head_dim; d += 16) {
      const __mmask16 m = chunk_mask(head_dim, d);
      __m512 kv[KB];
      QC_UNROLL for (int b = 0; b < KB; ++b) kv[b] = load16<F16>(k, row[b] + d, m);
      QC_UNROLL for (int j = 0; j < NQ; ++j) {
        const __m512 qv = _mm512_maskz_loadu_ps(m, q + j * head_dim + d);
        QC_UNROLL for (int b = 0; b < KB; ++b) {
          const int L = b * G + j;  // the score's lane, then the accumulator reduce16 puts there
          acc[rev4(L)] = _mm512_fmadd_ps(qv, kv[b], acc[rev4(L)]);
        }
      }
    }
    const __m512 x = _mm512_mul_ps(reduce16(acc), _mm512_set1_ps(scale));
    const int valid = nk - i >= KB ? 16 : (nk - i) * G;
    _mm512_storeu_ps(s + i * G, _mm512_mask_blend_ps((__mmask16)((1u << valid) - 1), _mm512_set1_ps(-INFINITY), x));
  }
}

// The online-softmax step of a tile for NQ queries: s (TK G) scores -> exp(score - new max);
// m, l (NQ) updated; c (G) = exp(old max - new max), the rescale of the old acc.
template <int NQ>
static inline void tile_softmax(float* s, float* m, float* l, float* c) {
  constexpr int G = group_width<NQ>, V = tile_keys<G> * G / 16;  // V vectors of scores
  const __mmask16 live = (__mmask16)((1u << NQ) - 1);
  // lane i G + j -> query j's m or l (the group's lanes past NQ 0)
  const __m512i by_query = _mm512_and_si512(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(G - 1));
  __m512 x[V];
  QC_UNROLL for (int g = 0; g < V; ++g) x[g] = _mm512_loadu_ps(s + 16 * g);
  __m512 mx = x[0];
  QC_UNROLL for (int g = 1; g < V; ++g) mx = _mm512_max_ps(mx, x[g]);
  mx = fold_lanes<G>(mx, [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); });
  const __m512 m_old = _mm512_permutexvar_ps(by_query, _mm512_maskz_loadu_ps(live, m));
  const __m512 m_new = _mm512_max_ps(m_old, mx);
  const __m512 cv = exp_ps(_mm512_sub_ps(m_old, m_new));  // 0 before the first key (m = -inf)
  __m512 sum = _mm512_setzero_ps();
  QC_UNROLL for (int g = 0; g < V; ++g) {
    const __m512 p = exp_ps(_mm512_sub_ps(x[g], m_new));
    _mm512_storeu_ps(s + 16 * g, p);
    sum = _mm512_add_ps(sum, p);
  }
  sum = fold_lanes<G>(sum, [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); });
  const __m512 l_old = _mm512_permutexvar_ps(by_query, _mm512_maskz_loadu_ps(live, l));
  _mm512_mask_storeu_ps(l, live, _mm512_add_ps(_mm512_mul_ps(l_old, cv), sum));
  _mm512_mask_storeu_ps(m, live, m_new);
  _mm512_mask_storeu_ps(c, live, cv);
}

// acc (NQ, head_dim) columns [d, d + 16 CW) = acc * c_j + sum_i p[i G + j] v_i over the tile's
// nk rows v (head_dim elements apart): NQ * CW accumulators from zero, added to the rescaled acc
// at the end (a tile's sum first, so long contexts do not add every key to the large running sum).
// Fewer than 8 accumulators take the even and odd keys in two sets (8 FMA chains in flight).
template <int NQ, int CW, bool F16>
static inline void tile_values_cols(float* acc, const float* p, const float* c, int nk, const void* v, int head_dim, int d) {
  constexpr int G = group_width<NQ>, A = NQ * CW, KP = A < 8 ? 2 : 1;
  __mmask16 m[CW];
  QC_UNROLL for (int cc = 0; cc < CW; ++cc) m[cc] = chunk_mask(head_dim, d + 16 * cc);
  __m512 a[KP * A];
  QC_UNROLL for (int e = 0; e < KP * A; ++e) a[e] = _mm512_setzero_ps();
  auto key = [&](int i, __m512* set) {
    __m512 vv[CW];
    QC_UNROLL for (int cc = 0; cc < CW; ++cc) vv[cc] = load16<F16>(v, (int64_t)i * head_dim + d + 16 * cc, m[cc]);
    QC_UNROLL for (int j = 0; j < NQ; ++j) {
      const __m512 pj = _mm512_set1_ps(p[i * G + j]);
      QC_UNROLL for (int cc = 0; cc < CW; ++cc) set[j * CW + cc] = _mm512_fmadd_ps(pj, vv[cc], set[j * CW + cc]);
    }
  };
  int i = 0;
  for (; i + KP <= nk; i += KP) QC_UNROLL for (int k2 = 0; k2 < KP; ++k2) key(i + k2, a + k2 * A);
  if (i < nk) key(i, a);
  if constexpr (KP == 2) QC_UNROLL for (int e = 0; e < A; ++e) a[e] = _mm512_add_ps(a[e], a[A + e]);
  QC_UNROLL for (int j = 0; j < NQ; ++j) {
    const __m512 cj = _mm512_set1_ps(c[j]);
    QC_UNROLL for (int cc = 0; cc < CW; ++cc) {
      float* o = acc + j * head_dim + d + 16 * cc;
      _mm512_mask_storeu_ps(o, m[cc], _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m[cc], o), cj), a[j * CW + cc]));
    }
  }
}

// This path's tile kernel for attn_float (../attn_tiles.h says what run computes).
struct FusedTiles {
  template <int NQ, bool KF16, bool VF16>
  static void run(const float* q, const uint8_t* k, size_t k_row_bytes, const uint8_t* v, size_t v_row_bytes,
                  int64_t n_keys, int64_t i_begin, int64_t i_end, bool pf, int head_dim, float scale, float* m,
                  float* l, float* acc, float* s, float* c) {
    constexpr int TK = tile_keys<group_width<NQ>>;
    constexpr int CW = NQ > 4 ? 2 : 4;  // value columns per pass: NQ * CW <= 16 accumulators
    for (int64_t i0 = i_begin; i0 < i_end; i0 += TK) {
      const int nk = i_end - i0 < TK ? (int)(i_end - i0) : TK;
      const int64_t r = i0 + kPrefetch, n_pf = pf && r < n_keys ? n_keys - r : 0;  // the rows kPrefetch keys ahead
      tile_scores<NQ, KF16>(s, nk, q, k + i0 * k_row_bytes, head_dim, scale, n_pf ? k + r * k_row_bytes : k,
                            n_pf ? v + r * v_row_bytes : v, k_row_bytes, v_row_bytes, n_pf);
      tile_softmax<NQ>(s, m, l, c);
      const uint8_t* vt = v + i0 * v_row_bytes;
      int d = 0;
      for (; d + 16 * CW <= head_dim; d += 16 * CW) tile_values_cols<NQ, CW, VF16>(acc, s, c, nk, vt, head_dim, d);
      for (; d < head_dim; d += 16) tile_values_cols<NQ, 1, VF16>(acc, s, c, nk, vt, head_dim, d);
    }
  }
};

