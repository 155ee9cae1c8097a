#include "ops.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

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
  if (n_tok <= 1) {  // decode: one small rotation is cheaper than a barrier
    if (n_tok == 1) K.rope(x, n_head, head_dim, cos, sin, neox);
    return;
  }
  pool.run([&](int ith, int nth) {
    int64_t t0, t1;
    split_range(n_tok, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; ++t) K.rope(x + t * row, n_head, head_dim, cos + t * half, sin + t * half, neox);
  });
}

// ---- attention --------------------------------------------------------------------------------

size_t attention_scratch_floats(int n_threads, int n_head, int n_kv_head, int64_t n_keys_max) {
  if (n_threads < 1 || n_head <= 0 || n_kv_head <= 0 || n_head % n_kv_head != 0 || n_keys_max < 0)
    throw std::invalid_argument("attention: n_head must be a positive multiple of n_kv_head");
  return (size_t)n_threads * (size_t)(n_head / n_kv_head) * (size_t)n_keys_max;
}

void attention(ThreadPool& pool, const Kernels& K, float* out, const float* q, const void* k_cache, const void* v_cache,
               bool kv_f16, int64_t n_tok, int64_t pos0, int n_head, int n_kv_head, int head_dim, int64_t n_ctx,
               float* scratch) {
  const AttentionRun run{0, n_tok, pos0, k_cache, v_cache};
  attention_runs(pool, K, out, q, &run, 1, kv_f16, n_head, n_kv_head, head_dim, n_ctx, scratch);
}

void attention_runs(ThreadPool& pool, const Kernels& K, float* out, const float* q, const AttentionRun* runs, int n_runs,
                    bool kv_f16, int n_head, int n_kv_head, int head_dim, int64_t n_ctx, float* scratch) {
  if (n_head <= 0 || n_kv_head <= 0 || n_head % n_kv_head != 0)
    throw std::invalid_argument("attention: n_head (" + std::to_string(n_head) +
                                ") must be a positive multiple of n_kv_head (" + std::to_string(n_kv_head) + ")");
  if (head_dim <= 0) throw std::invalid_argument("attention: head_dim must be positive");
  int64_t n_keys_max = 0, n_items = 0;
  double total = 0.0;  // keys summed over all (token, kv head) items
  for (int r = 0; r < n_runs; ++r) {
    const AttentionRun& R = runs[r];
    if (R.n_tok < 0 || R.pos0 < 0 || R.pos0 + R.n_tok > n_ctx)
      throw std::invalid_argument("attention: positions [" + std::to_string(R.pos0) + ", " +
                                  std::to_string(R.pos0 + R.n_tok) + ") do not fit a cache of " + std::to_string(n_ctx));
    n_keys_max = std::max(n_keys_max, R.pos0 + R.n_tok);
    n_items += R.n_tok * n_kv_head;
    total += (double)n_kv_head * ((double)R.n_tok * (R.pos0 + 1) + (double)R.n_tok * (R.n_tok - 1) / 2.0);
  }
  if (n_items == 0) return;
  const int n_q = n_head / n_kv_head;
  const float scale = 1.0f / std::sqrt((float)head_dim);
  const size_t elem = kv_f16 ? sizeof(half_t) : sizeof(float);

  // Work items are (run, token, kv head) triples in that order; item (r, t, g) costs n_keys =
  // pos0 + t + 1. Each thread takes the items whose cost midpoint falls in its equal share of the
  // total, so a long prompt's late tokens (which see more keys) are spread evenly.
  auto work = [&](int ith, int nth) {
    float* sc = scratch + (size_t)ith * n_q * n_keys_max;
    double cum = 0.0;
    for (int r = 0; r < n_runs; ++r) {
      const AttentionRun& R = runs[r];
      const uint8_t* kc = static_cast<const uint8_t*>(R.k_cache);
      const uint8_t* vc = static_cast<const uint8_t*>(R.v_cache);
      for (int64_t it = 0; it < R.n_tok * n_kv_head; ++it) {
        const int64_t t = it / n_kv_head;
        const int g = (int)(it % n_kv_head);
        const int64_t n_keys = R.pos0 + t + 1;
        const double mid = cum + 0.5 * (double)n_keys;
        cum += (double)n_keys;
        int owner = (int)(mid * nth / total);
        if (owner >= nth) owner = nth - 1;
        if (owner != ith) continue;
        const int64_t qoff = ((R.row0 + t) * n_head + (int64_t)g * n_q) * head_dim;
        const size_t kvoff = (size_t)g * (size_t)n_ctx * (size_t)head_dim * elem;
        K.attn_group(out + qoff, q + qoff, n_q, kc + kvoff, vc + kvoff, n_keys, head_dim, head_dim, scale, kv_f16, sc);
      }
    }
  };
  if (n_items == 1) {
    work(0, 1);  // a single group: no barrier
  } else {
    pool.run(work);
  }
}

}  // namespace qc
