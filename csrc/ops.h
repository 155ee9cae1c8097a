// Drivers of the non-matmul operations that need more than one kernel call: rotary position
// embedding (tables with YaRN, then rotation) and causal grouped-query attention over a KV cache.
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

// Causal GQA attention of n_tok queries at positions pos0 .. pos0+n_tok-1 over a cache that already holds positions [0, pos0+n_tok):
//   q, out (n_tok, n_head, head_dim); k_cache, v_cache (n_kv_head, n_ctx, head_dim), f16 (half_t) if kv_f16 else float;
//   query head h uses kv head h / (n_head / n_kv_head); scale 1/sqrt(head_dim);
//   scratch: attention_scratch_floats(pool.size(), n_head, n_kv_head, n_keys_max) floats with n_keys_max >= pos0 + n_tok.
// Work is split across threads by (token, kv head) pairs, weighted by the number of keys each sees.
void attention(ThreadPool& pool, const Kernels& K, float* out, const float* q, const void* k_cache, const void* v_cache,
               bool kv_f16, int64_t n_tok, int64_t pos0, int n_head, int n_kv_head, int head_dim, int64_t n_ctx,
               float* scratch);

// A run of n_tok queries of one sequence at positions pos0 .. pos0+n_tok-1, rows row0 .. of q and
// out, over that sequence's caches k_cache, v_cache (n_kv_head, n_ctx, head_dim), which already
// hold positions [0, pos0+n_tok).
struct AttentionRun {
  int64_t row0, n_tok, pos0;
  const void* k_cache;
  const void* v_cache;
};

// attention() of several runs in one pass over the pool (one barrier for a whole batch of
// sequences): q, out (rows, n_head, head_dim); scratch: attention_scratch_floats(pool.size(),
// n_head, n_kv_head, n_keys_max) floats with n_keys_max >= every run's pos0 + n_tok.
void attention_runs(ThreadPool& pool, const Kernels& K, float* out, const float* q, const AttentionRun* runs, int n_runs,
                    bool kv_f16, int n_head, int n_kv_head, int head_dim, int64_t n_ctx, float* scratch);

// Floats of scratch attention() needs: one (n_head/n_kv_head, n_keys_max) score block per thread.
size_t attention_scratch_floats(int n_threads, int n_head, int n_kv_head, int64_t n_keys_max);

}  // namespace qc
