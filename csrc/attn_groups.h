// The tiled loop of the attention kernels (attn_fn in kernels.h) other than the fused tiles
// (attn_tiles.h: avx2's for every cache type, avx512's for f32/f16 caches): keys in blocks of
// kAttnBlock; per block, the K rows made readable by the float kernels once (f32/f16 rows as they
// are, q8_0/q4_0 rows dequantized into scratch), scores of the queries in groups of up to kGroup
// (as many as the path's score kernel keeps accumulators for in registers), the online-softmax
// update of each query's state, then the V rows likewise and the weighted sum of the block's
// values. Plain C++ and `static inline`: each instruction set's ops.cpp instantiates it with its
// own kernels, so the dequantizing loops below are compiled (and vectorised) for that ISA too.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels.h"

namespace qc {

// dst (n_rows, head_dim) floats = rows of a q8_0 or q4_0 cache, row_bytes apart.
template <int32_t T>
static inline void dequantize_kv_rows(const void* src, size_t row_bytes, int n_rows, int head_dim, float* dst) {
  static_assert(T == GGML_Q8_0 || T == GGML_Q4_0, "quantized cache types only");
  const int nb = head_dim / 32;
  for (int r = 0; r < n_rows; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(src) + (size_t)r * row_bytes;
    float* y = dst + (int64_t)r * head_dim;
    for (int b = 0; b < nb; ++b) {
      if constexpr (T == GGML_Q8_0) {
        const block_q8_0* x = reinterpret_cast<const block_q8_0*>(row) + b;
        const float d = fp16_to_fp32(x->d);
        for (int j = 0; j < 32; ++j) y[b * 32 + j] = d * (float)x->qs[j];
      } else {
        const block_q4_0* x = reinterpret_cast<const block_q4_0*>(row) + b;
        const float d = fp16_to_fp32(x->d);
        for (int j = 0; j < 16; ++j) {
          y[b * 32 + j] = d * (float)((x->qs[j] & 15) - 8);
          y[b * 32 + j + 16] = d * (float)((x->qs[j] >> 4) - 8);
        }
      }
    }
  }
}

// Rows [i0, i0 + n) of a cache of type T in the form the float kernels read: f32 and f16 rows in
// place (head_dim elements apart), quantized rows dequantized into buf (n, head_dim).
template <int32_t T>
static inline const void* kv_block_rows(const void* base, size_t row_bytes, int64_t i0, int n, int head_dim, float* buf) {
  const uint8_t* p = static_cast<const uint8_t*>(base) + (size_t)i0 * row_bytes;
  if constexpr (T == GGML_F32 || T == GGML_F16) {
    (void)n, (void)head_dim, (void)buf;
    return p;
  } else {
    dequantize_kv_rows<T>(p, row_bytes, n, head_dim, buf);
    return buf;
  }
}

// A hint to load bytes [p, p + n) into the cache (no fault if they are not mapped: a prefetch).
static inline void prefetch_bytes(const uint8_t* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64) __builtin_prefetch(p + i);
}

// The largest of x[0 .. n) and init: 8 independent maxima (a vector max where the compiler sees
// one; a single running max is a chain of dependent instructions, 7 per key at 7 queries).
static inline float block_max(const float* x, int n, float init) {
  float mx[8] = {init, init, init, init, init, init, init, init};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) mx[u] = x[i + u] > mx[u] ? x[i + u] : mx[u];
  for (; i < n; ++i) mx[0] = x[i] > mx[0] ? x[i] : mx[0];
  for (int u = 1; u < 8; ++u) mx[0] = mx[u] > mx[0] ? mx[u] : mx[0];
  return mx[0];
}

// The queries quantized for integer dot products with q8_0/q4_0 K rows (llama.cpp's CPU attention
// quantizes them to q8_0, one scale per 32): int8 with one scale per 4 elements, the elements of
// one int32 lane of the dot-product instructions, whose sums the kernels scale lane by lane anyway
// (so the finer scales cost nothing there; per 32, the needle test lost a fact at q4_0, with a
// large element of a query row rounding its block's others coarsely). Per lane: d = max |x| / 127,
// qs = round(x / d), and -8 times the lane's qs sum (the q4_0 nibbles' offset of 8).
struct QueryQ8 {
  int8_t* qs;     // (n_q, head_dim)
  float* dq;      // (n_q, head_dim / 4)
  int32_t* corr;  // (n_q, head_dim / 4)
};

// The QueryQ8 of n_q queries in the scratch past attn_online's part (attn_kernel_scratch_floats).
static inline QueryQ8 query_q8_in(float* scratch, int n_q, int head_dim) {
  const size_t off = ((size_t)2 * kAttnBlock * head_dim + (size_t)n_q * (kAttnBlock + head_dim + 1) + 15) & ~(size_t)15;
  float* base = scratch + off;
  const size_t lanes = (size_t)n_q * (head_dim / 4);
  return QueryQ8{reinterpret_cast<int8_t*>(base + 2 * lanes), base, reinterpret_cast<int32_t*>(base + lanes)};
}

// q (n_q, head_dim), head_dim a multiple of 4, into Q (QueryQ8 above).
static inline void quantize_queries_q8(const float* q, int n_q, int head_dim, const QueryQ8& Q) {
  for (int64_t g = 0; g < (int64_t)n_q * head_dim / 4; ++g) {
    const float* x = q + g * 4;
    float amax = 0.0f;
    for (int e = 0; e < 4; ++e) amax = std::fabs(x[e]) > amax ? std::fabs(x[e]) : amax;
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (int e = 0; e < 4; ++e) sum += Q.qs[g * 4 + e] = (int8_t)std::nearbyint(x[e] * id);
    Q.dq[g] = d;
    Q.corr[g] = -8 * sum;
  }
}

// The float kernels read f16 rows for an f16 cache, f32 rows for every other type.
template <int32_t T>
constexpr bool kv_rows_f16 = T == GGML_F16;

// One attn_fn call (contract in kernels.h) with the path's kernels:
//   scores(nq, s, q_group, rows, n): s + j * n (n) = scale * q_j . k_i for the nq (<= kGroup)
//     queries at q_group over n rows (head_dim elements apart, f16 if kv_rows_f16<KT>);
//   exp_sum(x, n, mx): x (n) = exp(x - mx), returns the sum;
//   values(nq, out, p, rows, n): out (nq, head_dim) = sum_i p[j * n + i] * v_i (overwritten).
// kRawK / kRawV: the path's kernels read that cache's rows as stored (row_bytes apart), not as
// float rows (for q8_0/q4_0 their integer or fused kernels, which the path's callables pick).
template <int kGroup, int32_t KT, int32_t VT, bool kRawK = false, bool kRawV = false, typename Scores, typename ExpSum,
          typename Values>
static inline void attn_online(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v,
                               size_t v_row_bytes, int64_t n_keys, int head_dim, float* m, float* l, float* acc,
                               float* scratch, Scores&& scores, ExpSum&& exp_sum, Values&& values) {
  float* kbuf = scratch;                                 // (kAttnBlock, head_dim)
  float* vbuf = kbuf + (int64_t)kAttnBlock * head_dim;   // (kAttnBlock, head_dim)
  float* s = vbuf + (int64_t)kAttnBlock * head_dim;      // (n_q, n) scores, then probabilities
  float* part = s + (int64_t)n_q * kAttnBlock;           // (n_q, head_dim) this block's values
  float* c = part + (int64_t)n_q * head_dim;             // (n_q) rescale of the old state
  for (int64_t i0 = 0; i0 < n_keys; i0 += kAttnBlock) {
    const int n = n_keys - i0 < kAttnBlock ? (int)(n_keys - i0) : kAttnBlock;
    if (i0 + n < n_keys) {  // the next block's rows, one cache line at a time: read from memory meanwhile
      const int64_t n_next = n_keys - i0 - n < kAttnBlock ? n_keys - i0 - n : kAttnBlock;
      prefetch_bytes(static_cast<const uint8_t*>(k) + (i0 + n) * k_row_bytes, n_next * k_row_bytes);
      prefetch_bytes(static_cast<const uint8_t*>(v) + (i0 + n) * v_row_bytes, n_next * v_row_bytes);
    }
    const void* kr = kRawK ? static_cast<const uint8_t*>(k) + i0 * k_row_bytes
                           : kv_block_rows<KT>(k, k_row_bytes, i0, n, head_dim, kbuf);
    for (int j0 = 0; j0 < n_q; j0 += kGroup) {
      const int nq = n_q - j0 < kGroup ? n_q - j0 : kGroup;
      scores(nq, s + (int64_t)j0 * n, q + (int64_t)j0 * head_dim, kr, n);
    }
    for (int j = 0; j < n_q; ++j) {
      float* sj = s + (int64_t)j * n;
      float mx = block_max(sj, n, m[j]);
      c[j] = std::exp(m[j] - mx);  // 0 before the first key (m = -inf)
      l[j] = l[j] * c[j] + exp_sum(sj, n, mx);
      m[j] = mx;
    }
    const void* vr = kRawV ? static_cast<const uint8_t*>(v) + i0 * v_row_bytes
                           : kv_block_rows<VT>(v, v_row_bytes, i0, n, head_dim, vbuf);
    for (int j0 = 0; j0 < n_q; j0 += kGroup) {
      const int nq = n_q - j0 < kGroup ? n_q - j0 : kGroup;
      values(nq, part + (int64_t)j0 * head_dim, s + (int64_t)j0 * n, vr, n);
    }
    for (int j = 0; j < n_q; ++j) {
      float* aj = acc + (int64_t)j * head_dim;
      const float* pj = part + (int64_t)j * head_dim;
      const float cj = c[j];
      for (int d = 0; d < head_dim; ++d) aj[d] = aj[d] * cj + pj[d];
    }
  }
}

}  // namespace qc

// Registers the including file's attn<KT, VT> (an attn_fn) for every pair of cache types.
#define QC_SET_ATTN_ALL(k) \
  set_attn(k, GGML_F32, GGML_F32, QC_FN(attn<GGML_F32, GGML_F32>)); \
  set_attn(k, GGML_F32, GGML_F16, QC_FN(attn<GGML_F32, GGML_F16>)); \
  set_attn(k, GGML_F32, GGML_Q8_0, QC_FN(attn<GGML_F32, GGML_Q8_0>)); \
  set_attn(k, GGML_F32, GGML_Q4_0, QC_FN(attn<GGML_F32, GGML_Q4_0>)); \
  set_attn(k, GGML_F16, GGML_F32, QC_FN(attn<GGML_F16, GGML_F32>)); \
  set_attn(k, GGML_F16, GGML_F16, QC_FN(attn<GGML_F16, GGML_F16>)); \
  set_attn(k, GGML_F16, GGML_Q8_0, QC_FN(attn<GGML_F16, GGML_Q8_0>)); \
  set_attn(k, GGML_F16, GGML_Q4_0, QC_FN(attn<GGML_F16, GGML_Q4_0>)); \
  set_attn(k, GGML_Q8_0, GGML_F32, QC_FN(attn<GGML_Q8_0, GGML_F32>)); \
  set_attn(k, GGML_Q8_0, GGML_F16, QC_FN(attn<GGML_Q8_0, GGML_F16>)); \
  set_attn(k, GGML_Q8_0, GGML_Q8_0, QC_FN(attn<GGML_Q8_0, GGML_Q8_0>)); \
  set_attn(k, GGML_Q8_0, GGML_Q4_0, QC_FN(attn<GGML_Q8_0, GGML_Q4_0>)); \
  set_attn(k, GGML_Q4_0, GGML_F32, QC_FN(attn<GGML_Q4_0, GGML_F32>)); \
  set_attn(k, GGML_Q4_0, GGML_F16, QC_FN(attn<GGML_Q4_0, GGML_F16>)); \
  set_attn(k, GGML_Q4_0, GGML_Q8_0, QC_FN(attn<GGML_Q4_0, GGML_Q8_0>)); \
  set_attn(k, GGML_Q4_0, GGML_Q4_0, QC_FN(attn<GGML_Q4_0, GGML_Q4_0>));

// Marks the q8_0/q4_0 K kernels of a path that scores them against int8 queries (AttnKernel::q8_query).
#define QC_SET_ATTN_Q8_QUERY(k)                                    \
  for (int v_ = 0; v_ < QC_KV_COUNT; ++v_)                         \
    k.attn[QC_KV_Q8_0][v_].q8_query = k.attn[QC_KV_Q4_0][v_].q8_query = true;
