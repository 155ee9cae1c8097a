#include "matmul.h"

#include <stdexcept>
#include <string>

namespace qc {

static const WeightKernels& checked(const Kernels& K, int32_t wtype, int64_t n_in) {
  if (wtype < 0 || wtype >= GGML_TYPE_COUNT || !K.weight[wtype].vec_dot)
    throw std::invalid_argument("matmul: no kernel for tensor type " + std::to_string(wtype));
  const WeightKernels& wk = K.weight[wtype];
  const int64_t blk = type_info(wtype).block_elems, act_blk = type_info(wk.act_type).block_elems;
  if (n_in <= 0 || n_in % blk != 0 || n_in % act_blk != 0)
    throw std::invalid_argument(std::string("matmul: row length ") + std::to_string(n_in) +
                                " is not a multiple of the " + type_info(wtype).name + " block size");
  return wk;
}

size_t matmul_scratch_bytes(const Kernels& K, int32_t wtype, int64_t n_in, int64_t n_tok) {
  const WeightKernels& wk = checked(K, wtype, n_in);
  return row_bytes(wk.act_type, n_in) * (size_t)n_tok;
}

void matmul(ThreadPool& pool, const Kernels& K, const void* W, int32_t wtype, int64_t n_out, int64_t n_in,
            const float* x, int64_t n_tok, float* y, void* act_scratch) {
  const WeightKernels& wk = checked(K, wtype, n_in);
  const quantize_row_fn quantize = K.quantize_act[wk.act_type];
  const size_t act_row = row_bytes(wk.act_type, n_in), w_row = row_bytes(wtype, n_in);
  uint8_t* act = static_cast<uint8_t*>(act_scratch);
  const uint8_t* w = static_cast<const uint8_t*>(W);

  if (n_tok == 1) {
    quantize(x, act, n_in);  // one row: cheaper on this thread than a barrier
  } else {
    pool.run([&](int ith, int nth) {
      int64_t t0, t1;
      split_range(n_tok, ith, nth, &t0, &t1);
      for (int64_t t = t0; t < t1; ++t) quantize(x + t * n_in, act + t * act_row, n_in);
    });
  }

  const vec_dot_fn dot = wk.vec_dot;
  // Each thread owns a contiguous range of output rows. For several tokens, a tile of weight
  // rows is reused across all tokens while it is in L1/L2 (the activations stay in L2).
  constexpr int64_t kRowTile = 16;
  pool.run([&](int ith, int nth) {
    int64_t r0, r1;
    split_range(n_out, ith, nth, &r0, &r1);
    for (int64_t rt = r0; rt < r1; rt += kRowTile) {
      const int64_t rt_end = rt + kRowTile < r1 ? rt + kRowTile : r1;
      for (int64_t t = 0; t < n_tok; ++t) {
        const uint8_t* a = act + t * act_row;
        float* yt = y + t * n_out;
        for (int64_t r = rt; r < rt_end; ++r) yt[r] = dot(n_in, w + r * w_row, a);
      }
    }
  });
}

}  // namespace qc
