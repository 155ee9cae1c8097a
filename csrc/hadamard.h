// The orthonormal Walsh-Hadamard rotation of a quantized KV cache's rows (issue #17): keys and
// queries are rotated alike after RoPE (q.k is unchanged), values before they are stored and the
// attention output back after (H is symmetric and orthonormal: its own inverse). A row's outliers
// spread over all the values of a chunk, so that a 32-value block's scale fits them better.
// ISA-neutral plain C++: n log2(n) additions per chunk, a small share of a forward pass (bench/README.md).
#pragma once
#include <cstdint>

#include "threadpool.h"

namespace qc {

// Width of the rotation of the K rows (and queries), or of the V rows (v true), of a cache of
// `type` with head_dim (0: none; rows are split into chunks of this width): quantized types only;
// K by the largest power of two dividing head_dim, V by at most 64. When head_dim % 64 == 0 this
// is llama.cpp's choice (src/llama-kv-cache.cpp attn_rot_k/v); head_dims of 32 times an odd number,
// which llama.cpp leaves plain, get 32-wide chunks, which keep most of the gain (bench/README.md).
int kv_rotation(int32_t type, int head_dim, bool v);

// x (n_chunks, n) each chunk replaced by H_n . chunk in place, H_n the Sylvester Hadamard matrix
// scaled by 1/sqrt(n) (entry (i, j) = (-1)^popcount(i & j) / sqrt(n)), n a power of two >= 4; a
// fast transform of n log2(n) additions per chunk.
void hadamard_chunks(float* x, int64_t n_chunks, int n);

// The same, the chunks shared by the pool's threads when there are many (a prefill step).
void hadamard_chunks(ThreadPool& pool, float* x, int64_t n_chunks, int n);

}  // namespace qc
