// Quantized matrix products: the activations are quantized once per product into the weight
// type's activation format, then every output is an integer dot product of one weight row
// with one quantized activation row (kernels.h, vec_dot).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels.h"
#include "threadpool.h"

namespace qc {

// Bytes of scratch that matmul() needs for n_tok activation rows of n_in elements.
size_t matmul_scratch_bytes(const Kernels& K, int32_t wtype, int64_t n_in, int64_t n_tok,
                            int32_t layout = QC_LAYOUT_STORED);

// y (n_tok, n_out) = x (n_tok, n_in) . W^T
//   W: n_out rows of n_in elements of type wtype, each row_bytes(wtype, n_in) bytes, row-major;
//   act_scratch: at least matmul_scratch_bytes(...) bytes.
//   layout: that of W (MatmulOutput::layout).
//   alone: every row of y exactly as the product of that activation row alone (n_tok = 1) gives it
//   (the decode kernels, each row quantized in their format), the weights still read once for all
//   rows; otherwise the rows go together through the prefill (gemm) kernels. Several sequences'
//   decode steps batched together give the tokens they give one at a time.
// Output rows are split across the pool's threads. Throws std::invalid_argument if the type has
// no kernel or n_in is not a multiple of its block size.
void matmul(ThreadPool& pool, const Kernels& K, const void* W, int32_t wtype, int64_t n_out, int64_t n_in,
            const float* x, int64_t n_tok, float* y, void* act_scratch, int32_t layout = QC_LAYOUT_STORED,
            bool alone = false);

// One weight of a group that shares its input (Q/K/V, or gate/up): y (n_tok, n_out) = x . W^T.
struct MatmulOutput {
  const void* w;   // (n_out, row_bytes(wtype, n_in)) raw rows, in the file's layout or in `layout`
  int32_t wtype;
  int64_t n_out;
  float* y;        // (n_tok, n_out)
  // QC_LAYOUT_STORED, or the layout w was repacked into (repack.h), with n_out a multiple of its
  // rows per tile, as are the n_out of every output before it in a group (a thread's rows never
  // split a tile). One
  // token runs the layout's gemv where the kernel table has it; otherwise the rows are unpacked.
  int32_t layout = QC_LAYOUT_STORED;
};

// Several products of the same input in one pass over the thread pool: the input is quantized
// once per distinct activation format and the threads split the outputs of all weights together,
// which saves a barrier per weight in decode. act_scratch: the sum of matmul_scratch_bytes over
// the distinct activation formats (matmul_group_scratch_bytes).
size_t matmul_group_scratch_bytes(const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in, int64_t n_tok);
void matmul_group(ThreadPool& pool, const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in,
                  const float* x, int64_t n_tok, void* act_scratch, bool alone = false);

// Several one-token products in one pass over the pool, each with its own input: output i is
// y = x[i] . W_i^T for row i of x (n_outs rows of n_in), exactly as matmul of that row alone (the
// down products of one token's experts). act_scratch: matmul_group_scratch_bytes(K, outs, n_outs,
// n_in, n_outs) bytes or more.
void matmul_each(ThreadPool& pool, const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in,
                 const float* x, void* act_scratch);

}  // namespace qc
