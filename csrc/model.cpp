#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

#include "matmul.h"

namespace qc {

// The cache's element types from the configuration (kv_f16: F16, else F32, for K and V alike).
static KvTypes kv_types(const ModelConfig& c) {
  const int32_t t = c.kv_f16 ? GGML_F16 : GGML_F32;
  return KvTypes{t, t};
}

namespace {

// Tokens per feed-forward sub-step of a prefill step: gate/up then hold (kFfnChunk, n_ff) floats
// instead of (n_batch, n_ff) (2 x 2.5 MB instead of 2 x 10 MB at n_ff = 4864, n_batch = 512).
// The gemm streams the weights once per activation chunk of its own anyway (matmul.cpp: 192 KiB
// of quantized rows, ~200 tokens of n_embd = 896, ~32 of n_ff), so few weight passes are added;
// the cost is 12 more thread-pool runs (barriers) per layer in a 512-token step.
constexpr int64_t kFfnChunk = 128;

void check_matrix(const Kernels& K, const Tensor& t, int64_t rows, int64_t cols, const std::string& name) {
  if (!t.data) throw std::invalid_argument("missing tensor " + name);
  if (t.rows != rows || t.cols != cols)
    throw std::invalid_argument(name + ": shape (" + std::to_string(t.rows) + ", " + std::to_string(t.cols) +
                                ") does not match the model's (" + std::to_string(rows) + ", " + std::to_string(cols) + ")");
  if (t.type < 0 || t.type >= GGML_TYPE_COUNT || !K.weight[t.type].vec_dot || !K.dequantize[t.type])
    throw std::invalid_argument(name + ": tensor type " + std::to_string(t.type) + " is not supported");
  if (cols % type_info(t.type).block_elems != 0)
    throw std::invalid_argument(name + ": row length " + std::to_string(cols) + " is not a multiple of the " +
                                type_info(t.type).name + " block size");
}

void check_vector(const Tensor& t, int64_t n, const std::string& name, bool optional) {
  if (!t.data) {
    if (optional) return;
    throw std::invalid_argument("missing tensor " + name);
  }
  if (t.type != GGML_F32 || t.rows * t.cols != n)
    throw std::invalid_argument(name + ": expected a float32 vector of " + std::to_string(n) + " elements");
}

// The product of one weight, in whatever layout it is held.
MatmulOutput output_of(const Tensor& t, int64_t n_out, float* y) { return {t.data, t.type, n_out, y, t.layout}; }

constexpr size_t kRepackAlign = 64;

size_t aligned(size_t n) { return (n + kRepackAlign - 1) / kRepackAlign * kRepackAlign; }

// Whole pages inside [p, p + n) out of this process's resident set (see release_repacked_source).
void release_pages(const void* p, size_t n) {
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t begin = ((uintptr_t)p + page - 1) / page * page, end = ((uintptr_t)p + n) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// The pages covering [p, p + n) mapped in one call (Linux 5.14+; elsewhere, or refused, they are
// faulted in one by one as they are touched): fewer page faults while repacking.
void populate(const void* p, size_t n, bool write) {
#if defined(MADV_POPULATE_READ) && defined(MADV_POPULATE_WRITE)
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t begin = (uintptr_t)p / page * page, end = ((uintptr_t)p + n + page - 1) / page * page;
  madvise(reinterpret_cast<void*>(begin), end - begin, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
#else
  (void)p, (void)n, (void)write;
#endif
}

}  // namespace

PageBuffer::PageBuffer(size_t n) : n_(n) {
  if (!n) return;
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  p_ = static_cast<uint8_t*>(p);
}

PageBuffer& PageBuffer::operator=(PageBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) munmap(p_, n_);
    p_ = o.p_, n_ = o.n_;
    o.p_ = nullptr, o.n_ = 0;
  }
  return *this;
}

PageBuffer::~PageBuffer() {
  if (p_) munmap(p_, n_);
}

Model::Model(const ModelConfig& cfg, ModelWeights w, int n_threads)
    : cfg_(cfg), w_(std::move(w)), pool_(n_threads > 0 ? n_threads : default_thread_count()), K_(&kernels()) {
  const ModelConfig& c = cfg_;
  if (c.n_layer <= 0 || c.n_embd <= 0 || c.n_ff <= 0 || c.n_head <= 0 || c.n_kv_head <= 0 || c.head_dim <= 0 ||
      c.n_vocab <= 0 || c.n_ctx <= 0 || c.n_batch <= 0 || c.n_seq <= 0)
    throw std::invalid_argument("model config: every size must be positive");
  if (c.n_head % c.n_kv_head != 0)
    throw std::invalid_argument("model config: head_count " + std::to_string(c.n_head) +
                                " is not a multiple of head_count_kv " + std::to_string(c.n_kv_head));
  if (c.head_dim % 2 != 0) throw std::invalid_argument("model config: head_dim must be even for RoPE");
  if ((int64_t)w_.layers.size() != c.n_layer)
    throw std::invalid_argument("model has " + std::to_string(w_.layers.size()) + " blocks, config says " +
                                std::to_string(c.n_layer));
  const int64_t q_dim = (int64_t)c.n_head * c.head_dim, kv_dim = (int64_t)c.n_kv_head * c.head_dim;
  const Kernels& K = *K_;
  check_matrix(K, w_.tok_embd, c.n_vocab, c.n_embd, "token_embd.weight");
  check_matrix(K, w_.output, c.n_vocab, c.n_embd, "output.weight");
  check_vector(w_.output_norm, c.n_embd, "output_norm.weight", false);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = w_.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    check_vector(L.attn_norm, c.n_embd, p + "attn_norm.weight", false);
    check_matrix(K, L.wq, q_dim, c.n_embd, p + "attn_q.weight");
    check_matrix(K, L.wk, kv_dim, c.n_embd, p + "attn_k.weight");
    check_matrix(K, L.wv, kv_dim, c.n_embd, p + "attn_v.weight");
    check_vector(L.bq, q_dim, p + "attn_q.bias", true);
    check_vector(L.bk, kv_dim, p + "attn_k.bias", true);
    check_vector(L.bv, kv_dim, p + "attn_v.bias", true);
    check_matrix(K, L.wo, c.n_embd, q_dim, p + "attn_output.weight");
    check_vector(L.ffn_norm, c.n_embd, p + "ffn_norm.weight", false);
    check_matrix(K, L.w_gate, c.n_ff, c.n_embd, p + "ffn_gate.weight");
    check_matrix(K, L.w_up, c.n_ff, c.n_embd, p + "ffn_up.weight");
    check_matrix(K, L.w_down, c.n_embd, c.n_ff, p + "ffn_down.weight");
  }

  if (c.repack) plan_repack();

  const KvTypes kv = kv_types(c);
  layer_cache_bytes_ = (size_t)c.n_kv_head * (size_t)c.n_ctx * kv_row_bytes(kv.k, c.head_dim);
  k_cache_ = ZeroBuffer<uint8_t>(layer_cache_bytes_ * c.n_layer * c.n_seq);
  v_cache_ = ZeroBuffer<uint8_t>(layer_cache_bytes_ * c.n_layer * c.n_seq);

  const int64_t B = c.n_batch;
  ffn_chunk_ = std::min<int64_t>(B, kFfnChunk);
  x_ = ZeroBuffer<float>(B * c.n_embd);
  xn_ = ZeroBuffer<float>(B * c.n_embd);
  q_ = ZeroBuffer<float>(B * q_dim);
  k_ = ZeroBuffer<float>(B * kv_dim);
  v_ = ZeroBuffer<float>(B * kv_dim);
  att_ = ZeroBuffer<float>(B * q_dim);
  gate_ = ZeroBuffer<float>(ffn_chunk_ * c.n_ff);
  up_ = ZeroBuffer<float>(ffn_chunk_ * c.n_ff);
  cos_ = ZeroBuffer<float>(B * c.head_dim / 2);
  sin_ = ZeroBuffer<float>(B * c.head_dim / 2);
  att_scratch_ = ZeroBuffer<float>(attention_scratch_floats(pool_.size(), c.n_head, c.n_kv_head, c.head_dim, c.n_ctx));

  // big enough for the products before the matrices are repacked and after
  size_t act = activation_scratch_bytes();
  for (const PendingRepack& p : pending_) p.t->layout = p.layout;
  act = std::max(act, activation_scratch_bytes());
  for (const PendingRepack& p : pending_) p.t->layout = QC_LAYOUT_STORED;
  act_ = ZeroBuffer<uint8_t>(act);
  order_.resize(B), row_of_.resize(B), pos_.resize(B), seq_.resize(B);
}

// The quantized-activation scratch the products of one step need with the weights as they are.
size_t Model::activation_scratch_bytes() const {
  const ModelConfig& c = cfg_;
  const Kernels& K = *K_;
  const int64_t q_dim = (int64_t)c.n_head * c.head_dim, kv_dim = (int64_t)c.n_kv_head * c.head_dim, B = c.n_batch;
  size_t act = 0;
  for (const LayerWeights& L : w_.layers) {
    const MatmulOutput qkv[3] = {output_of(L.wq, q_dim, nullptr), output_of(L.wk, kv_dim, nullptr),
                                 output_of(L.wv, kv_dim, nullptr)};
    const MatmulOutput ffn[2] = {output_of(L.w_gate, c.n_ff, nullptr), output_of(L.w_up, c.n_ff, nullptr)};
    act = std::max({act, matmul_group_scratch_bytes(K, qkv, 3, c.n_embd, B),
                    matmul_group_scratch_bytes(K, ffn, 2, c.n_embd, ffn_chunk_),
                    matmul_scratch_bytes(K, L.wo.type, q_dim, B, L.wo.layout),
                    matmul_scratch_bytes(K, L.w_down.type, c.n_ff, ffn_chunk_, L.w_down.layout)});
  }
  act = std::max(act, matmul_scratch_bytes(K, w_.output.type, c.n_embd, B, w_.output.layout));
  return act;
}

// Chooses the matrices that this kernel table has a repacked decode kernel for (repack.h) and their
// layouts, and reserves repacked_ for them (untouched: no memory yet). The copies are made by the
// first single-token forward() (repack_pending): only the decode kernels read the repacked
// layouts, prefill reads stored rows (repacked ones are unpacked for it), so loading a model reads
// no weights, the prompt's first token does not wait for the copies, and a model used only for
// prefill (logits, embeddings, perplexity) never makes them.
// Token embeddings of their own stay as stored (a step reads only its tokens' rows of them); tied
// to a repacked output matrix, they are read from its copy (embed_row), so that the file's pages
// of that matrix are not kept resident twice.
void Model::plan_repack() {
  const Kernels& K = *K_;
  const bool tied = w_.tok_embd.data == w_.output.data && w_.tok_embd.type == w_.output.type;
  auto consider = [&](std::initializer_list<Tensor*> group) {
    for (const Tensor* t : group)
      if (t->rows % kRepackRows != 0) return;  // MatmulOutput::layout: the outputs before a repacked one
    for (Tensor* t : group) {
      const int32_t layout = repack_layout_of(t->type);
      if (layout != QC_LAYOUT_STORED && K.layout[layout].gemv && repack_fits(layout, t->rows, t->cols))
        pending_.push_back({t, layout});
    }
  };
  for (LayerWeights& L : w_.layers) {
    consider({&L.wq, &L.wk, &L.wv});
    consider({&L.wo});
    consider({&L.w_gate, &L.w_up});
    consider({&L.w_down});
  }
  consider({&w_.output});
  if (tied && !pending_.empty() && pending_.back().t == &w_.output) {
    tied_repacked_ = true;
    embd_quad_ = ZeroBuffer<uint8_t>(kRepackRows * row_bytes(w_.output.type, w_.output.cols));
  }
  size_t total = 0;
  for (const PendingRepack& p : pending_) total += aligned(row_bytes(p.t->type, p.t->cols) * (size_t)p.t->rows);
  repacked_ = PageBuffer(total);
}

// Makes the copies plan_repack chose, one matrix at a time across the pool. With
// cfg_.release_repacked_source each thread gives back its source pages every kReleaseBytes as it
// goes, so resident memory grows by about that much per thread, not by a whole matrix (a tied
// 151936-row output matrix is 140 MiB). A page shared with the next chunk is kept until the matrix
// is done; one another thread still reads would only be read again from the file.
void Model::repack_pending() {
  constexpr size_t kReleaseBytes = 1 << 20;
  size_t offset = 0;
  for (const PendingRepack& p : pending_) {
    Tensor* t = p.t;
    const size_t quad_bytes = kRepackRows * row_bytes(t->type, t->cols), bytes = quad_bytes * (size_t)(t->rows / kRepackRows);
    const int64_t chunk = std::max<int64_t>(1, (int64_t)(kReleaseBytes / quad_bytes));  // quads
    const uint8_t* src = static_cast<const uint8_t*>(t->data);
    uint8_t* dst = repacked_.data() + offset;
    pool_.run([&](int ith, int nth) {
      int64_t q0, q1;
      split_range(t->rows / kRepackRows, ith, nth, &q0, &q1);
      for (int64_t c0 = q0; c0 < q1; c0 += chunk) {
        const int64_t c1 = std::min(q1, c0 + chunk);
        populate(src + c0 * quad_bytes, (size_t)(c1 - c0) * quad_bytes, false);
        populate(dst + c0 * quad_bytes, (size_t)(c1 - c0) * quad_bytes, true);
        repack_rows(p.layout, src + c0 * quad_bytes, (c1 - c0) * kRepackRows, t->cols, dst + c0 * quad_bytes);
        if (cfg_.release_repacked_source) release_pages(src + c0 * quad_bytes, (size_t)(c1 - c0) * quad_bytes);
      }
    });
    if (cfg_.release_repacked_source) release_pages(src, bytes);
    t->data = dst;
    t->layout = p.layout;
    offset += aligned(bytes);
  }
  pending_.clear();
  if (tied_repacked_) w_.tok_embd = w_.output;
}

// Row `token` of the token embeddings, dequantized into out (n_embd floats).
void Model::embed_row(int32_t token, float* out) {
  const Tensor& t = w_.tok_embd;
  const size_t rb = row_bytes(t.type, t.cols);
  const uint8_t* base = static_cast<const uint8_t*>(t.data);
  if (t.layout == QC_LAYOUT_STORED) {
    K_->dequantize[t.type](base + (size_t)token * rb, out, t.cols);
    return;
  }
  // repacked (tied to the output matrix): the token's quad of rows unpacked, then its row
  const int64_t quad = token / kRepackRows;
  unrepack_rows(t.layout, base + (size_t)quad * kRepackRows * rb, kRepackRows, t.cols, embd_quad_.data());
  K_->dequantize[t.type](embd_quad_.data() + (size_t)(token % kRepackRows) * rb, out, t.cols);
}

void Model::add_bias(float* y, const Tensor& b, int64_t n, int64_t width) {
  if (!b.data) return;
  const float* bias = static_cast<const float*>(b.data);
  for (int64_t t = 0; t < n; ++t) K_->add(y + t * width, y + t * width, bias, width);
}

// Copies this step's keys and values (m computed rows) into their slots at their positions.
void Model::store_kv(int l, int64_t m) {
  const ModelConfig& c = cfg_;
  const int64_t kv_dim = (int64_t)c.n_kv_head * c.head_dim;
  for (int which = 0; which < 2; ++which) {
    const float* src = which == 0 ? k_.data() : v_.data();
    for (int64_t t = 0; t < m; ++t) {
      uint8_t* cache = static_cast<uint8_t*>(which == 0 ? k_layer(l, seq_[t]) : v_layer(l, seq_[t]));
      for (int g = 0; g < c.n_kv_head; ++g) {
        const float* row = src + t * kv_dim + (int64_t)g * c.head_dim;
        const int32_t type = which == 0 ? kv_types(c).k : kv_types(c).v;
        const size_t index = ((size_t)g * c.n_ctx + (size_t)pos_[t]) * kv_row_bytes(type, c.head_dim);
        kv_store_row(*K_, type, row, cache + index, c.head_dim);
      }
    }
  }
}

void Model::copy_slot(int src, int dst, int64_t n_pos) {
  const ModelConfig& c = cfg_;
  if (src < 0 || src >= c.n_seq || dst < 0 || dst >= c.n_seq)
    throw std::invalid_argument("copy_slot: slots " + std::to_string(src) + " -> " + std::to_string(dst) +
                                " outside 0.." + std::to_string(c.n_seq - 1));
  if (n_pos < 0 || n_pos > c.n_ctx)
    throw std::invalid_argument("copy_slot: " + std::to_string(n_pos) + " positions exceed the context of " +
                                std::to_string(c.n_ctx));
  if (src == dst || n_pos == 0) return;
  const size_t head_bytes = layer_cache_bytes_ / c.n_kv_head, bytes = head_bytes / c.n_ctx * n_pos;
  for (int l = 0; l < c.n_layer; ++l)
    for (int g = 0; g < c.n_kv_head; ++g) {
      std::memcpy(static_cast<uint8_t*>(k_layer(l, dst)) + g * head_bytes, static_cast<uint8_t*>(k_layer(l, src)) + g * head_bytes, bytes);
      std::memcpy(static_cast<uint8_t*>(v_layer(l, dst)) + g * head_bytes, static_cast<uint8_t*>(v_layer(l, src)) + g * head_bytes, bytes);
    }
}

void Model::kv_rows(int slot, int64_t n_pos, uint8_t* buf, bool to_cache) {
  const ModelConfig& c = cfg_;
  if (slot < 0 || slot >= c.n_seq) throw std::invalid_argument("kv_rows: slot " + std::to_string(slot) + " outside 0.." + std::to_string(c.n_seq - 1));
  if (n_pos < 0 || n_pos > c.n_ctx)
    throw std::invalid_argument("kv_rows: " + std::to_string(n_pos) + " positions exceed the context of " + std::to_string(c.n_ctx));
  const size_t head_bytes = layer_cache_bytes_ / c.n_kv_head, bytes = head_bytes / c.n_ctx * n_pos;
  for (int l = 0; l < c.n_layer; ++l)
    for (int kv = 0; kv < 2; ++kv)
      for (int g = 0; g < c.n_kv_head; ++g, buf += bytes) {
        uint8_t* cache = static_cast<uint8_t*>(kv ? v_layer(l, slot) : k_layer(l, slot)) + g * head_bytes;
        if (to_cache) std::memcpy(cache, buf, bytes);
        else std::memcpy(buf, cache, bytes);
      }
}

bool Model::forward(const int32_t* tokens, int64_t n, int64_t pos, float* logits, bool all_logits, float* hidden,
                    const std::function<bool()>& should_stop) {
  const ModelConfig& c = cfg_;
  if (n <= 0) throw std::invalid_argument("forward: no tokens");
  if (pos < 0 || pos + n > c.n_ctx)
    throw std::invalid_argument("forward: positions " + std::to_string(pos) + ".." + std::to_string(pos + n - 1) +
                                " exceed the context of " + std::to_string(c.n_ctx));
  std::vector<int32_t> positions(n), seqs(n, 0);
  for (int64_t i = 0; i < n; ++i) positions[i] = (int32_t)(pos + i);
  std::vector<int64_t> rows;
  if (logits) {
    for (int64_t i = all_logits ? 0 : n - 1; i < n; ++i) rows.push_back(i);
  }
  return forward_batch(tokens, positions.data(), seqs.data(), n, rows.data(), (int64_t)rows.size(), logits, hidden,
                       should_stop);
}

bool Model::forward_batch(const int32_t* tokens, const int32_t* pos, const int32_t* seq, int64_t n,
                          const int64_t* logit_rows, int64_t n_logits, float* logits, float* hidden,
                          const std::function<bool()>& should_stop) {
  const ModelConfig& c = cfg_;
  if (n <= 0) throw std::invalid_argument("forward: no tokens");
  auto row_error = [](int64_t i, const std::string& what) {
    return std::invalid_argument("forward: row " + std::to_string(i) + ": " + what);
  };
  std::vector<int64_t> run_of_slot(c.n_seq, -1);  // first row of the slot's run
  bool has_one_token_run = false;
  int64_t run_start = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.n_vocab)
      throw row_error(i, "token id " + std::to_string(tokens[i]) + " is outside the vocabulary of " + std::to_string(c.n_vocab));
    if (seq[i] < 0 || seq[i] >= c.n_seq)
      throw row_error(i, "sequence slot " + std::to_string(seq[i]) + " is outside 0.." + std::to_string(c.n_seq - 1));
    if (pos[i] < 0 || pos[i] >= c.n_ctx)
      throw row_error(i, "position " + std::to_string(pos[i]) + " is outside the context of " + std::to_string(c.n_ctx));
    if (i > 0 && seq[i] == seq[i - 1] && pos[i] == pos[i - 1] + 1) continue;  // the same run
    if (i > 0 && i - run_start == 1) has_one_token_run = true;
    run_start = i;
    if (run_of_slot[seq[i]] >= 0)
      throw row_error(i, "slot " + std::to_string(seq[i]) + " already has a run from row " +
                             std::to_string(run_of_slot[seq[i]]) +
                             " (a slot's rows must be consecutive, at consecutive positions)");
    run_of_slot[seq[i]] = i;
  }
  if (n - run_start == 1) has_one_token_run = true;
  if (n_logits > 0 && !logits) throw std::invalid_argument("forward: logit rows asked for without an output");
  for (int64_t j = 0; j < n_logits; ++j)
    if (logit_rows[j] < 0 || logit_rows[j] >= n || (j > 0 && logit_rows[j] <= logit_rows[j - 1]))
      throw std::invalid_argument("forward: logit rows must be increasing row indices below " + std::to_string(n));

  K_ = &kernels();  // the path selected now (tests switch paths between calls)
  if (has_one_token_run && !pending_.empty()) repack_pending();  // the first decode step (plan_repack says why)
  const int64_t* lr = logit_rows;
  std::vector<int64_t> rows;  // this step's logit rows, relative to its first row
  for (int64_t done = 0; done < n; done += c.n_batch) {
    const int64_t m = std::min<int64_t>(c.n_batch, n - done);
    rows.clear();
    for (; lr < logit_rows + n_logits && *lr < done + m; ++lr) rows.push_back(*lr - done);
    float* lg = logits ? logits + (lr - logit_rows - (int64_t)rows.size()) * c.n_vocab : nullptr;
    float* hd = hidden ? hidden + done * c.n_embd : nullptr;
    if (!step(tokens + done, pos + done, seq + done, m, rows.data(), (int64_t)rows.size(), lg, hd, should_stop))
      return false;
  }
  return true;
}

constexpr int kMaxGroup = 3;  // the largest group: Q, K and V

// The products of a group over m rows of x, the first n_alone of them alone (one-token runs), the
// rest together (forward_batch says why).
void Model::products(const MatmulOutput* outs, int n_outs, int64_t n_in, const float* x, int64_t m, int64_t n_alone) {
  const int64_t a = std::max<int64_t>(0, std::min(n_alone, m));
  if (a > 0) matmul_group(pool_, *K_, outs, n_outs, n_in, x, a, act_.data(), true);
  if (m > a) {
    MatmulOutput rest[kMaxGroup];
    if (n_outs > kMaxGroup) throw std::logic_error("products: more outputs than a group holds");
    for (int i = 0; i < n_outs; ++i) rest[i] = outs[i], rest[i].y += a * outs[i].n_out;
    matmul_group(pool_, *K_, rest, n_outs, n_in, x + a * n_in, m - a, act_.data(), false);
  }
}

// One step of m <= n_batch rows (forward_batch's arguments, checked there). The rows are computed
// in an order of their own: the one-token runs first, then the longer runs, so that each group's
// rows are contiguous for its products (forward_batch).
bool Model::step(const int32_t* tokens, const int32_t* pos, const int32_t* seq, int64_t m, const int64_t* logit_rows,
                 int64_t n_logits, float* logits, float* hidden, const std::function<bool()>& should_stop) {
  const ModelConfig& c = cfg_;
  const Kernels& K = *K_;
  const int64_t E = c.n_embd, q_dim = (int64_t)c.n_head * c.head_dim, kv_dim = (int64_t)c.n_kv_head * c.head_dim;
  const int half = c.head_dim / 2;

  // the runs (caller's rows), then the computed order: one-token runs, then the others
  std::vector<std::pair<int64_t, int64_t>> caller_runs;  // (first row, rows)
  for (int64_t i = 0; i < m; ++i) {
    if (i > 0 && seq[i] == seq[i - 1] && pos[i] == pos[i - 1] + 1) ++caller_runs.back().second;
    else caller_runs.push_back({i, 1});
  }
  runs_.clear(), run_seq_.clear();
  int64_t r = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& [first, len] : caller_runs) {
      if ((len == 1) != (pass == 0)) continue;
      runs_.push_back({r, len, pos[first], nullptr, nullptr});
      run_seq_.push_back(seq[first]);
      for (int64_t i = first; i < first + len; ++i, ++r) order_[r] = i, row_of_[i] = r, pos_[r] = pos[i], seq_[r] = seq[i];
    }
    if (pass == 0) n_alone_ = r;
  }
  for (int64_t t = 0; t < m; ++t) embed_row(tokens[order_[t]], x_.data() + t * E);
  for (const AttentionRun& R : runs_)
    rope_tables(c.rope, R.pos0, R.n_tok, cos_.data() + R.row0 * half, sin_.data() + R.row0 * half);

  for (int l = 0; l < c.n_layer; ++l) {
    if (should_stop && should_stop()) return false;
    const LayerWeights& L = w_.layers[l];
    // attention sub-block: x += Wo . attention(rope(Wq xn + bq), rope(Wk xn + bk), Wv xn + bv)
    for (int64_t t = 0; t < m; ++t)
      K.rmsnorm(xn_.data() + t * E, x_.data() + t * E, static_cast<const float*>(L.attn_norm.data), E, c.rms_eps);
    const MatmulOutput qkv[3] = {output_of(L.wq, q_dim, q_.data()), output_of(L.wk, kv_dim, k_.data()),
                                 output_of(L.wv, kv_dim, v_.data())};
    products(qkv, 3, E, xn_.data(), m, n_alone_);
    add_bias(q_.data(), L.bq, m, q_dim);
    add_bias(k_.data(), L.bk, m, kv_dim);
    add_bias(v_.data(), L.bv, m, kv_dim);
    rope_apply(pool_, K, q_.data(), m, c.n_head, c.head_dim, cos_.data(), sin_.data(), c.rope.neox);
    rope_apply(pool_, K, k_.data(), m, c.n_kv_head, c.head_dim, cos_.data(), sin_.data(), c.rope.neox);
    store_kv(l, m);
    for (size_t i = 0; i < runs_.size(); ++i) runs_[i].k_cache = k_layer(l, run_seq_[i]), runs_[i].v_cache = v_layer(l, run_seq_[i]);
    attention_runs(pool_, K, att_.data(), q_.data(), runs_.data(), (int)runs_.size(), kv_types(c), c.n_head, c.n_kv_head,
                   c.head_dim, c.n_ctx, att_scratch_.data());
    // the output projection lands in xn_, free once the Q/K/V products have read it
    const MatmulOutput wo = output_of(L.wo, E, xn_.data());
    products(&wo, 1, q_dim, att_.data(), m, n_alone_);
    K.add(x_.data(), x_.data(), xn_.data(), m * E);

    // feed-forward sub-block: x += W_down . (silu(W_gate xn) * (W_up xn))
    // The tokens are independent here, so they go ffn_chunk_ at a time: the (tokens, n_ff)
    // intermediates, the largest activations, then need only ffn_chunk_ rows. A chunk's output
    // overwrites its own rows of xn_, which its gate and up products have read by then.
    for (int64_t t = 0; t < m; ++t)
      K.rmsnorm(xn_.data() + t * E, x_.data() + t * E, static_cast<const float*>(L.ffn_norm.data), E, c.rms_eps);
    const MatmulOutput ffn[2] = {output_of(L.w_gate, c.n_ff, gate_.data()), output_of(L.w_up, c.n_ff, up_.data())};
    for (int64_t t0 = 0; t0 < m; t0 += ffn_chunk_) {
      const int64_t nt = std::min(ffn_chunk_, m - t0);
      products(ffn, 2, E, xn_.data() + t0 * E, nt, n_alone_ - t0);
      K.swiglu(gate_.data(), gate_.data(), up_.data(), nt * c.n_ff);
      const MatmulOutput down = output_of(L.w_down, E, xn_.data() + t0 * E);
      products(&down, 1, c.n_ff, gate_.data(), nt, n_alone_ - t0);
    }
    K.add(x_.data(), x_.data(), xn_.data(), m * E);
  }

  // Final norm and LM head, only for the rows asked for.
  const float* out_norm = static_cast<const float*>(w_.output_norm.data);
  if (hidden) {
    for (int64_t t = 0; t < m; ++t) K.rmsnorm(xn_.data() + t * E, x_.data() + t * E, out_norm, E, c.rms_eps);
    for (int64_t i = 0; i < m; ++i) std::memcpy(hidden + i * E, xn_.data() + row_of_[i] * E, sizeof(float) * E);
  } else {
    for (int64_t j = 0; j < n_logits; ++j) {
      const int64_t t = row_of_[logit_rows[j]];
      K.rmsnorm(xn_.data() + t * E, x_.data() + t * E, out_norm, E, c.rms_eps);
    }
  }
  if (logits && n_logits > 0) {
    // the rows asked for, in the caller's order, into x_ (free now); alone unless a run asks for
    // several rows (all of a prompt's logits): then the prefill kernels, as for a prompt's rows
    bool alone = true;
    for (int64_t j = 0; j < n_logits; ++j) {
      std::memcpy(x_.data() + j * E, xn_.data() + row_of_[logit_rows[j]] * E, sizeof(float) * E);
      if (j > 0 && seq[logit_rows[j]] == seq[logit_rows[j - 1]]) alone = false;
    }
    matmul(pool_, K, w_.output.data, w_.output.type, c.n_vocab, E, x_.data(), n_logits, logits, act_.data(),
           w_.output.layout, alone);
    // A non-finite hidden state must give non-finite logits, which the sampler reports. The
    // product alone does not promise it: the activation quantizers of some paths read a block of
    // NaN as zeros (their block maximum skips NaN), so the row's logits are made NaN here.
    for (int64_t j = 0; j < n_logits; ++j) {
      const float* h = x_.data() + j * E;
      float probe = 0.0f;
      for (int64_t e = 0; e < E; ++e) probe += h[e] * 0.0f;  // 0 for finite values, NaN otherwise
      if (probe != 0.0f) std::fill(logits + j * c.n_vocab, logits + (j + 1) * c.n_vocab, NAN);
    }
  }
  return true;
}

}  // namespace qc
