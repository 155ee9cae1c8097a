// Drivers of the non-matmul operations that need more than one kernel call: rotary position
// embedding (tables with YaRN, then rotation), KV cache rows, and causal grouped-query attention
// over a KV cache of f32, f16, q8_0 or q4_0 rows.
// ISA-neutral: the kernels come from the table passed in (kernels.h), threads from the pool.
// Arguments that break a shape rule throw std::invalid_argument (ValueError in Python).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels.h"
#include "threadpool.h"

namespace qc {

// Rotary embedding parameters, as GGUF metadata gives them (llama.cpp's names):
//   rope.freq_base -> freq_base; rope.scaling.type "linear"/"yarn" with rope.scaling.factor f ->
//   freq_scale = 1/f, and for "yarn" ext_factor = 1 and n_ctx_orig = rope.scaling.original_context_length.
// HF config.json rope_scaling {"type": "yarn", "factor": f, "original_max_position_embeddings": n}
// maps to the same values (tests/data/make_rope_golden.py checks the two agree).
struct RopeParams {
  int head_dim; float freq_base; bool neox;          // neox: qwen2 pairing (i, i+head_dim/2); else (2i, 2i+1) for llama GGUFs
  float freq_scale = 1.0f;   // 1/scaling factor (linear or YaRN)
  float ext_factor = 0.0f;   // YaRN extrapolation mix (0: none; 1 for YaRN models)
  float attn_factor = 1.0f;  // extra multiplier on cos/sin
  float beta_fast = 32.0f, beta_slow = 1.0f;
  int n_ctx_orig = 0;        // original training context (YaRN correction dims)
  const float* freq_factors = nullptr;  // (head_dim/2) each pair's frequency divided by its factor (llama3 rope_freqs), or none
};

// cos, sin (n_pos, head_dim/2) for positions pos0 .. pos0+n_pos-1 (YaRN frequency mix and magnitude scaling applied).
// Computed in double precision, rounded once to float. freq_factors divide the base frequencies first.
void rope_tables(const RopeParams& p, int64_t pos0, int64_t n_pos, float* cos, float* sin);

// x (n_tok, n_head, head_dim) rotated in place, token t with row t of the tables.
//   cos, sin (n_tok, head_dim/2) from rope_tables.
void rope_apply(ThreadPool& pool, const Kernels& K, float* x, int64_t n_tok, int n_head, int head_dim, const float* cos,
                const float* sin, bool neox);

// ---- KV cache rows and attention ----------------------------------------------------------------

// The element types of a KV cache, chosen separately for K and V: GGML_F32, GGML_F16, GGML_Q8_0 or
// GGML_Q4_0 (the quantized ones need head_dim % 32 == 0).
struct KvTypes {
  int32_t k = GGML_F16, v = GGML_F16;
};

// Bytes of one cached (position, kv head) row of head_dim elements of a cache type: head_dim
// floats or halves, or head_dim/32 blocks (blocks.h). Throws std::invalid_argument for another
// type or a head_dim the type cannot hold.
size_t kv_row_bytes(int32_t type, int head_dim);

// dst (kv_row_bytes(type, head_dim) bytes) = x (head_dim floats) stored as a cache row of type:
// f16 rounded to nearest even, q8_0/q4_0 quantized as gguf-py (and llama.cpp's reference) do.
void kv_store_row(const Kernels& K, int32_t type, const float* x, void* dst, int head_dim);

// Causal GQA attention of n_tok queries at positions pos0 .. pos0+n_tok-1 over a cache that already holds positions [0, pos0+n_tok):
//   q, out (n_tok, n_head, head_dim); k_cache, v_cache (n_kv_head, n_ctx, kv_row_bytes(kv.k or kv.v, head_dim)) bytes;
//   query head h uses kv head h / (n_head / n_kv_head); scale 1/sqrt(head_dim);
//   scratch: attention_scratch_floats(pool.size(), n_head, n_kv_head, head_dim, n_keys_max) floats with
//   n_keys_max >= pos0 + n_tok, 8-byte aligned.
void attention(ThreadPool& pool, const Kernels& K, float* out, const float* q, const void* k_cache, const void* v_cache,
               KvTypes kv, int64_t n_tok, int64_t pos0, int n_head, int n_kv_head, int head_dim, int64_t n_ctx,
               float* scratch);

// A run of n_tok queries of one sequence at positions pos0 .. pos0+n_tok-1, rows row0 .. of q and
// out, over that sequence's caches k_cache, v_cache (as for attention()), which already hold
// positions [0, pos0+n_tok).
struct AttentionRun {
  int64_t row0, n_tok, pos0;
  const void* k_cache;
  const void* v_cache;
  // each token as in a call of that token alone (decode steps, verification rows): its keys are
  // split across threads as that call would split them, whatever else the call holds
  bool alone = false;
};

// attention() of several runs in one pass over the pool (one barrier for a whole batch of
// sequences): q, out (rows, n_head, head_dim); scratch as for attention() with n_keys_max >= every
// run's pos0 + n_tok. Keys are taken in blocks with an online softmax (no score row per query);
// threads share the (token, kv head) pairs, weighted by their keys, and when there are fewer
// pairs than threads can use (decode) a long pair's keys are split across threads and the parts
// merged, so the result of such a pair depends on the thread count (within rounding); the tokens of
// an alone run are split as a one-token call's, so a verified row is its decode step bit for bit.
void attention_runs(ThreadPool& pool, const Kernels& K, float* out, const float* q, const AttentionRun* runs, int n_runs,
                    KvTypes kv, int n_head, int n_kv_head, int head_dim, int64_t n_ctx, float* scratch);

// Floats of scratch attention() needs: per thread one query group's state and the kernel's
// scratch (attn_kernel_scratch_floats), and where keys may be split, the parts' states.
size_t attention_scratch_floats(int n_threads, int n_head, int n_kv_head, int head_dim, int64_t n_keys_max);

}  // namespace qc
