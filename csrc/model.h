// The Qwen2 / Llama decoder forward pass over weights that stay where they are (the GGUF mmap),
// in their stored types, except the matrices it repacks for faster decode (repack.h) into memory
// of its own. Python builds the ModelWeights from the file and owns the mapping; this class owns
// the repacked copies, the KV cache and the activation buffers, all allocated once here.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <new>
#include <memory>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "matmul.h"
#include "moe.h"
#include "ops.h"
#include "tensor.h"
#include "threadpool.h"

namespace qc {

struct ModelConfig {
  int n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_kv_head = 0, head_dim = 0, n_vocab = 0;
  float rms_eps = 1e-6f;
  RopeParams rope{};       // rope.neox: qwen2 pairing; false for llama GGUF files (head_dim, freq_factors: set by Model)
  int64_t n_ctx = 0;       // KV cache length in positions, per sequence
  int n_seq = 1;           // KV cache slots: sequences that can be in flight at once (forward_batch)
  int n_batch = 512;       // most tokens per internal step (prefill is split into steps of this size)
  KvTypes kv{};            // KV cache element types of K and V (ops.h: f32, f16, q8_0, q4_0)
  // Repack the matrices this CPU has a repacked decode kernel for (repack.h) into memory of the
  // model's own, at the first single-token forward(); the rest stay where they are, or with
  // huge_pages and release_repacked_source where huge pages are available, are copied as stored.
  bool repack = true;
  // After repacking a matrix, give its source pages back (madvise MADV_DONTNEED), so that resident
  // memory stays about the file's size. Only for weights in a file mapping, which the OS reads
  // again if they are touched (anonymous memory would read back as zeros).
  bool release_repacked_source = false;
  // The copies in transparent huge pages (MADV_HUGEPAGE, where the system allows it):
  // decode streams them with a TLB miss per 2 MiB instead of per 4 KiB, for a one-off cost in the
  // first decode step, which makes the copies (bench/README.md, "Transparent huge pages").
  bool huge_pages = true;
  MoeConfig moe;  // moe.n_expert > 0: every layer's FFN is a mixture of experts (LayerWeights::moe)
};

struct LayerWeights {
  Tensor attn_norm;            // (n_embd) f32
  Tensor wq, wk, wv;           // (n_head*head_dim | n_kv_head*head_dim, n_embd)
  Tensor bq, bk, bv;           // biases (qwen2) or absent (llama)
  Tensor q_norm, k_norm;       // (head_dim) f32: RMSNorm of each query/key head before RoPE (qwen3), or absent
  Tensor wo;                   // (n_embd, n_head*head_dim)
  Tensor ffn_norm;             // (n_embd) f32
  Tensor w_gate, w_up;         // (n_ff, n_embd)
  Tensor w_down;               // (n_embd, n_ff)
  // instead of w_gate/w_up/w_down when ModelConfig::moe.n_expert > 0: moe.h's MoeWeights (moe_weights())
  Tensor ffn_gate_inp, ffn_gate_exps, ffn_up_exps, ffn_down_exps;
  Tensor ffn_gate_inp_shexp, ffn_gate_shexp, ffn_up_shexp, ffn_down_shexp;
};

struct ModelWeights {
  Tensor tok_embd;             // (n_vocab, n_embd)
  std::vector<LayerWeights> layers;
  Tensor output_norm;          // (n_embd) f32
  Tensor output;               // (n_vocab, n_embd); tok_embd when the embeddings are tied
  Tensor rope_freqs;           // (head_dim/2) f32: divisor of each RoPE pair's frequency (llama3 scaling), or absent
};

// The tensors the forward pass knows, by GGUF name (per-layer ones after "blk.N."), each with the
// member it fills and its shape (numpy order, rows first) in the hyper-parameters. Which of them an
// architecture has, and which it may lack, is qwen_cpu/arch.py's table (the loader passes only
// those); tests check that table's shapes against these. optional: the forward pass runs without it.
enum class Dim : uint8_t { none, one, n_embd, n_ff, n_vocab, head_dim, rope_pairs, q_dim, kv_dim, n_expert, n_ff_exp,
                           n_ff_shexp };
struct TensorSlot {
  const char* name;
  Tensor LayerWeights::*layer;  // a per-layer tensor's member, or nullptr
  Tensor ModelWeights::*global; // a global tensor's member, or nullptr
  Dim rows, cols;               // a vector: (rows = its length, cols = none)
  bool optional;
  bool experts = false;         // (n_expert, rows, cols): n_expert matrices back to back (moe.h)
};
// A layer's expert tensors as moe.h takes them.
MoeWeights moe_weights(const LayerWeights& L);

extern const TensorSlot kTensorSlots[];
extern const int kNumTensorSlots;
const char* dim_name(Dim d);
int64_t dim_value(const ModelConfig& c, Dim d);

// A zero-filled array of n trivially copyable T, owned. It comes from calloc, which takes large
// blocks straight from the OS as zero pages that are neither read nor written here: a page counts
// in RSS only once a kernel writes it (a std::vector would touch every page at construction).
template <class T>
class ZeroBuffer {
  static_assert(std::is_trivially_copyable<T>::value, "calloc'd memory holds no constructed objects");

 public:
  ZeroBuffer() = default;
  explicit ZeroBuffer(size_t n) : p_(n ? static_cast<T*>(std::calloc(n, sizeof(T))) : nullptr), n_(n) {
    if (n && !p_) throw std::bad_alloc();
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  size_t size() const { return n_; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> p_;
  size_t n_ = 0;
};

// Whether a PageBuffer's huge pages can be had here (transparent huge pages not "never").
bool huge_pages_available();

// n bytes of anonymous memory from mmap (zero pages until written), owned; huge: advised into
// transparent huge pages (ModelConfig::huge_pages).
class PageBuffer {
 public:
  PageBuffer() = default;
  PageBuffer(size_t n, bool huge);
  PageBuffer(PageBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  PageBuffer& operator=(PageBuffer&& o) noexcept;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  ~PageBuffer();
  uint8_t* data() { return p_; }
  size_t size() const { return n_; }

 private:
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

class Model {
 public:
  // Throws std::invalid_argument naming the first inconsistency between config and weights.
  Model(const ModelConfig& cfg, ModelWeights w, int n_threads);

  // Runs n tokens at positions pos .. pos+n-1 (0 <= pos, pos + n <= n_ctx), writing their keys and
  // values into the cache; positions >= pos + n in the cache are left as they were.
  //   logits: (n, n_vocab) if all_logits, else (1, n_vocab) for the last token; may be nullptr.
  //   hidden: (n, n_embd) final-norm hidden states, or nullptr.
  //   should_stop: polled between layers; when it returns true the call returns false at once
  //   (the cache then holds partial results past pos, which the caller must treat as unused).
  //   alone: every row computed as a one-token run (a decode step) would compute it, bit for bit, the
  //   weights still read once for all rows (speculative decoding's verification of drafted tokens).
  // (The tokens of sequence slot 0; forward_batch with every seq = 0.)
  bool forward(const int32_t* tokens, int64_t n, int64_t pos, float* logits, bool all_logits, float* hidden,
               const std::function<bool()>& should_stop, bool alone = false);

  // Runs a batch of n tokens from several sequences in one pass: row i is token tokens[i] at
  // position pos[i] of the sequence in cache slot seq[i] (0 <= seq < n_seq, 0 <= pos < n_ctx). A
  // sequence's rows must be consecutive, at consecutive positions (a "run"), and a slot may have one
  // run per call; each run's keys and values go into its slot, and its tokens attend to positions
  // 0 .. pos of that slot only. The matrix products take all rows at once: runs of one token (decode
  // steps) through the decode kernels, each row as it would be computed alone (matmul's `alone`),
  // longer runs (prompts) together through the prefill kernels.
  //   logit_rows: n_logits row indices, strictly increasing; logits: (n_logits, n_vocab), row j the
  //   logits of row logit_rows[j] (computed as a one-row product when no run asks for more than one
  //   row), or nullptr. hidden: (n, n_embd) final-norm hidden states, or nullptr. should_stop as
  //   for forward(). alone: nullptr, or (n) flags: a run whose first row is flagged goes through the
  //   decode kernels like a one-token run, each row as it would be alone, and so do all its logit
  //   rows unless an unflagged run asks for several (drafted tokens being verified). Throws
  //   std::invalid_argument naming the first bad row.
  bool forward_batch(const int32_t* tokens, const int32_t* pos, const int32_t* seq, int64_t n,
                     const int64_t* logit_rows, int64_t n_logits, float* logits, float* hidden,
                     const std::function<bool()>& should_stop, const uint8_t* alone = nullptr);

  // Copies positions 0 .. n_pos-1 of slot src's keys and values into slot dst (a prefix another
  // sequence can then continue from).
  void copy_slot(int src, int dst, int64_t n_pos);

  // Slot's keys and values of positions 0 .. n_pos-1 as stored (rows of their cache types),
  // copied into buf (to_cache false: a saved session) or from it (true: restoring one):
  //   buf (n_layer, 2 [K then V], n_kv_head, n_pos) rows of kv_row_bytes(K or V type, head_dim)
  //   bytes, kv_rows_bytes(n_pos) bytes in all.
  void kv_rows(int slot, int64_t n_pos, uint8_t* buf, bool to_cache);
  size_t kv_rows_bytes(int64_t n_pos) const {
    return (size_t)cfg_.n_layer * cfg_.n_kv_head * (k_row_bytes_ + v_row_bytes_) * (size_t)n_pos;
  }

  const ModelConfig& config() const { return cfg_; }
  // Widths of the Hadamard rotation the K and V caches hold their rows in (hadamard.h kv_rotation;
  // 0: stored as computed). Saved rows are valid only for a model with the same rotation.
  int k_rotation() const { return k_rot_; }
  int v_rotation() const { return v_rot_; }
  size_t kv_cache_bytes() const { return k_cache_.size() + v_cache_.size(); }
  size_t repacked_bytes() const { return repacked_.size(); }
  size_t repacks_pending() const { return pending_.size(); }  // matrices the first decode step copies
  int n_threads() const { return pool_.size(); }

 private:
  bool step(const int32_t* tokens, const int32_t* pos, const int32_t* seq, int64_t m, const int64_t* logit_rows,
            int64_t n_logits, float* logits, float* hidden, const std::function<bool()>& should_stop,
            const uint8_t* alone);
  uint8_t* k_layer(int l, int s) { return k_cache_.data() + ((size_t)l * cfg_.n_seq + s) * k_row_bytes_ * cfg_.n_kv_head * cfg_.n_ctx; }
  uint8_t* v_layer(int l, int s) { return v_cache_.data() + ((size_t)l * cfg_.n_seq + s) * v_row_bytes_ * cfg_.n_kv_head * cfg_.n_ctx; }
  void store_kv(int l, int64_t m);
  void products(const MatmulOutput* outs, int n_outs, int64_t n_in, const float* x, int64_t m, int64_t n_alone);
  void add_bias(float* y, const Tensor& b, int64_t n, int64_t width);
  void head_norm(float* x, int64_t n_heads, const Tensor& w);
  size_t activation_scratch_bytes() const;
  void plan_repack();
  void repack_pending();
  void embed_row(int32_t token, float* out);

  ModelConfig cfg_;
  ModelWeights w_;
  ThreadPool pool_;
  const Kernels* K_ = nullptr;
  PageBuffer repacked_;  // the copied matrices (cfg_.repack: repacked, or as stored), which w_ then points into
  PageBuffer vectors_;   // copies of the per-step vectors (repack_pending), which w_ then points into
  struct PendingRepack {
    Tensor* t;       // a matrix of w_, still stored
    int32_t layout;  // the layout it gets (QC_LAYOUT_STORED: copied as it is, for the huge pages)
  };
  std::vector<PendingRepack> pending_;  // the copies into repacked_ still to make
  bool tied_repacked_ = false;    // the token embeddings are the copied output matrix
  ZeroBuffer<uint8_t> embd_tile_; // (repack_rows_of(layout), row_bytes) one tile's rows unpacked (embed_row)

  // KV cache: K (n_layer, n_seq, n_kv_head, n_ctx) rows of k_row_bytes_ (kv_row_bytes(cfg_.kv.k,
  // head_dim)), V likewise with its own type. Positions never written cost no memory (ZeroBuffer).
  size_t k_row_bytes_ = 0, v_row_bytes_ = 0;
  int k_rot_ = 0, v_rot_ = 0;  // k_rotation(), v_rotation()
  ZeroBuffer<uint8_t> k_cache_, v_cache_;

  // Activations for up to n_batch tokens, allocated once (untouched until a step uses them: a
  // decode-only session never commits the prefill-sized parts).
  int64_t ffn_chunk_ = 0;       // min(n_batch, kFfnChunk): tokens per feed-forward sub-step
  ZeroBuffer<float> x_;         // (n_batch, n_embd) residual stream
  ZeroBuffer<float> xn_;        // (n_batch, n_embd) normalised input of a sub-block, then its output
  ZeroBuffer<float> q_;         // (n_batch, n_head*head_dim)
  ZeroBuffer<float> k_, v_;     // (n_batch, n_kv_head*head_dim)
  ZeroBuffer<float> att_;       // (n_batch, n_head*head_dim) attention output
  ZeroBuffer<float> gate_, up_; // (ffn_chunk_, n_ff): the FFN runs ffn_chunk_ tokens at a time
  ZeroBuffer<float> cos_, sin_; // (n_batch, head_dim/2) rope tables of this step
  ZeroBuffer<float> att_scratch_;  // attention_scratch_floats(...)
  ZeroBuffer<uint8_t> act_;     // quantized activations, the largest any matmul needs
  std::unique_ptr<MoeFfn> moe_; // the expert FFNs' routing and buffers (cfg_.moe.n_expert > 0)
  ZeroBuffer<float> moe_out_;   // (n_batch, n_embd) their output (moe_ only)

  // The step's rows in the order it computes them (step() says why), each with its position and slot.
  int64_t n_alone_ = 0;         // rows 0 .. n_alone_-1 are one-token (or alone) runs, the rest longer runs
  std::vector<int64_t> order_;  // (n_batch) caller's row index of each computed row
  std::vector<int64_t> row_of_; // (n_batch) computed row of each caller's row
  std::vector<int32_t> pos_, seq_;  // (n_batch) of each computed row
  std::vector<AttentionRun> runs_;  // the step's runs over computed rows (k/v set per layer)
  std::vector<int32_t> run_seq_;    // slot of each run
};

}  // namespace qc
