#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

#include "hadamard.h"
#include "matmul.h"

namespace qc {

namespace {

// Tokens per feed-forward sub-step of a prefill step: gate/up then hold (kFfnChunk, n_ff) floats
// instead of (n_batch, n_ff) (2 x 2.5 MB instead of 2 x 10 MB at n_ff = 4864, n_batch = 512).
// The gemm streams the weights once per activation chunk of its own anyway (matmul.cpp: 192 KiB
// of quantized rows, ~200 tokens of n_embd = 896, ~32 of n_ff), so few weight passes are added;
// the cost is 12 more thread-pool runs (barriers) per layer in a 512-token step.
constexpr int64_t kFfnChunk = 128;

void check_vector(const Tensor& t, int64_t n, const std::string& name, bool optional) {
  if (!t.data) {
    if (optional) return;
    throw std::invalid_argument("missing tensor " + name);
  }
  if (t.type != GGML_F32 || t.rows * t.cols != n)
    throw std::invalid_argument(name + ": expected a float32 vector of " + std::to_string(n) + " elements");
}

// Bytes of one cache row of `type` (the K or V cache: `which`), or an error naming the type and
// why it cannot hold this model's rows (a quantized type needs head_dim % 32 == 0).
size_t cache_row_bytes(int32_t type, int head_dim, const char* which) {
  const bool known = type == GGML_F32 || type == GGML_F16 || type == GGML_Q8_0 || type == GGML_Q4_0;
  if (!known) throw std::invalid_argument(std::string(which) + " cache type " + std::to_string(type) +
                                          " is not one of f32, f16, q8_0, q4_0");
  const int block = type_info(type).block_elems;
  if (head_dim % block != 0)
    throw std::invalid_argument(std::string(which) + " cache type " + type_info(type).name + " stores blocks of " +
                                std::to_string(block) + " values: head_dim " + std::to_string(head_dim) +
                                " is not a multiple of " + std::to_string(block));
  return kv_row_bytes(type, head_dim);
}

// Prefill rows / elements at least, for the norms and elementwise steps to be shared between the
// threads (left to one thread, the others wait); a decode step's stay on one
constexpr int64_t kSharedRows = 16, kSharedElements = 16 * 1024;

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

// A tensor of the table against the model's shape for it (absent: allowed if optional).
void check_slot(const Kernels& K, const TensorSlot& slot, const Tensor& t, const ModelConfig& c, const std::string& name) {
  if (!t.data && slot.optional) return;
  const int64_t mats = slot.experts ? c.moe.n_expert : 1;
  if (slot.cols == Dim::none) check_vector(t, dim_value(c, slot.rows), name, false);
  else check_matrix(K, t, mats * dim_value(c, slot.rows), dim_value(c, slot.cols), name);
}

}  // namespace

#define QC_LAYER(name, member, rows, cols, optional) {name, &LayerWeights::member, nullptr, Dim::rows, Dim::cols, optional}
#define QC_GLOBAL(name, member, rows, cols, optional) {name, nullptr, &ModelWeights::member, Dim::rows, Dim::cols, optional}
#define QC_EXPERTS(name, member, rows, cols) {name, &LayerWeights::member, nullptr, Dim::rows, Dim::cols, true, true}
const TensorSlot kTensorSlots[] = {
    QC_GLOBAL("token_embd.weight", tok_embd, n_vocab, n_embd, false),
    QC_GLOBAL("output_norm.weight", output_norm, n_embd, none, false),
    QC_GLOBAL("output.weight", output, n_vocab, n_embd, false),  // the binding ties it to token_embd if absent
    QC_GLOBAL("rope_freqs.weight", rope_freqs, rope_pairs, none, true),
    QC_LAYER("attn_norm.weight", attn_norm, n_embd, none, false),
    QC_LAYER("attn_q.weight", wq, q_dim, n_embd, false),
    QC_LAYER("attn_k.weight", wk, kv_dim, n_embd, false),
    QC_LAYER("attn_v.weight", wv, kv_dim, n_embd, false),
    QC_LAYER("attn_q.bias", bq, q_dim, none, true),
    QC_LAYER("attn_k.bias", bk, kv_dim, none, true),
    QC_LAYER("attn_v.bias", bv, kv_dim, none, true),
    QC_LAYER("attn_q_norm.weight", q_norm, head_dim, none, true),
    QC_LAYER("attn_k_norm.weight", k_norm, head_dim, none, true),
    QC_LAYER("attn_output.weight", wo, n_embd, q_dim, false),
    QC_LAYER("ffn_norm.weight", ffn_norm, n_embd, none, false),
    // the dense FFN, or (ModelConfig::moe) the mixture of experts: Model checks which is there
    QC_LAYER("ffn_gate.weight", w_gate, n_ff, n_embd, true),
    QC_LAYER("ffn_up.weight", w_up, n_ff, n_embd, true),
    QC_LAYER("ffn_down.weight", w_down, n_embd, n_ff, true),
    QC_LAYER("ffn_gate_inp.weight", ffn_gate_inp, n_expert, n_embd, true),
    QC_EXPERTS("ffn_gate_exps.weight", ffn_gate_exps, n_ff_exp, n_embd),
    QC_EXPERTS("ffn_up_exps.weight", ffn_up_exps, n_ff_exp, n_embd),
    QC_EXPERTS("ffn_down_exps.weight", ffn_down_exps, n_embd, n_ff_exp),
    QC_LAYER("ffn_gate_inp_shexp.weight", ffn_gate_inp_shexp, one, n_embd, true),
    QC_LAYER("ffn_gate_shexp.weight", ffn_gate_shexp, n_ff_shexp, n_embd, true),
    QC_LAYER("ffn_up_shexp.weight", ffn_up_shexp, n_ff_shexp, n_embd, true),
    QC_LAYER("ffn_down_shexp.weight", ffn_down_shexp, n_embd, n_ff_shexp, true),
};
#undef QC_LAYER
#undef QC_GLOBAL
#undef QC_EXPERTS
const int kNumTensorSlots = sizeof(kTensorSlots) / sizeof(kTensorSlots[0]);

const char* dim_name(Dim d) {
  switch (d) {
    case Dim::none: return "";
    case Dim::n_embd: return "n_embd";
    case Dim::n_ff: return "n_ff";
    case Dim::n_vocab: return "n_vocab";
    case Dim::head_dim: return "head_dim";
    case Dim::rope_pairs: return "rope_pairs";
    case Dim::q_dim: return "q_dim";
    case Dim::kv_dim: return "kv_dim";
    case Dim::one: return "one";
    case Dim::n_expert: return "n_expert";
    case Dim::n_ff_exp: return "n_ff_exp";
    case Dim::n_ff_shexp: return "n_ff_shexp";
  }
  return "?";
}

int64_t dim_value(const ModelConfig& c, Dim d) {
  switch (d) {
    case Dim::none: return 1;
    case Dim::n_embd: return c.n_embd;
    case Dim::n_ff: return c.n_ff;
    case Dim::n_vocab: return c.n_vocab;
    case Dim::head_dim: return c.head_dim;
    case Dim::rope_pairs: return c.head_dim / 2;
    case Dim::q_dim: return (int64_t)c.n_head * c.head_dim;
    case Dim::kv_dim: return (int64_t)c.n_kv_head * c.head_dim;
    case Dim::one: return 1;
    case Dim::n_expert: return c.moe.n_expert;
    case Dim::n_ff_exp: return c.moe.n_ff_exp;
    case Dim::n_ff_shexp: return c.moe.n_ff_shexp;
  }
  return 0;
}

MoeWeights moe_weights(const LayerWeights& L) {
  return {L.ffn_gate_inp, L.ffn_gate_exps, L.ffn_up_exps, L.ffn_down_exps,
          L.ffn_gate_inp_shexp, L.ffn_gate_shexp, L.ffn_up_shexp, L.ffn_down_shexp};
}

PageBuffer::PageBuffer(size_t n, bool huge) : n_(n) {
  if (!n) return;
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (huge) madvise(p, n, MADV_HUGEPAGE);  // a refusal (THP off, or not built in) leaves 4 KiB pages
#else
  (void)huge;
#endif
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

// Whether MADV_HUGEPAGE can give anonymous memory huge pages here: transparent huge pages set to
// "always" or "madvise" (Linux); elsewhere, or set to "never", no.
bool huge_pages_available() {
#ifdef MADV_HUGEPAGE
  static const bool available = [] {
    FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return false;
    char buf[128] = {0};
    const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    return n > 0 && !std::strstr(buf, "[never]");
  }();
  return available;
#else
  return false;
#endif
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
  for (int s = 0; s < kNumTensorSlots; ++s) {
    const TensorSlot& slot = kTensorSlots[s];
    if (slot.global) check_slot(*K_, slot, w_.*slot.global, c, slot.name);
    else
      for (int l = 0; l < c.n_layer; ++l)
        check_slot(*K_, slot, w_.layers[l].*slot.layer, c, "blk." + std::to_string(l) + "." + slot.name);
  }
  for (const LayerWeights& L : w_.layers)
    if (!L.q_norm.data != !L.k_norm.data)
      throw std::invalid_argument("attn_q_norm and attn_k_norm must be both present or both absent");
  cfg_.rope.head_dim = c.head_dim;
  if (w_.rope_freqs.data) {
    const float* f = static_cast<const float*>(w_.rope_freqs.data);
    for (int i = 0; i < c.head_dim / 2; ++i)
      if (!(f[i] > 0.0f) || !std::isfinite(f[i]))
        throw std::invalid_argument("rope_freqs.weight: factor " + std::to_string(i) + " is " + std::to_string(f[i]) +
                                    ", not a positive number");
    cfg_.rope.freq_factors = f;
  }
  for (int l = 0; l < c.n_layer; ++l) {  // the FFN: a mixture of experts, or the dense one
    const LayerWeights& L = w_.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    if (c.moe.n_expert > 0) {
      check_moe(*K_, c.moe, moe_weights(L), c.n_embd, p);
    } else {
      for (const auto& [t, name] : {std::pair<const Tensor*, const char*>{&L.w_gate, "ffn_gate.weight"},
                                    {&L.w_up, "ffn_up.weight"}, {&L.w_down, "ffn_down.weight"}})
        if (!t->data) throw std::invalid_argument("missing tensor " + p + name);
    }
  }
  if (c.moe.n_expert > 0) moe_ = std::make_unique<MoeFfn>(c.moe, c.n_embd);

  if (c.repack) plan_repack();

  k_row_bytes_ = cache_row_bytes(c.kv.k, c.head_dim, "K");
  v_row_bytes_ = cache_row_bytes(c.kv.v, c.head_dim, "V");
  const char* rot = std::getenv("QWEN_CPU_KV_ROTATION");  // "0": plain rows (an A/B switch, as llama.cpp's LLAMA_ATTN_ROT_DISABLE)
  const bool rotate = !(rot && std::string(rot) == "0");
  k_rot_ = rotate ? kv_rotation(c.kv.k, c.head_dim, false) : 0;
  v_rot_ = rotate ? kv_rotation(c.kv.v, c.head_dim, true) : 0;
  const size_t rows = (size_t)c.n_layer * c.n_seq * c.n_kv_head * (size_t)c.n_ctx;
  k_cache_ = ZeroBuffer<uint8_t>(rows * k_row_bytes_);
  v_cache_ = ZeroBuffer<uint8_t>(rows * v_row_bytes_);

  const int64_t B = c.n_batch;
  ffn_chunk_ = std::min<int64_t>(B, kFfnChunk);
  x_ = ZeroBuffer<float>(B * c.n_embd);
  xn_ = ZeroBuffer<float>(B * c.n_embd);
  q_ = ZeroBuffer<float>(B * q_dim);
  k_ = ZeroBuffer<float>(B * kv_dim);
  v_ = ZeroBuffer<float>(B * kv_dim);
  att_ = ZeroBuffer<float>(B * q_dim);
  if (moe_) moe_out_ = ZeroBuffer<float>(B * c.n_embd);
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
    act = std::max(act, matmul_group_scratch_bytes(K, qkv, 3, c.n_embd, B));
    if (moe_) {
      act = std::max({act, moe_->scratch_bytes(K, moe_weights(L), B), matmul_scratch_bytes(K, L.wo.type, q_dim, B, L.wo.layout)});
      continue;
    }
    const MatmulOutput ffn[2] = {output_of(L.w_gate, c.n_ff, nullptr), output_of(L.w_up, c.n_ff, nullptr)};
    act = std::max({act,
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
  // The matrices that keep their stored layout are copied too, as they are, where that puts them in
  // huge pages and the file's pages go back: the one-row decode of stored Q6_K rows ran 1.3-1.5x
  // as fast from huge pages as from the file's 4 KiB ones (bench/README.md, "Stored matrices in
  // huge pages").
  const bool copy_stored = cfg_.huge_pages && cfg_.release_repacked_source && huge_pages_available();
  // view_rows: the rows of each expert's matrix inside a 3-D tensor (whole tiles per expert), or 0
  auto consider = [&](std::initializer_list<Tensor*> group, int64_t view_rows = 0) {
    int64_t unit = 1;  // MatmulOutput::layout: the outputs before a repacked one are whole tiles of it
    for (const Tensor* t : group) unit = std::max(unit, repack_rows_of(K.weight[t->type].layout));
    for (const Tensor* t : group)
      if (t->rows % unit != 0 || (view_rows && view_rows % unit != 0)) return;
    for (Tensor* t : group) {
      const int32_t layout = K.weight[t->type].layout;
      if (layout != QC_LAYOUT_STORED && repack_fits(layout, t->rows, t->cols))
        pending_.push_back({t, layout});
      else if (copy_stored && t->data)  // (absent: the MoE or shared-expert slots of a dense model)
        pending_.push_back({t, QC_LAYOUT_STORED});
    }
  };
  for (LayerWeights& L : w_.layers) {
    consider({&L.wq, &L.wk, &L.wv});
    consider({&L.wo});
    consider({&L.w_gate, &L.w_up});
    consider({&L.w_down});
    if (cfg_.moe.n_ff_exp > 0) {
      consider({&L.ffn_gate_exps, &L.ffn_up_exps}, cfg_.moe.n_ff_exp);
      consider({&L.ffn_down_exps}, cfg_.n_embd);
    }
    consider({&L.ffn_gate_shexp, &L.ffn_up_shexp});
    consider({&L.ffn_down_shexp});
  }
  consider({&w_.output});
  if (tied && !pending_.empty() && pending_.back().t == &w_.output) {
    tied_repacked_ = true;
    if (pending_.back().layout != QC_LAYOUT_STORED)  // embed_row reads a stored copy's rows as they are
      embd_tile_ = ZeroBuffer<uint8_t>(repack_rows_of(pending_.back().layout) * row_bytes(w_.output.type, w_.output.cols));
  }
  size_t total = 0;
  for (const PendingRepack& p : pending_) total += aligned(row_bytes(p.t->type, p.t->cols) * (size_t)p.t->rows);
  repacked_ = PageBuffer(total, cfg_.huge_pages);
}

// Makes the copies plan_repack chose, one matrix at a time across the pool. With
// cfg_.release_repacked_source each thread gives back its source pages every kReleaseBytes as it
// goes, so resident memory grows by about that much per thread, not by a whole matrix (a tied
// 151936-row output matrix is 140 MiB). A page shared with the next chunk is kept until the matrix
// is done; one another thread still reads would only be read again from the file.
void Model::repack_pending() {
  constexpr size_t kReleaseBytes = 1 << 20;
  if (cfg_.release_repacked_source) {
    // The vectors every step reads (kTensorSlots' one-dimensional ones: norms, biases, rope_freqs)
    // are copied first: left in the file they would keep their pages of it mapped once the
    // matrices around them are given back, and where the page cache holds the file in 2 MiB
    // folios, the whole 2 MiB around each (~110 MiB of a 0.5B Q4_0 file).
    std::vector<Tensor*> vecs;
    for (int s = 0; s < kNumTensorSlots; ++s) {
      const TensorSlot& slot = kTensorSlots[s];
      if (slot.cols != Dim::none) continue;
      if (slot.global) vecs.push_back(&(w_.*slot.global));
      else
        for (LayerWeights& L : w_.layers) vecs.push_back(&(L.*slot.layer));
    }
    size_t total = 0;
    for (const Tensor* t : vecs)
      if (t->data) total += aligned(row_bytes(t->type, t->cols) * (size_t)t->rows);
    vectors_ = PageBuffer(total, false);
    size_t at = 0;
    for (Tensor* t : vecs) {
      if (!t->data) continue;
      const size_t n = row_bytes(t->type, t->cols) * (size_t)t->rows;
      std::memcpy(vectors_.data() + at, t->data, n);
      t->data = vectors_.data() + at;
      at += aligned(n);
    }
  }
  size_t offset = 0;
  for (const PendingRepack& p : pending_) {
    Tensor* t = p.t;
    const int64_t tile_rows = p.layout == QC_LAYOUT_STORED ? 1 : repack_rows_of(p.layout);
    const size_t group_bytes = tile_rows * row_bytes(t->type, t->cols), bytes = group_bytes * (size_t)(t->rows / tile_rows);
    const int64_t chunk = std::max<int64_t>(1, (int64_t)(kReleaseBytes / group_bytes));  // groups of tile_rows rows
    const uint8_t* src = static_cast<const uint8_t*>(t->data);
    uint8_t* dst = repacked_.data() + offset;
    pool_.run([&](int ith, int nth) {
      int64_t q0, q1;
      split_range(t->rows / tile_rows, ith, nth, &q0, &q1);
      for (int64_t c0 = q0; c0 < q1; c0 += chunk) {
        const int64_t c1 = std::min(q1, c0 + chunk);
        populate(src + c0 * group_bytes, (size_t)(c1 - c0) * group_bytes, false);
        populate(dst + c0 * group_bytes, (size_t)(c1 - c0) * group_bytes, true);
        if (p.layout == QC_LAYOUT_STORED)
          std::memcpy(dst + c0 * group_bytes, src + c0 * group_bytes, (size_t)(c1 - c0) * group_bytes);
        else
          repack_rows(p.layout, src + c0 * group_bytes, (c1 - c0) * tile_rows, t->cols, dst + c0 * group_bytes);
        if (cfg_.release_repacked_source) release_pages(src + c0 * group_bytes, (size_t)(c1 - c0) * group_bytes);
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
  // repacked (tied to the output matrix): the token's tile of rows unpacked, then its row
  const int64_t tile_rows = repack_rows_of(t.layout), first = token / tile_rows * tile_rows;
  unrepack_rows(t.layout, base + (size_t)first * rb, tile_rows, t.cols, embd_tile_.data());
  K_->dequantize[t.type](embd_tile_.data() + (size_t)(token - first) * rb, out, t.cols);
}

void Model::add_bias(float* y, const Tensor& b, int64_t n, int64_t width) {
  if (!b.data) return;
  const float* bias = static_cast<const float*>(b.data);
  for (int64_t t = 0; t < n; ++t) K_->add(y + t * width, y + t * width, bias, width);
}

// x (n_heads, head_dim) each head RMS-normalised in place with weights w (head_dim), if w is present.
void Model::head_norm(float* x, int64_t n_heads, const Tensor& w) {
  if (!w.data) return;
  const int hd = cfg_.head_dim;
  const float* wp = static_cast<const float*>(w.data);
  const Kernels& K = *K_;
  const float eps = cfg_.rms_eps;
  if (n_heads * hd <= 4096) {  // a decode step's heads: not worth a pool barrier
    for (int64_t h = 0; h < n_heads; ++h) K.rmsnorm(x + h * hd, x + h * hd, wp, hd, eps);
    return;
  }
  pool_.run([&](int ith, int nth) {
    int64_t h0, h1;
    split_range(n_heads, ith, nth, &h0, &h1);
    for (int64_t h = h0; h < h1; ++h) K.rmsnorm(x + h * hd, x + h * hd, wp, hd, eps);
  });
}

// Stores this step's keys and values (m computed rows) into their slots at their positions, as
// rows of the cache types.
void Model::store_kv(int l, int64_t m) {
  const ModelConfig& c = cfg_;
  const int64_t kv_dim = (int64_t)c.n_kv_head * c.head_dim;
  for (int which = 0; which < 2; ++which) {
    const float* src = which == 0 ? k_.data() : v_.data();
    const int32_t type = which == 0 ? c.kv.k : c.kv.v;
    const size_t rb = which == 0 ? k_row_bytes_ : v_row_bytes_;
    for (int64_t t = 0; t < m; ++t) {
      uint8_t* cache = which == 0 ? k_layer(l, seq_[t]) : v_layer(l, seq_[t]);
      for (int g = 0; g < c.n_kv_head; ++g)
        kv_store_row(*K_, type, src + t * kv_dim + (int64_t)g * c.head_dim,
                     cache + ((size_t)g * c.n_ctx + (size_t)pos_[t]) * rb, c.head_dim);
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
  for (int l = 0; l < c.n_layer; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      const size_t rb = kv ? v_row_bytes_ : k_row_bytes_, head_bytes = rb * c.n_ctx;
      uint8_t* from = kv ? v_layer(l, src) : k_layer(l, src);
      uint8_t* to = kv ? v_layer(l, dst) : k_layer(l, dst);
      for (int g = 0; g < c.n_kv_head; ++g) std::memcpy(to + g * head_bytes, from + g * head_bytes, rb * n_pos);
    }
}

void Model::kv_rows(int slot, int64_t n_pos, uint8_t* buf, bool to_cache) {
  const ModelConfig& c = cfg_;
  if (slot < 0 || slot >= c.n_seq) throw std::invalid_argument("kv_rows: slot " + std::to_string(slot) + " outside 0.." + std::to_string(c.n_seq - 1));
  if (n_pos < 0 || n_pos > c.n_ctx)
    throw std::invalid_argument("kv_rows: " + std::to_string(n_pos) + " positions exceed the context of " + std::to_string(c.n_ctx));
  for (int l = 0; l < c.n_layer; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      const size_t rb = kv ? v_row_bytes_ : k_row_bytes_, head_bytes = rb * c.n_ctx, bytes = rb * n_pos;
      for (int g = 0; g < c.n_kv_head; ++g, buf += bytes) {
        uint8_t* cache = (kv ? v_layer(l, slot) : k_layer(l, slot)) + g * head_bytes;
        if (to_cache) std::memcpy(cache, buf, bytes);
        else std::memcpy(buf, cache, bytes);
      }
    }
}

bool Model::forward(const int32_t* tokens, int64_t n, int64_t pos, float* logits, bool all_logits, float* hidden,
                    const std::function<bool()>& should_stop, bool alone) {
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
  std::vector<uint8_t> flags(alone ? n : 0, 1);
  return forward_batch(tokens, positions.data(), seqs.data(), n, rows.data(), (int64_t)rows.size(), logits, hidden,
                       should_stop, alone ? flags.data() : nullptr);
}

bool Model::forward_batch(const int32_t* tokens, const int32_t* pos, const int32_t* seq, int64_t n,
                          const int64_t* logit_rows, int64_t n_logits, float* logits, float* hidden,
                          const std::function<bool()>& should_stop, const uint8_t* alone) {
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
    if (alone && alone[i]) has_one_token_run = true;  // decode kernels: the repacked layouts
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
    if (!step(tokens + done, pos + done, seq + done, m, rows.data(), (int64_t)rows.size(), lg, hd, should_stop,
              alone ? alone + done : nullptr))
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
                 int64_t n_logits, float* logits, float* hidden, const std::function<bool()>& should_stop,
                 const uint8_t* alone) {
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
      if ((len == 1 || (alone && alone[first])) != (pass == 0)) continue;
      runs_.push_back({r, len, pos[first], nullptr, nullptr, pass == 0});
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
    // attention sub-block: x += Wo . attention(rope(qnorm(Wq xn + bq)), rope(knorm(Wk xn + bk)), Wv xn + bv)
    share(pool_, m, 1, kSharedRows, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        K.rmsnorm(xn_.data() + t * E, x_.data() + t * E, static_cast<const float*>(L.attn_norm.data), E, c.rms_eps);
    });
    const MatmulOutput qkv[3] = {output_of(L.wq, q_dim, q_.data()), output_of(L.wk, kv_dim, k_.data()),
                                 output_of(L.wv, kv_dim, v_.data())};
    products(qkv, 3, E, xn_.data(), m, n_alone_);
    add_bias(q_.data(), L.bq, m, q_dim);
    add_bias(k_.data(), L.bk, m, kv_dim);
    add_bias(v_.data(), L.bv, m, kv_dim);
    head_norm(q_.data(), m * c.n_head, L.q_norm);
    head_norm(k_.data(), m * c.n_kv_head, L.k_norm);
    rope_apply(pool_, K, q_.data(), m, c.n_head, c.head_dim, cos_.data(), sin_.data(), c.rope.neox);
    rope_apply(pool_, K, k_.data(), m, c.n_kv_head, c.head_dim, cos_.data(), sin_.data(), c.rope.neox);
    if (k_rot_) {  // a quantized K cache holds rotated keys (hadamard.h): the queries alike, so q.k is unchanged
      hadamard_chunks(pool_, q_.data(), m * q_dim / k_rot_, k_rot_);
      hadamard_chunks(pool_, k_.data(), m * kv_dim / k_rot_, k_rot_);
    }
    if (v_rot_) hadamard_chunks(pool_, v_.data(), m * kv_dim / v_rot_, v_rot_);
    store_kv(l, m);
    for (size_t i = 0; i < runs_.size(); ++i) runs_[i].k_cache = k_layer(l, run_seq_[i]), runs_[i].v_cache = v_layer(l, run_seq_[i]);
    attention_runs(pool_, K, att_.data(), q_.data(), runs_.data(), (int)runs_.size(), c.kv, c.n_head, c.n_kv_head,
                   c.head_dim, c.n_ctx, att_scratch_.data());
    if (v_rot_) hadamard_chunks(pool_, att_.data(), m * q_dim / v_rot_, v_rot_);  // sums of rotated values, rotated back
    // the output projection lands in xn_, free once the Q/K/V products have read it
    const MatmulOutput wo = output_of(L.wo, E, xn_.data());
    products(&wo, 1, q_dim, att_.data(), m, n_alone_);
    share(pool_, m * E, 64, kSharedElements,
          [&](int64_t i0, int64_t i1) { K.add(x_.data() + i0, x_.data() + i0, xn_.data() + i0, i1 - i0); });

    // feed-forward sub-block: x += W_down . (silu(W_gate xn) * (W_up xn))
    // The tokens are independent here, so they go ffn_chunk_ at a time: the (tokens, n_ff)
    // intermediates, the largest activations, then need only ffn_chunk_ rows. A chunk's output
    // overwrites its own rows of xn_, which its gate and up products have read by then.
    share(pool_, m, 1, kSharedRows, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        K.rmsnorm(xn_.data() + t * E, x_.data() + t * E, static_cast<const float*>(L.ffn_norm.data), E, c.rms_eps);
    });
    if (moe_) {
      moe_->run(pool_, K, moe_weights(L), xn_.data(), moe_out_.data(), m, n_alone_, act_.data());
      K.add(x_.data(), x_.data(), moe_out_.data(), m * E);
      continue;
    }
    const MatmulOutput ffn[2] = {output_of(L.w_gate, c.n_ff, gate_.data()), output_of(L.w_up, c.n_ff, up_.data())};
    for (int64_t t0 = 0; t0 < m; t0 += ffn_chunk_) {
      const int64_t nt = std::min(ffn_chunk_, m - t0);
      products(ffn, 2, E, xn_.data() + t0 * E, nt, n_alone_ - t0);
      share(pool_, nt * c.n_ff, 64, kSharedElements,
            [&](int64_t i0, int64_t i1) { K.swiglu(gate_.data() + i0, gate_.data() + i0, up_.data() + i0, i1 - i0); });
      const MatmulOutput down = output_of(L.w_down, E, xn_.data() + t0 * E);
      products(&down, 1, c.n_ff, gate_.data(), nt, n_alone_ - t0);
    }
    share(pool_, m * E, 64, kSharedElements,
          [&](int64_t i0, int64_t i1) { K.add(x_.data() + i0, x_.data() + i0, xn_.data() + i0, i1 - i0); });
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
    // the rows asked for, in the caller's order, into x_ (free now); alone unless a run not
    // flagged alone asks for several rows (all of a prompt's logits): then the prefill kernels, as
    // for a prompt's rows
    bool rows_alone = true;
    for (int64_t j = 0; j < n_logits; ++j) {
      std::memcpy(x_.data() + j * E, xn_.data() + row_of_[logit_rows[j]] * E, sizeof(float) * E);
      if (j > 0 && seq[logit_rows[j]] == seq[logit_rows[j - 1]] && row_of_[logit_rows[j]] >= n_alone_) rows_alone = false;
    }
    matmul(pool_, K, w_.output.data, w_.output.type, c.n_vocab, E, x_.data(), n_logits, logits, act_.data(),
           w_.output.layout, rows_alone);
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
