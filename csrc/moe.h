// The mixture-of-experts feed-forward block of qwen2moe / qwen3moe: a router picks each token's
// top-k experts, only those experts' matrices are multiplied (a token reads k of n_expert experts'
// bytes), and their outputs are summed with the routing weights; qwen2moe adds a shared expert
// scaled by a sigmoid gate. The expert matrices are the GGUF's 3-D tensors seen as one matrix of
// n_expert blocks of rows back to back, so one expert is a row range: a view at an offset, which
// the ordinary matmul kernels (quantized types and repacked layouts) take as they are.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels.h"
#include "matmul.h"
#include "tensor.h"
#include "threadpool.h"

namespace qc {

struct MoeConfig {
  int n_expert = 0;        // 0: the layers have a dense FFN
  int n_expert_used = 0;   // k, experts per token
  int n_ff_exp = 0;        // rows of one expert's gate and up matrices
  int n_ff_shexp = 0;      // rows of the shared expert's (qwen2moe); 0: no shared expert
  bool norm_topk = false;  // the k routing weights renormalised to sum to 1 (qwen3moe)
};

struct MoeWeights {
  Tensor gate_inp;               // (n_expert, n_embd) router
  Tensor gate_exps, up_exps;     // (n_expert * n_ff_exp, n_embd): expert e's rows e*n_ff_exp ..
  Tensor down_exps;              // (n_expert * n_embd, n_ff_exp): expert e's rows e*n_embd ..
  Tensor gate_inp_shexp;         // (1, n_embd): the shared expert's gate, or absent
  Tensor gate_shexp, up_shexp;   // (n_ff_shexp, n_embd), or absent
  Tensor down_shexp;             // (n_embd, n_ff_shexp), or absent
};

// Expert e's matrix of a 3-D tensor with `rows` rows per expert.
Tensor expert_view(const Tensor& t, int e, int64_t rows);

// Throws std::invalid_argument naming the first tensor that does not fit the config.
void check_moe(const Kernels& K, const MoeConfig& c, const MoeWeights& w, int64_t n_embd, const std::string& prefix);

class MoeFfn {
 public:
  MoeFfn(const MoeConfig& c, int64_t n_embd);

  // Quantized-activation scratch the products of run() need for up to m tokens.
  size_t scratch_bytes(const Kernels& K, const MoeWeights& w, int64_t m) const;

  // y (m, n_embd) = the block's output for x (m, n_embd) (the normalised input). Rows
  // 0 .. n_alone-1 are computed alone (matmul.h), each as it would be by itself; the rest together.
  // act: scratch_bytes(K, w, m) bytes.
  void run(ThreadPool& pool, const Kernels& K, const MoeWeights& w, const float* x, float* y, int64_t m,
           int64_t n_alone, void* act);

 private:
  void route(ThreadPool& pool, const Kernels& K, const MoeWeights& w, const float* x, int64_t m, int64_t n_alone,
             void* act);
  void shared_expert(ThreadPool& pool, const Kernels& K, const MoeWeights& w, const float* x, float* y, int64_t m,
                     int64_t n_alone, void* act);

  MoeConfig c_;
  int64_t E_;
  // Buffers grow to the largest step seen (a decode-only session keeps them small).
  std::vector<float> logits_;     // (m, n_expert) router output, then probabilities
  std::vector<int32_t> expert_;   // (m, k) each token's experts, best first
  std::vector<float> weight_;     // (m, k) their routing weights
  std::vector<int64_t> slot_;     // (m, k) row of (token, j) in the expert-grouped buffers below
  std::vector<int64_t> first_;    // (n_expert + 1) first grouped row of each expert
  std::vector<int64_t> token_;    // (m * k) token of each grouped row
  std::vector<float> xg_;         // (m * k, n_embd) gathered inputs, grouped by expert
  std::vector<float> gate_, up_;  // (m * k, n_ff_exp) and, for the shared expert, (m, n_ff_shexp)
  std::vector<float> down_;       // (m * k, n_embd) expert outputs, grouped by expert
  std::vector<float> shared_gate_;  // (m) the shared expert's gate before its sigmoid
};

}  // namespace qc
