// The loop every SIMD attn_group (kernels.h) runs: the n_q queries that share a KV head in groups
// of up to kGroup (as many as the path's score kernel keeps accumulators for in registers); per
// group one pass over the keys (scores), a softmax per query row, one pass over the values. Plain
// C++ and `static inline`: each instruction set's ops.cpp instantiates it with its own kernels.
#pragma once
#include <cstdint>

namespace qc {

// scores(nq, s, q_group): s + j * n_keys (n_keys) = scale * q_j . k_i for the nq queries at q_group;
// softmax(row, n_keys): in place; values(nq, out_group, s): out_group (nq, head_dim) from s.
// scratch (n_q, n_keys) floats.
template <int kGroup, typename Scores, typename Softmax, typename Values>
static inline void attn_query_groups(float* out, const float* q, int n_q, int64_t n_keys, int head_dim, float* scratch,
                                     Scores&& scores, Softmax&& softmax, Values&& values) {
  for (int j0 = 0; j0 < n_q; j0 += kGroup) {
    const int nq = n_q - j0 < kGroup ? n_q - j0 : kGroup;
    float* s = scratch + (int64_t)j0 * n_keys;
    scores(nq, s, q + (int64_t)j0 * head_dim);
    for (int j = 0; j < nq; ++j) softmax(s + (int64_t)j * n_keys, n_keys);
    values(nq, out + (int64_t)j0 * head_dim, s);
  }
}

}  // namespace qc
