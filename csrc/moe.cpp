#include "moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace qc {

namespace {

MatmulOutput output_of(const Tensor& t, int64_t n_out, float* y) { return {t.data, t.type, n_out, y, t.layout}; }

// The products of a group over m rows of x, the first n_alone of them alone, the rest together
// (as Model::products); n_outs <= kMaxOuts.
constexpr int kMaxOuts = 3;
void products(ThreadPool& pool, const Kernels& K, const MatmulOutput* outs, int n_outs, int64_t n_in, const float* x,
              int64_t m, int64_t n_alone, void* act) {
  const int64_t a = std::max<int64_t>(0, std::min(n_alone, m));
  if (a > 0) matmul_group(pool, K, outs, n_outs, n_in, x, a, act, true);
  if (m > a) {
    MatmulOutput rest[kMaxOuts];
    for (int i = 0; i < n_outs; ++i) rest[i] = outs[i], rest[i].y += a * outs[i].n_out;
    matmul_group(pool, K, rest, n_outs, n_in, x + a * n_in, m - a, act, false);
  }
}

template <class T>
T* grown(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

Tensor expert_view(const Tensor& t, int e, int64_t rows) {
  Tensor v = t;
  v.data = static_cast<const uint8_t*>(t.data) + (size_t)e * (size_t)rows * row_bytes(t.type, t.cols);
  v.rows = rows;
  return v;
}

void check_moe(const Kernels& K, const MoeConfig& c, const MoeWeights& w, int64_t n_embd, const std::string& p) {
  if (c.n_expert <= 0 || c.n_expert_used <= 0 || c.n_expert_used > c.n_expert || c.n_ff_exp <= 0 || c.n_ff_shexp < 0)
    throw std::invalid_argument("model config: experts " + std::to_string(c.n_expert) + ", used " +
                                std::to_string(c.n_expert_used) + ", expert FFN length " + std::to_string(c.n_ff_exp) +
                                ": need 0 < used <= experts and a positive length");
  const int64_t X = c.n_expert;
  check_matrix(K, w.gate_inp, X, n_embd, p + "ffn_gate_inp.weight");
  check_matrix(K, w.gate_exps, X * c.n_ff_exp, n_embd, p + "ffn_gate_exps.weight");
  check_matrix(K, w.up_exps, X * c.n_ff_exp, n_embd, p + "ffn_up_exps.weight");
  check_matrix(K, w.down_exps, X * n_embd, c.n_ff_exp, p + "ffn_down_exps.weight");
  if (c.n_ff_shexp == 0) {
    if (w.gate_shexp.data || w.up_shexp.data || w.down_shexp.data || w.gate_inp_shexp.data)
      throw std::invalid_argument(p + "ffn_*_shexp: a shared expert without its feed-forward length");
    return;
  }
  check_matrix(K, w.gate_shexp, c.n_ff_shexp, n_embd, p + "ffn_gate_shexp.weight");
  check_matrix(K, w.up_shexp, c.n_ff_shexp, n_embd, p + "ffn_up_shexp.weight");
  check_matrix(K, w.down_shexp, n_embd, c.n_ff_shexp, p + "ffn_down_shexp.weight");
  // a one-row matrix: llama.cpp's quantizer quantizes it like the other FFN gates
  check_matrix(K, w.gate_inp_shexp, 1, n_embd, p + "ffn_gate_inp_shexp.weight");
}

MoeFfn::MoeFfn(const MoeConfig& c, int64_t n_embd) : c_(c), E_(n_embd) {}

size_t MoeFfn::scratch_bytes(const Kernels& K, const MoeWeights& w, int64_t m) const {
  const Tensor gate = expert_view(w.gate_exps, 0, c_.n_ff_exp), up = expert_view(w.up_exps, 0, c_.n_ff_exp);
  const MatmulOutput gu[2] = {output_of(gate, c_.n_ff_exp, nullptr), output_of(up, c_.n_ff_exp, nullptr)};
  size_t s = std::max({matmul_scratch_bytes(K, w.gate_inp.type, E_, m, w.gate_inp.layout),
                       matmul_group_scratch_bytes(K, gu, 2, E_, m),
                       // one token's k down products at once (matmul_each) or m tokens' of an expert
                       matmul_scratch_bytes(K, w.down_exps.type, c_.n_ff_exp, std::max<int64_t>(m, c_.n_expert_used),
                                            w.down_exps.layout)});
  if (c_.n_ff_shexp > 0) {
    const MatmulOutput sh[3] = {output_of(w.gate_shexp, c_.n_ff_shexp, nullptr), output_of(w.up_shexp, c_.n_ff_shexp, nullptr),
                                output_of(w.gate_inp_shexp, 1, nullptr)};
    s = std::max({s, matmul_group_scratch_bytes(K, sh, 3, E_, m),
                  matmul_scratch_bytes(K, w.down_shexp.type, c_.n_ff_shexp, m, w.down_shexp.layout)});
  }
  return s;
}

// Each token's k experts (highest probability first, ties to the lower index) and weights, then
// the grouped order: expert by expert, each expert's tokens in increasing order.
void MoeFfn::route(ThreadPool& pool, const Kernels& K, const MoeWeights& w, const float* x, int64_t m,
                   int64_t n_alone, void* act) {
  const int X = c_.n_expert, k = c_.n_expert_used;
  float* lg = grown(logits_, (size_t)m * X);
  const MatmulOutput router = output_of(w.gate_inp, X, lg);
  products(pool, K, &router, 1, E_, x, m, n_alone, act);
  int32_t* ex = grown(expert_, (size_t)m * k);
  float* wt = grown(weight_, (size_t)m * k);
  int64_t* first = grown(first_, (size_t)X + 1);
  std::fill(first, first + X + 1, 0);
  for (int64_t t = 0; t < m; ++t) {
    float* p = lg + t * X;
    K.softmax(p, X);
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < X; ++e) {
        bool taken = false;
        for (int i = 0; i < j; ++i) taken |= ex[t * k + i] == e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      ex[t * k + j] = best;
      wt[t * k + j] = p[best];
      sum += p[best];
      ++first[best + 1];
    }
    if (c_.norm_topk)
      for (int j = 0; j < k; ++j) wt[t * k + j] /= sum;
  }
  for (int e = 0; e < X; ++e) first[e + 1] += first[e];
  int64_t* slot = grown(slot_, (size_t)m * k);
  int64_t* tok = grown(token_, (size_t)m * k);
  std::vector<int64_t> fill(first, first + X);
  for (int64_t t = 0; t < m; ++t)
    for (int j = 0; j < k; ++j) {
      const int64_t r = fill[ex[t * k + j]]++;
      slot[t * k + j] = r, tok[r] = t;
    }
}

// y (m, n_embd) = sigmoid(gate_inp_shexp . x) * down_shexp . (silu(gate_shexp x) * (up_shexp x))
void MoeFfn::shared_expert(ThreadPool& pool, const Kernels& K, const MoeWeights& w, const float* x, float* y,
                           int64_t m, int64_t n_alone, void* act) {
  const int64_t F = c_.n_ff_shexp;
  float* g = grown(gate_, (size_t)m * F);
  float* u = grown(up_, (size_t)m * F);
  float* sg = grown(shared_gate_, (size_t)m);
  // the one-row gate last: outputs before a repacked one must be whole 4-row tiles (matmul.h)
  const MatmulOutput gu[3] = {output_of(w.gate_shexp, F, g), output_of(w.up_shexp, F, u), output_of(w.gate_inp_shexp, 1, sg)};
  products(pool, K, gu, 3, E_, x, m, n_alone, act);
  K.swiglu(g, g, u, m * F);
  const MatmulOutput down = output_of(w.down_shexp, E_, y);
  products(pool, K, &down, 1, F, g, m, n_alone, act);
  for (int64_t t = 0; t < m; ++t) {
    const float s = 1.0f / (1.0f + std::exp(-sg[t]));
    for (int64_t i = 0; i < E_; ++i) y[t * E_ + i] *= s;
  }
}

void MoeFfn::run(ThreadPool& pool, const Kernels& K, const MoeWeights& w, const float* x, float* y, int64_t m,
                 int64_t n_alone, void* act) {
  const int k = c_.n_expert_used;
  const int64_t F = c_.n_ff_exp, n_rows = m * k;
  route(pool, K, w, x, m, n_alone, act);
  float* dn = grown(down_, (size_t)n_rows * E_);
  if (m == 1) {
    // one token: the gate and up products of its k experts share the input, so they are one group
    // (one pass over the pool); the down products, each with its own input, are a second pass
    float* g = grown(gate_, (size_t)k * F);
    float* u = grown(up_, (size_t)k * F);
    std::vector<MatmulOutput> gu(2 * k);
    for (int j = 0; j < k; ++j) {
      gu[2 * j] = output_of(expert_view(w.gate_exps, expert_[j], F), F, g + j * F);
      gu[2 * j + 1] = output_of(expert_view(w.up_exps, expert_[j], F), F, u + j * F);
    }
    matmul_group(pool, K, gu.data(), 2 * k, E_, x, 1, act, true);
    K.swiglu(g, g, u, k * F);
    std::vector<MatmulOutput> down(k);
    for (int j = 0; j < k; ++j) down[j] = output_of(expert_view(w.down_exps, expert_[j], E_), E_, dn + slot_[j] * E_);
    matmul_each(pool, K, down.data(), k, F, g, act);
  } else {
    // several tokens: each routed-to expert runs its tokens' rows as one product (gathered,
    // multiplied, the results summed per token below)
    float* xg = grown(xg_, (size_t)n_rows * E_);
    float* g = grown(gate_, (size_t)n_rows * F);
    float* u = grown(up_, (size_t)n_rows * F);
    for (int64_t r = 0; r < n_rows; ++r) std::memcpy(xg + r * E_, x + token_[r] * E_, sizeof(float) * E_);
    for (int e = 0; e < c_.n_expert; ++e) {
      const int64_t r0 = first_[e], n = first_[e + 1] - r0;
      if (n == 0) continue;
      int64_t a = 0;  // rows of tokens computed alone come first (token_ increases within an expert)
      while (a < n && token_[r0 + a] < n_alone) ++a;
      const MatmulOutput gu[2] = {output_of(expert_view(w.gate_exps, e, F), F, g + r0 * F),
                                  output_of(expert_view(w.up_exps, e, F), F, u + r0 * F)};
      products(pool, K, gu, 2, E_, xg + r0 * E_, n, a, act);
      K.swiglu(g + r0 * F, g + r0 * F, u + r0 * F, n * F);
      const MatmulOutput down = output_of(expert_view(w.down_exps, e, E_), E_, dn + r0 * E_);
      products(pool, K, &down, 1, F, g + r0 * F, n, a, act);
    }
  }
  if (c_.n_ff_shexp > 0) shared_expert(pool, K, w, x, y, m, n_alone, act);
  else std::fill(y, y + m * E_, 0.0f);
  for (int64_t t = 0; t < m; ++t)
    for (int j = 0; j < k; ++j) {
      const float s = weight_[t * k + j];
      const float* d = dn + slot_[t * k + j] * E_;
      float* yt = y + t * E_;
      for (int64_t i = 0; i < E_; ++i) yt[i] += s * d[i];
    }
}

}  // namespace qc
