#include "ops.h"

#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace qc {

// ---- rotary embedding -------------------------------------------------------------------------

static constexpr double kPi = 3.14159265358979323846;

// YaRN correction dimension: the pair index (in units of head_dim, as the YaRN paper writes it)
// whose wavelength makes n_rot full turns over the original context n_ctx_orig.
static double yarn_corr_dim(int head_dim, int n_ctx_orig, double n_rot, double base) {
  return head_dim * std::log(n_ctx_orig / (n_rot * 2.0 * kPi)) / (2.0 * std::log(base));
}

void rope_tables(const RopeParams& p, int64_t pos0, int64_t n_pos, float* cos, float* sin) {
  if (p.head_dim <= 0 || p.head_dim % 2 != 0)
    throw std::invalid_argument("rope: head_dim must be positive and even, got " + std::to_string(p.head_dim));
  if (!(p.freq_base > 1.0f) || !(p.freq_scale > 0.0f))
    throw std::invalid_argument("rope: freq_base must be > 1 and freq_scale > 0");
  if (p.ext_factor != 0.0f && p.n_ctx_orig <= 0)
    throw std::invalid_argument("rope: YaRN (ext_factor != 0) needs n_ctx_orig > 0");
  if (pos0 < 0 || n_pos < 0) throw std::invalid_argument("rope: positions must be non-negative");
  const int half = p.head_dim / 2;
  const double base = p.freq_base, freq_scale = p.freq_scale, ext = p.ext_factor;

  // Pairs below corr[0] rotate fast enough to keep their original frequency (extrapolation),
  // pairs above corr[1] are interpolated by freq_scale, with a linear ramp in between.
  double corr[2] = {0.0, 0.0};
  double mscale = p.attn_factor;
  if (ext != 0.0) {
    corr[0] = std::max(0.0, std::floor(yarn_corr_dim(p.head_dim, p.n_ctx_orig, p.beta_fast, base)));
    corr[1] = std::min(p.head_dim - 1.0, std::ceil(yarn_corr_dim(p.head_dim, p.n_ctx_orig, p.beta_slow, base)));
    // YaRN's attention temperature, folded into cos/sin so that q.k scales by its square.
    mscale *= 1.0 + 0.1 * std::log(1.0 / freq_scale);
  }
  for (int i = 0; i < half; ++i) {
    double theta_extrap = std::pow(base, -2.0 * i / p.head_dim);  // radians per position
    if (p.freq_factors) theta_extrap /= p.freq_factors[i];
    const double theta_interp = freq_scale * theta_extrap;
    double theta = theta_interp;
    if (ext != 0.0) {
      const double y = (i - corr[0]) / std::max(0.001, corr[1] - corr[0]);
      const double mix = (1.0 - std::min(1.0, std::max(0.0, y))) * ext;
      theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
    }
    for (int64_t t = 0; t < n_pos; ++t) {
      const double angle = (double)(pos0 + t) * theta;
      cos[t * half + i] = (float)(std::cos(angle) * mscale);
      sin[t * half + i] = (float)(std::sin(angle) * mscale);
    }
  }
}

void rope_apply(ThreadPool& pool, const Kernels& K, float* x, int64_t n_tok, int n_head, int head_dim, const float* cos,
                const float* sin, bool neox) {
  if (head_dim <= 0 || head_dim % 2 != 0 || n_head <= 0 || n_tok < 0)
    throw std::invalid_argument("rope: head_dim must be positive and even, n_head positive");
  const int64_t row = (int64_t)n_head * head_dim, half = head_dim / 2;
  share(pool, n_tok, 1, 2, [&](int64_t t0, int64_t t1) {  // decode (one token): cheaper than a barrier on this thread
    for (int64_t t = t0; t < t1; ++t) K.rope(x + t * row, n_head, head_dim, cos + t * half, sin + t * half, neox);
  });
}

// ---- KV cache rows ----------------------------------------------------------------------------

size_t kv_row_bytes(int32_t type, int head_dim) {
  if (head_dim <= 0) throw std::invalid_argument("KV cache: head_dim must be positive");
  if (kv_index(type) < 0)
    throw std::invalid_argument(std::string("KV cache type must be F32, F16, Q8_0 or Q4_0, got ") +
                                (type >= 0 && type < GGML_TYPE_COUNT && type_info(type).name ? type_info(type).name
                                                                                                 : std::to_string(type)));
  const int block = type_info(type).block_elems;
  if (head_dim % block != 0)
    throw std::invalid_argument(std::string("KV cache type ") + type_info(type).name + " needs head_dim a multiple of " +
                                std::to_string(block) + ", got " + std::to_string(head_dim));
  return row_bytes(type, head_dim);
}

void kv_store_row(const Kernels& K, int32_t type, const float* x, void* dst, int head_dim) {
  switch (type) {
    case GGML_F32: std::memcpy(dst, x, sizeof(float) * (size_t)head_dim); break;
    case GGML_F16: K.fp32_to_fp16_row(x, static_cast<half_t*>(dst), head_dim); break;
    case GGML_Q8_0:
    case GGML_Q4_0:
      kv_row_bytes(type, head_dim);  // throws on a head_dim the blocks do not divide
      quantize_rows(type, x, dst, 1, head_dim, 1);
      break;
    default: kv_row_bytes(type, head_dim);  // throws: not a cache type
  }
}

// ---- attention --------------------------------------------------------------------------------

// A (token, kv head) pair's keys are split across threads only in parts of at least this many:
// below it, the merge and the extra pass over the queries cost more than the parallelism gains.
static constexpr int64_t kSplitMinKeys = 8 * kAttnBlock;
// Split parts per thread at most (each part holds a state): 4 per thread for the balance of the
// split pairs, plus one per pair for the rounding up (split only when pairs < 2 per thread).
static constexpr int kSplitSlotsPerThread = 6;

// Floats of one pair's online-softmax state: m (n_q), l (n_q), acc (n_q, head_dim), 64-byte rounded.
static size_t state_floats(int n_q, int head_dim) { return ((size_t)n_q * (head_dim + 2) + 15) & ~(size_t)15; }

size_t attention_scratch_floats(int n_threads, int n_head, int n_kv_head, int head_dim, int64_t n_keys_max) {
  if (n_threads < 1 || n_head <= 0 || n_kv_head <= 0 || n_head % n_kv_head != 0 || n_keys_max < 0 || head_dim <= 0)
    throw std::invalid_argument("attention: n_head must be a positive multiple of n_kv_head, head_dim positive");
  const int n_q = n_head / n_kv_head;
  const size_t st = state_floats(n_q, head_dim);
  size_t n = (size_t)n_threads * (st + attn_kernel_scratch_floats(n_q, head_dim));
  if (n_threads > 1 && n_keys_max >= 2 * kSplitMinKeys) n += (size_t)kSplitSlotsPerThread * n_threads * st;
  return n;
}

void attention(ThreadPool& pool, const Kernels& K, float* out, const float* q, const void* k_cache, const void* v_cache,
               KvTypes kv, int64_t n_tok, int64_t pos0, int n_head, int n_kv_head, int head_dim, int64_t n_ctx,
               float* scratch) {
  const AttentionRun run{0, n_tok, pos0, k_cache, v_cache};
  attention_runs(pool, K, out, q, &run, 1, kv, n_head, n_kv_head, head_dim, n_ctx, scratch);
}

// m = -inf, l = 0, acc = 0 for n_q queries (the state before any key).
static void state_init(float* st, int n_q, int head_dim) {
  for (int j = 0; j < n_q; ++j) st[j] = -INFINITY, st[n_q + j] = 0.0f;
  std::fill(st + 2 * n_q, st + 2 * n_q + (size_t)n_q * head_dim, 0.0f);
}

// out (n_q, head_dim) = the softmax-weighted values of the n_parts states (state_floats apart)
// that together saw all of a pair's keys.
static void state_finish(float* out, const float* st, int n_parts, size_t stride, int n_q, int head_dim) {
  for (int j = 0; j < n_q; ++j) {
    float mx = -INFINITY;
    for (int p = 0; p < n_parts; ++p) mx = std::max(mx, st[p * stride + j]);
    float l = 0.0f;
    float* o = out + (size_t)j * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    for (int p = 0; p < n_parts; ++p) {
      const float* sp = st + p * stride;
      const float c = n_parts == 1 ? 1.0f : std::exp(sp[j] - mx);
      l += sp[n_q + j] * c;
      const float* acc = sp + 2 * n_q + (size_t)j * head_dim;
      for (int d = 0; d < head_dim; ++d) o[d] += acc[d] * c;
    }
    const float inv = 1.0f / l;
    for (int d = 0; d < head_dim; ++d) o[d] *= inv;
  }
}

void attention_runs(ThreadPool& pool, const Kernels& K, float* out, const float* q, const AttentionRun* runs, int n_runs,
                    KvTypes kv, int n_head, int n_kv_head, int head_dim, int64_t n_ctx, float* scratch) {
  if (n_head <= 0 || n_kv_head <= 0 || n_head % n_kv_head != 0)
    throw std::invalid_argument("attention: n_head (" + std::to_string(n_head) +
                                ") must be a positive multiple of n_kv_head (" + std::to_string(n_kv_head) + ")");
  if (head_dim <= 0) throw std::invalid_argument("attention: head_dim must be positive");
  const size_t k_row = kv_row_bytes(kv.k, head_dim), v_row = kv_row_bytes(kv.v, head_dim);
  const AttnKernel& kern = K.attn[kv_index(kv.k)][kv_index(kv.v)];
  if (!kern.fn)
    throw std::invalid_argument(std::string("attention: the ") + K.isa + " path has no kernel for K " +
                                type_info(kv.k).name + " with V " + type_info(kv.v).name);
  int64_t n_items = 0;
  for (int r = 0; r < n_runs; ++r) {
    const AttentionRun& R = runs[r];
    if (R.n_tok < 0 || R.pos0 < 0 || R.pos0 + R.n_tok > n_ctx)
      throw std::invalid_argument("attention: positions [" + std::to_string(R.pos0) + ", " +
                                  std::to_string(R.pos0 + R.n_tok) + ") do not fit a cache of " + std::to_string(n_ctx));
    n_items += R.n_tok * n_kv_head;
  }
  if (n_items == 0) return;
  const int n_q = n_head / n_kv_head, nth = pool.size();
  const float scale = 1.0f / std::sqrt((float)head_dim);
  const size_t st_floats = state_floats(n_q, head_dim);
  const size_t per_thread = st_floats + attn_kernel_scratch_floats(n_q, head_dim);
  float* slots = scratch + (size_t)nth * per_thread;  // split parts' states (attention_scratch_floats)

  // Few pairs (decode, small batches): a pair with n_keys keys is cut into parts of whole blocks,
  // about 4 parts per thread over all pairs (an alone run's token: over its own n_kv_head pairs),
  // none shorter than kSplitMinKeys.
  auto parts_of = [&](int64_t n_keys, bool alone, int64_t* chunk) {
    const int64_t items = alone ? n_kv_head : n_items;
    int64_t S = nth > 1 && items < 2 * (int64_t)nth ? std::min<int64_t>((4 * nth + items - 1) / items, n_keys / kSplitMinKeys) : 1;
    if (S < 1) S = 1;
    *chunk = ((n_keys + S - 1) / S + kAttnBlock - 1) / kAttnBlock * kAttnBlock;
    return (int)((n_keys + *chunk - 1) / *chunk);
  };
  double total = 0.0;  // keys summed over all pairs
  for (int r = 0; r < n_runs; ++r)
    total += (double)n_kv_head * ((double)runs[r].n_tok * (runs[r].pos0 + 1) + (double)runs[r].n_tok * (runs[r].n_tok - 1) / 2.0);

  // Work items are the parts of the (run, token, kv head) triples in that order; a part costs its
  // keys. Each thread takes the parts whose cost midpoint falls in its equal share of the total,
  // so a long prompt's late tokens (which see more keys) are spread evenly.
  // Parts of split pairs (more than one part: merged at the end) each take a state: in the scratch
  // (attention_scratch_floats: enough for few pairs), else in a buffer of this thread's that grows to
  // the largest need (alone runs of many tokens at a depth).
  size_t n_slots = 0;
  if (nth > 1)
    for (int r = 0; r < n_runs; ++r) {
      int64_t chunk;
      if (parts_of(runs[r].pos0 + runs[r].n_tok, runs[r].alone, &chunk) == 1) continue;  // its last token has the most keys
      for (int64_t t = 0; t < runs[r].n_tok; ++t) {
        const int S = parts_of(runs[r].pos0 + t + 1, runs[r].alone, &chunk);
        if (S > 1) n_slots += (size_t)S * n_kv_head;
      }
    }
  const bool any_split = n_slots > 0;
  if (n_slots > (size_t)kSplitSlotsPerThread * nth) {
    static thread_local std::vector<float> more;
    if (more.size() < n_slots * st_floats) more.resize(n_slots * st_floats);
    slots = more.data();
  }
  auto work = [&](int ith, int nth_) {
    float* own = scratch + (size_t)ith * per_thread;  // this thread's state, then the kernel's scratch
    double cum = 0.0;
    int slot = 0;
    for (int r = 0; r < n_runs; ++r) {
      const AttentionRun& R = runs[r];
      for (int64_t it = 0; it < R.n_tok * n_kv_head; ++it) {
        const int64_t t = it / n_kv_head;
        const int g = (int)(it % n_kv_head);
        const int64_t n_keys = R.pos0 + t + 1;
        int64_t chunk;
        const int S = parts_of(n_keys, R.alone, &chunk);
        const int64_t qoff = ((R.row0 + t) * n_head + (int64_t)g * n_q) * head_dim;
        const uint8_t* kc = static_cast<const uint8_t*>(R.k_cache) + (size_t)g * n_ctx * k_row;
        const uint8_t* vc = static_cast<const uint8_t*>(R.v_cache) + (size_t)g * n_ctx * v_row;
        for (int p = 0; p < S; ++p) {
          const int64_t i0 = p * chunk, n = std::min(n_keys - i0, chunk);
          const double mid = cum + 0.5 * (double)n;
          cum += (double)n;
          int owner = (int)(mid * nth_ / total);
          if (owner >= nth_) owner = nth_ - 1;
          if (owner != ith) continue;
          float* st = S == 1 ? own : slots + (size_t)(slot + p) * st_floats;
          state_init(st, n_q, head_dim);
          kern.fn(q + qoff, n_q, kc + (size_t)i0 * k_row, k_row, vc + (size_t)i0 * v_row, v_row, n, head_dim, scale, st,
                  st + n_q, st + 2 * n_q, own + st_floats);
          if (S == 1) state_finish(out + qoff, st, 1, st_floats, n_q, head_dim);
        }
        if (S > 1) slot += S;
      }
    }
  };
  if (n_items == 1 && !any_split) {
    work(0, 1);  // a single pair: no barrier
    return;
  }
  pool.run(work);
  if (!any_split) return;
  // merge the split pairs' parts (the same walk as work(), on the calling thread)
  int slot = 0;
  for (int r = 0; r < n_runs; ++r) {
    const AttentionRun& R = runs[r];
    for (int64_t it = 0; it < R.n_tok * n_kv_head; ++it) {
      const int64_t t = it / n_kv_head;
      const int g = (int)(it % n_kv_head);
      int64_t chunk;
      const int S = parts_of(R.pos0 + t + 1, R.alone, &chunk);
      if (S == 1) continue;
      state_finish(out + ((R.row0 + t) * n_head + (int64_t)g * n_q) * head_dim, slots + (size_t)slot * st_floats, S,
                   st_floats, n_q, head_dim);
      slot += S;
    }
  }
}

}  // namespace qc
