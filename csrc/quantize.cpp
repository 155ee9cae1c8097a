// Weight quantizers (see quantize.h). Two families:
//  - the legacy block types and F16/BF16, written to match gguf-py's numpy quantizers bit for bit:
//    every float operation below is the float32 operation numpy performs, in the same order, with
//    no fused multiply-add (split into separate statements, for clang, which fuses only within
//    one; GCC fuses across statements wherever the baseline has FMA, as on aarch64, so the
//    pragma below turns that off);
//  - the K-quants, where only the error matters: a per-sub-block scale/min search, quantization of
//    those scales to the super-block's codes, then a refinement of the codes and of the super-block
//    scales against the exact reconstruction error.
#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "blocks.h"
#include "threadpool.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace qc {

namespace {

// ---------------------------------------------------------------------------------------------
// numpy conventions

// numpy's float32 -> uint8/int8 cast (astype) on x86-64: a C conversion to a 32-bit integer, where
// NaN, infinities and values outside the int32 range give INT32_MIN, then the low byte. Only
// degenerate blocks reach the out-of-range cases (a block maximum below ~4e-37 makes 1/d infinite),
// but reproducing them keeps the output byte-identical there too.
static inline uint8_t np_cast_u8(float v) {
  if (!(std::fabs(v) < 2147483648.0f)) return 0;
  return (uint8_t)((int32_t)v & 0xff);
}

// gguf-py's rounding for Q8_0: half away from zero (roundf); non-finite input gives NaN there.
static inline uint8_t np_roundf_cast_i8(float v) {
  if (!std::isfinite(v)) return 0;
  return np_cast_u8(std::round(v));
}

// ---------------------------------------------------------------------------------------------
// legacy blocks, byte-identical to gguf-py

// x: (32,) -> one block_q8_0
static void quantize_block_q8_0(const float* x, block_q8_0* y) {
  float amax = 0.0f;
  for (int i = 0; i < QK8_0; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  y->d = fp32_to_fp16(d);
  for (int i = 0; i < QK8_0; ++i) {
    const float v = x[i] * id;
    y->qs[i] = (int8_t)np_roundf_cast_i8(v);
  }
}

// Symmetric 4/5-bit blocks (Q4_0, Q5_0): d = (the first element of largest magnitude) / -half,
// q = trunc(x / d + half + 0.5) clipped to [0, 2*half - 1]. x: (32,), q: (32,) out.
static float quantize_sym_legacy(const float* x, int half, uint8_t* q) {
  int imax = 0;
  float amax = std::fabs(x[0]);
  for (int i = 1; i < 32; ++i) {
    if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); imax = i; }  // first maximum, as argmax
  }
  const float d = x[imax] / (float)-half;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  const float offset = (float)half + 0.5f;
  const uint8_t qmax = (uint8_t)(2 * half - 1);
  for (int i = 0; i < 32; ++i) {
    const float s = x[i] * id;
    const float v = s + offset;
    q[i] = std::min(np_cast_u8(v), qmax);
  }
  return d;
}

// Asymmetric 4/5-bit blocks (Q4_1, Q5_1): d = (max - min) / qmax, q = trunc((x - min) / d + 0.5)
// clipped to [0, qmax]. x: (32,), q: (32,) out; returns d, *min_out = min.
// One case is not reproduced: when the block minimum is zero and the block holds both +0.0 and
// -0.0, numpy's vectorised min() may return either zero, so m's sign bit can differ from gguf-py's
// (the dequantized values are the same).
static float quantize_asym_legacy(const float* x, int qmax, uint8_t* q, float* min_out) {
  float mn = x[0], mx = x[0];
  for (int i = 1; i < 32; ++i) { mn = std::min(mn, x[i]); mx = std::max(mx, x[i]); }
  const float d = (mx - mn) / (float)qmax;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  for (int i = 0; i < 32; ++i) {
    const float t = x[i] - mn;
    const float s = t * id;
    const float v = s + 0.5f;
    q[i] = std::min(np_cast_u8(v), (uint8_t)qmax);
  }
  *min_out = mn;
  return d;
}

// Element j in the low nibble of qs[j], element j + 16 in the high nibble. q: (32,), qs: (16,)
static void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] << 4));
}

// The 5th bit of element j is bit j of the little-endian u32 qh. q: (32,), qh: (4,)
static void pack_high_bits(const uint8_t* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= (uint32_t)((q[j] >> 4) & 1) << j;
  for (int b = 0; b < 4; ++b) qh[b] = (uint8_t)(h >> (8 * b));
}

// x: (32,) -> one block of each legacy type
static void quantize_block_q4_0(const float* x, block_q4_0* y) {
  uint8_t q[32];
  y->d = fp32_to_fp16(quantize_sym_legacy(x, 8, q));
  pack_nibbles(q, y->qs);
}

static void quantize_block_q5_0(const float* x, block_q5_0* y) {
  uint8_t q[32];
  y->d = fp32_to_fp16(quantize_sym_legacy(x, 16, q));
  pack_high_bits(q, y->qh);
  pack_nibbles(q, y->qs);
}

static void quantize_block_q4_1(const float* x, block_q4_1* y) {
  uint8_t q[32];
  float mn;
  y->d = fp32_to_fp16(quantize_asym_legacy(x, 15, q, &mn));
  y->m = fp32_to_fp16(mn);
  pack_nibbles(q, y->qs);
}

static void quantize_block_q5_1(const float* x, block_q5_1* y) {
  uint8_t q[32];
  float mn;
  y->d = fp32_to_fp16(quantize_asym_legacy(x, 31, q, &mn));
  y->m = fp32_to_fp16(mn);
  pack_high_bits(q, y->qh);
  pack_nibbles(q, y->qs);
}

// bfloat16 with round-to-nearest-even; NaN is kept a (quiet) NaN rather than rounded to infinity.
static inline bf16_t fp32_to_bf16(float f) {
  uint32_t n = fp32_to_bits(f);
  if ((n & 0x7fffffffu) > 0x7f800000u) n = (n & 0xffff0000u) | 0x00400000u;
  return (bf16_t)(((uint64_t)n + 0x7fffu + ((n >> 16) & 1u)) >> 16);
}

// ---------------------------------------------------------------------------------------------
// K-quants: shared pieces

// Round to nearest (ties to even, as llama.cpp's nearest_int) and clamp to [lo, hi]; NaN -> lo.
// Adding and removing 1.5 * 2^23 rounds in the FPU's default mode without a libm call (the
// baseline x86-64 target has no SSE4.1 round instruction); exact for |v| < 2^22, which the
// clamp guarantees.
// Branch-free so that the level loops vectorize.
static inline int round_clamp(float v, int lo, int hi) {
  const float big = 12582912.0f;
  v = v > (float)lo ? v : (float)lo;  // NaN -> lo
  v = v < (float)hi ? v : (float)hi;
  const float r = (v + big) - big;
  return (int)r;
}

static inline float sq(float v) { return v * v; }

// Asymmetric fit of one sub-block: x ~ scale * L - mn with L in [0, nmax], scale >= 0, mn >= 0,
// minimising sum(w * err) (err squared, or absolute when use_abs). Starts from the min/max grid,
// then tries nstep + 1 grid densities (nmax + rmin + rdelta * k levels over the range) and for
// each the weighted least-squares scale and min of its levels (llama.cpp's make_qkx2 search).
// x, w: (n,), L: (n,) out, scratch: (n,); returns scale, *mn_out = mn.
static float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, uint8_t* scratch,
                           float rmin, float rdelta, int nstep, bool use_abs, float* mn_out) {
  float lo = x[0], hi = x[0], sum_w = 0, sum_x = 0;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  lo = std::min(lo, 0.0f);  // the min is subtracted as a non-negative number: the offset is <= 0
  if (hi == lo) {
    std::fill(L, L + n, 0);
    *mn_out = -lo;
    return 0.0f;
  }
  auto err_of = [&](const uint8_t* Lv, float scale, float offset) {
    float e = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = scale * Lv[i] + offset - x[i];
      e += w[i] * (use_abs ? std::fabs(diff) : diff * diff);
    }
    return e;
  };
  float iscale = nmax / (hi - lo);
  float scale = 1 / iscale, offset = lo;
  for (int i = 0; i < n; ++i) L[i] = (uint8_t)round_clamp(iscale * (x[i] - lo), 0, nmax);
  float best = err_of(L, scale, offset);
  for (int k = 0; k <= nstep; ++k) {
    iscale = (rmin + rdelta * k + nmax) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = round_clamp(iscale * (x[i] - lo), 0, nmax);
      scratch[i] = (uint8_t)l;
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det <= 0) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / det;
    float o = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (o > 0) {  // a positive offset cannot be stored: refit the scale alone
      o = 0;
      s = sum_xl / sum_l2;
    }
    const float e = err_of(scratch, s, o);
    if (e < best) {
      std::memcpy(L, scratch, n);
      best = e;
      scale = s;
      offset = o;
    }
  }
  *mn_out = -offset;
  return scale;
}

// Symmetric fit with weights x^2: x ~ scale * l, l in [-nmax, nmax - 1]; tries 19 grid densities
// around nmax levels and keeps the one with the best weighted least-squares fit (llama.cpp's
// make_qx with rmse_type 1). x: (n,); returns the (signed) scale.
static float fit_scale_sym(int n, int nmax, const float* x) {
  float amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); vmax = x[i]; }
  }
  if (amax < 1e-15f) return 0.0f;
  auto fit = [&](float iscale, float* sumlx, float* suml2) {
    float a = 0, b = 0;
    for (int i = 0; i < n; ++i) {
      const int l = round_clamp(iscale * x[i], -nmax, nmax - 1);
      const float w = x[i] * x[i];
      a += w * x[i] * l;
      b += w * l * l;
    }
    *sumlx = a;
    *suml2 = b;
  };
  float sumlx, suml2;
  fit(-nmax / vmax, &sumlx, &suml2);
  float scale = suml2 > 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    fit(-(nmax + 0.1f * k) / vmax, &sumlx, &suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Symmetric 3-bit fit (weights x^2) by coordinate descent on the levels: start from the max
// grid, then move single levels to their optimum for the current least-squares scale while that
// improves the fit (llama.cpp's make_q3_quants with do_rmse). x: (n,); returns the signed scale.
static float fit_scale_sym_q3(int n, int nmax, const float* x) {
  float amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); vmax = x[i]; }
  }
  if (amax < 1e-15f) return 0.0f;
  const float iscale = -nmax / vmax;
  int L[QK_K];
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = round_clamp(iscale * x[i], -nmax, nmax - 1);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * L[i];
    suml2 += w * L[i] * L[i];
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx <= 0) continue;
      float sl2 = suml2 - w * L[i] * L[i];
      const int nl = round_clamp(x[i] * sl2 / slx, -nmax, nmax - 1);
      if (nl == L[i]) continue;
      slx += w * x[i] * nl;
      sl2 += w * nl * nl;
      if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = nl;
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (!changed) break;
  }
  return suml2 > 0 ? sumlx / suml2 : 1 / iscale;
}

// ---------------------------------------------------------------------------------------------
// K-quants: super-block solvers. Both return the quantized codes and levels; the type-specific
// packers below only lay them out.

// An asymmetric super-block: x[i] ~ d * sc[j] * L[i] - dmin * mn[j] for i in sub-block j.
struct AsymSuperBlock {
  half_t d, dmin;
  uint8_t sc[16], mn[16];  // codes in [0, code_max]
  uint8_t L[QK_K];         // levels in [0, nmax]
};

// Best levels for one sub-block under fixed reconstruction scale/offset; returns the squared error.
// x: (n,), L: (n,) out
static float levels_asym(const float* x, int n, int nmax, float scale, float offset, uint8_t* L) {
  float e = 0;
  if (scale == 0.0f) {
    for (int i = 0; i < n; ++i) { L[i] = 0; e += sq(x[i] + offset); }
    return e;
  }
  const float inv = 1.0f / scale;
  for (int i = 0; i < n; ++i) {
    const int l = round_clamp((x[i] + offset) * inv, 0, nmax);
    L[i] = (uint8_t)l;
    e += sq(scale * l - offset - x[i]);
  }
  return e;
}

// Error of the whole super-block for given super-scales and codes, levels re-chosen.
// x: (n_sub * sub_len,), sc, mn: (n_sub,), L: (n_sub * sub_len,) out
static double asym_error(const float* x, int n_sub, int sub_len, int nmax, float d, float dmin,
                         const uint8_t* sc, const uint8_t* mn, uint8_t* L) {
  double e = 0;
  for (int j = 0; j < n_sub; ++j)
    e += levels_asym(x + j * sub_len, sub_len, nmax, d * sc[j], dmin * mn[j], L + j * sub_len);
  return e;
}

// For each sub-block, try the codes next to the current ones (+-1 on scale and min) and keep the
// pair with the least squared error under the fixed super-scales d, dmin. Returns the total error.
// x: (n_sub * sub_len,); b: codes in/out, levels out
static double refine_asym_codes(const float* x, int n_sub, int sub_len, int nmax, int code_max, float d,
                                float dmin, AsymSuperBlock* b) {
  double total = 0;
  uint8_t Lt[32];
  for (int j = 0; j < n_sub; ++j) {
    const float* xs = x + j * sub_len;
    uint8_t* Ls = b->L + j * sub_len;
    float best = levels_asym(xs, sub_len, nmax, d * b->sc[j], dmin * b->mn[j], Ls);
    const int sc0 = b->sc[j], mn0 = b->mn[j];
    for (int ds = -1; ds <= 1; ++ds) {
      for (int dm = -1; dm <= 1; ++dm) {
        const int s = sc0 + ds, m = mn0 + dm;
        if ((ds == 0 && dm == 0) || s < 0 || s > code_max || m < 0 || m > code_max) continue;
        const float e = levels_asym(xs, sub_len, nmax, d * s, dmin * m, Lt);
        if (e < best) {
          best = e;
          b->sc[j] = (uint8_t)s;
          b->mn[j] = (uint8_t)m;
          std::memcpy(Ls, Lt, sub_len);
        }
      }
    }
    total += best;
  }
  return total;
}

// Solves the asymmetric super-block. x: (QK_K,), b: out. rms_weights chooses the per-sub-block fit
// weights (true: sqrt(mean x^2) + |x| as llama.cpp's Q4_K/Q5_K; false: |x| as its Q2_K).
static void solve_asym(const float* x, int n_sub, int nmax, int code_max, float rmin, float rdelta, int nstep,
                       bool rms_weights, bool use_abs, AsymSuperBlock* b) {
  const int sub_len = QK_K / n_sub;
  float scales[16], mins[16], w[32];
  uint8_t scratch[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < n_sub; ++j) {
    const float* xs = x + j * sub_len;
    float av = 0;
    if (rms_weights) {
      float s2 = 0;
      for (int i = 0; i < sub_len; ++i) s2 += xs[i] * xs[i];
      av = std::sqrt(s2 / sub_len);
    }
    for (int i = 0; i < sub_len; ++i) w[i] = av + std::fabs(xs[i]);
    scales[j] = fit_scale_min(sub_len, nmax, xs, w, b->L + j * sub_len, scratch, rmin, rdelta, nstep, use_abs,
                              &mins[j]);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_s = max_scale > 0 ? code_max / max_scale : 0.0f;
  const float inv_m = max_min > 0 ? code_max / max_min : 0.0f;
  for (int j = 0; j < n_sub; ++j) {
    b->sc[j] = (uint8_t)round_clamp(inv_s * scales[j], 0, code_max);
    b->mn[j] = (uint8_t)round_clamp(inv_m * mins[j], 0, code_max);
  }
  b->d = fp32_to_fp16(max_scale / code_max);
  b->dmin = fp32_to_fp16(max_min / code_max);
  float d = fp16_to_fp32(b->d), dmin = fp16_to_fp32(b->dmin);
  double err = refine_asym_codes(x, n_sub, sub_len, nmax, code_max, d, dmin, b);

  // Least-squares super-scales for the chosen codes and levels, kept only when they lower the
  // error after fp16 rounding and a fresh choice of levels; then the codes again.
  for (int round = 0; round < 2; ++round) {
    double saa = 0, sab = 0, sbb = 0, sax = 0, sbx = 0;
    for (int j = 0; j < n_sub; ++j) {
      for (int i = 0; i < sub_len; ++i) {
        const double a = (double)b->sc[j] * b->L[j * sub_len + i], bb = b->mn[j], xv = x[j * sub_len + i];
        saa += a * a; sab += a * bb; sbb += bb * bb; sax += a * xv; sbx += bb * xv;
      }
    }
    // minimise sum (d a - m b - x)^2 over d, m: [saa -sab; -sab sbb] [d; m] = [sax; -sbx]
    const double det = saa * sbb - sab * sab;
    if (!(det > 0)) break;
    const double nd = (sax * sbb - sab * sbx) / det;
    const double nm = (sax * sab - saa * sbx) / det;
    if (!(nd > 0) || !(nm >= 0) || !std::isfinite(nd) || !std::isfinite(nm)) break;
    const half_t hd = fp32_to_fp16((float)nd), hm = fp32_to_fp16((float)nm);
    const float fd = fp16_to_fp32(hd), fm = fp16_to_fp32(hm);
    if (!std::isfinite(fd) || !std::isfinite(fm)) break;
    uint8_t Lt[QK_K];
    const double e = asym_error(x, n_sub, sub_len, nmax, fd, fm, b->sc, b->mn, Lt);
    if (!(e < err)) break;
    b->d = hd; b->dmin = hm; d = fd; dmin = fm;
    std::memcpy(b->L, Lt, QK_K);
    err = refine_asym_codes(x, n_sub, sub_len, nmax, code_max, d, dmin, b);
  }
}

// A symmetric super-block: x[i] ~ d * sc[j] * (L[i] - nmax) for i in sub-block j (16 of 16).
struct SymSuperBlock {
  half_t d;
  int8_t sc[16];    // codes in [code_lo, code_hi]
  uint8_t L[QK_K];  // levels in [0, 2 * nmax - 1], value = L - nmax
};

// Best levels for one sub-block under a fixed scale; returns the squared error. x: (n,), L: (n,) out
static float levels_sym(const float* x, int n, int nmax, float scale, uint8_t* L) {
  float e = 0;
  if (scale == 0.0f) {
    for (int i = 0; i < n; ++i) { L[i] = (uint8_t)nmax; e += sq(x[i]); }
    return e;
  }
  const float inv = 1.0f / scale;
  for (int i = 0; i < n; ++i) {
    const int l = round_clamp(x[i] * inv, -nmax, nmax - 1);
    L[i] = (uint8_t)(l + nmax);
    e += sq(scale * l - x[i]);
  }
  return e;
}

// For each sub-block, try the scale codes next to the current one under the fixed super-scale d and
// keep the best; returns the total squared error. x: (QK_K,); b: codes in/out, levels out
static double refine_sym_codes(const float* x, int nmax, int code_lo, int code_hi, float d, SymSuperBlock* b) {
  double total = 0;
  uint8_t Lt[16];
  for (int j = 0; j < 16; ++j) {
    const float* xs = x + j * 16;
    uint8_t* Ls = b->L + j * 16;
    float best = levels_sym(xs, 16, nmax, d * b->sc[j], Ls);
    const int s0 = b->sc[j];
    for (int ds = -1; ds <= 1; ds += 2) {
      const int s = s0 + ds;
      if (s < code_lo || s > code_hi) continue;
      const float e = levels_sym(xs, 16, nmax, d * s, Lt);
      if (e < best) {
        best = e;
        b->sc[j] = (int8_t)s;
        std::memcpy(Ls, Lt, 16);
      }
    }
    total += best;
  }
  return total;
}

// Solves a symmetric super-block of 16 sub-blocks of 16 (Q3_K: nmax 4, codes 6-bit signed;
// Q6_K: nmax 32, codes int8). The largest sub-block scale maps to code_lo (-32 / -128), as in
// llama.cpp's reference quantizers. x: (QK_K,)
static void solve_sym(const float* x, int nmax, int code_lo, int code_hi, bool q3_fit, SymSuperBlock* b) {
  float scales[16];
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = q3_fit ? fit_scale_sym_q3(16, nmax, x + 16 * j) : fit_scale_sym(16, nmax, x + 16 * j);
    if (std::fabs(scales[j]) > amax) { amax = std::fabs(scales[j]); max_scale = scales[j]; }
  }
  if (amax < 1e-15f) {
    b->d = 0;
    std::fill(b->sc, b->sc + 16, 0);
    std::fill(b->L, b->L + QK_K, (uint8_t)nmax);
    return;
  }
  // the largest scale maps to code_lo (negative): sign of d follows -max_scale
  const float iscale = code_lo / max_scale;
  for (int j = 0; j < 16; ++j) b->sc[j] = (int8_t)round_clamp(iscale * scales[j], code_lo, code_hi);
  b->d = fp32_to_fp16(1 / iscale);
  float d = fp16_to_fp32(b->d);
  double err = refine_sym_codes(x, nmax, code_lo, code_hi, d, b);

  for (int round = 0; round < 2; ++round) {
    double saa = 0, sax = 0;
    for (int j = 0; j < 16; ++j) {
      for (int i = 0; i < 16; ++i) {
        const double a = (double)b->sc[j] * ((int)b->L[16 * j + i] - nmax);
        saa += a * a;
        sax += a * x[16 * j + i];
      }
    }
    if (!(saa > 0)) break;
    const half_t hd = fp32_to_fp16((float)(sax / saa));
    const float fd = fp16_to_fp32(hd);
    if (!std::isfinite(fd) || fd == 0.0f) break;
    SymSuperBlock t = *b;
    double e = 0;
    for (int j = 0; j < 16; ++j) e += levels_sym(x + 16 * j, 16, nmax, fd * t.sc[j], t.L + 16 * j);
    if (!(e < err)) break;
    t.d = hd;
    *b = t;
    d = fd;
    err = refine_sym_codes(x, nmax, code_lo, code_hi, d, b);
  }
}

// ---------------------------------------------------------------------------------------------
// K-quants: layouts

// Four 2-bit levels per byte: element h*128 + s*32 + l sits in bits 2s of qs[h*32 + l].
// L: (QK_K,) in 0..3, qs: (64,)
static void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* p = L + h * 128 + l;
      qs[h * 32 + l] = (uint8_t)(p[0] | (p[32] << 2) | (p[64] << 4) | (p[96] << 6));
    }
}

// Q4_K/Q5_K: sub-block s = 2c + k: element c*64 + k*32 + l in nibble k of qs[c*32 + l]; bit 4 of
// element e (Q5_K) in bit e/32 of qh[e%32]. Scales and mins packed as 6-bit codes in 12 bytes.
// sc, mn: (8,) codes in 0..63, s: (12,)
static void pack_k_scales(const uint8_t* sc, const uint8_t* mn, uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
}

// x: (QK_K,) -> one block of each K type
static void quantize_block_q4_K(const float* x, block_q4_K* y) {
  AsymSuperBlock b;
  solve_asym(x, 8, 15, 63, -1.0f, 0.1f, 20, true, false, &b);
  y->d = b.d;
  y->dmin = b.dmin;
  pack_k_scales(b.sc, b.mn, y->scales);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) y->qs[c * 32 + l] = (uint8_t)(b.L[c * 64 + l] | (b.L[c * 64 + 32 + l] << 4));
}

static void quantize_block_q5_K(const float* x, block_q5_K* y) {
  AsymSuperBlock b;
  solve_asym(x, 8, 31, 63, -0.5f, 0.1f, 15, true, false, &b);
  y->d = b.d;
  y->dmin = b.dmin;
  pack_k_scales(b.sc, b.mn, y->scales);
  std::memset(y->qh, 0, sizeof(y->qh));
  for (int e = 0; e < QK_K; ++e) y->qh[e % 32] |= (uint8_t)(((b.L[e] >> 4) & 1) << (e / 32));
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      y->qs[c * 32 + l] = (uint8_t)((b.L[c * 64 + l] & 15) | ((b.L[c * 64 + 32 + l] & 15) << 4));
}

// Q2_K: 16 sub-blocks of 16; scales[j] = scale code | min code << 4.
static void quantize_block_q2_K(const float* x, block_q2_K* y) {
  AsymSuperBlock b;
  solve_asym(x, 16, 3, 15, -0.5f, 0.1f, 15, false, true, &b);
  y->d = b.d;
  y->dmin = b.dmin;
  for (int j = 0; j < 16; ++j) y->scales[j] = (uint8_t)(b.sc[j] | (b.mn[j] << 4));
  pack_2bit(b.L, y->qs);
}

// Q6_K: level L = q + 32 in 0..63; low nibbles: element h*128 + k*64 + l in nibble k of
// ql[h*64 + l]; high 2 bits: element h*128 + s*32 + l in bits 2s of qh[h*32 + l].
static void quantize_block_q6_K(const float* x, block_q6_K* y) {
  SymSuperBlock b;
  solve_sym(x, 32, -128, 127, false, &b);
  y->d = b.d;
  for (int j = 0; j < 16; ++j) y->scales[j] = b.sc[j];
  for (int h = 0; h < 2; ++h) {
    const uint8_t* L = b.L + h * 128;
    for (int l = 0; l < 64; ++l) y->ql[h * 64 + l] = (uint8_t)((L[l] & 15) | ((L[l + 64] & 15) << 4));
    for (int l = 0; l < 32; ++l)
      y->qh[h * 32 + l] = (uint8_t)((L[l] >> 4) | ((L[l + 32] >> 4) << 2) | ((L[l + 64] >> 4) << 4) |
                                    ((L[l + 96] >> 4) << 6));
  }
}

// Q3_K: level L = q + 4 in 0..7: bit 2 in bit e/32 of hmask[e%32], low 2 bits as pack_2bit;
// 6-bit scale codes (c + 32) packed: low nibbles in bytes 0..7 (sub-blocks 8..15 in the high
// nibbles), high 2 bits of sub-block j at bits 2*(j/4) of byte 8 + j%4.
static void quantize_block_q3_K(const float* x, block_q3_K* y) {
  SymSuperBlock b;
  solve_sym(x, 4, -32, 31, true, &b);
  y->d = b.d;
  std::memset(y->scales, 0, sizeof(y->scales));
  for (int j = 0; j < 16; ++j) {
    const int c = b.sc[j] + 32;
    if (j < 8) y->scales[j] |= (uint8_t)(c & 15);
    else y->scales[j - 8] |= (uint8_t)((c & 15) << 4);
    y->scales[8 + j % 4] |= (uint8_t)((c >> 4) << (2 * (j / 4)));
  }
  std::memset(y->hmask, 0, sizeof(y->hmask));
  uint8_t low[QK_K];
  for (int e = 0; e < QK_K; ++e) {
    y->hmask[e % 32] |= (uint8_t)(((b.L[e] >> 2) & 1) << (e / 32));
    low[e] = b.L[e] & 3;
  }
  pack_2bit(low, y->qs);
}

// ---------------------------------------------------------------------------------------------
// rows

// One row x: (n,) -> out: quantized_row_bytes(type, n) bytes.
static void quantize_row(int32_t type, const float* x, uint8_t* out, int64_t n) {
  switch (type) {
    case GGML_F32: std::memcpy(out, x, n * sizeof(float)); return;
    case GGML_F16:
      for (int64_t i = 0; i < n; ++i) {
        const half_t h = fp32_to_fp16(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case GGML_BF16:
      for (int64_t i = 0; i < n; ++i) {
        const bf16_t h = fp32_to_bf16(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    default: break;
  }
  const TypeInfo ti = type_info(type);
  const int64_t nb = n / ti.block_elems;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * ti.block_elems;
    void* yb = out + b * ti.block_bytes;
    switch (type) {
      case GGML_Q4_0: quantize_block_q4_0(xb, (block_q4_0*)yb); break;
      case GGML_Q4_1: quantize_block_q4_1(xb, (block_q4_1*)yb); break;
      case GGML_Q5_0: quantize_block_q5_0(xb, (block_q5_0*)yb); break;
      case GGML_Q5_1: quantize_block_q5_1(xb, (block_q5_1*)yb); break;
      case GGML_Q8_0: quantize_block_q8_0(xb, (block_q8_0*)yb); break;
      case GGML_Q2_K: quantize_block_q2_K(xb, (block_q2_K*)yb); break;
      case GGML_Q3_K: quantize_block_q3_K(xb, (block_q3_K*)yb); break;
      case GGML_Q4_K: quantize_block_q4_K(xb, (block_q4_K*)yb); break;
      case GGML_Q5_K: quantize_block_q5_K(xb, (block_q5_K*)yb); break;
      case GGML_Q6_K: quantize_block_q6_K(xb, (block_q6_K*)yb); break;
      default: return;
    }
  }
}

}  // namespace

bool can_quantize_to(int32_t type) {
  switch (type) {
    case GGML_F32: case GGML_F16: case GGML_BF16:
    case GGML_Q4_0: case GGML_Q4_1: case GGML_Q5_0: case GGML_Q5_1: case GGML_Q8_0:
    case GGML_Q2_K: case GGML_Q3_K: case GGML_Q4_K: case GGML_Q5_K: case GGML_Q6_K:
      return true;
    default:
      return false;
  }
}

size_t quantized_row_bytes(int32_t type, int64_t n_per_row) {
  if (!can_quantize_to(type) || n_per_row <= 0) return 0;
  const TypeInfo ti = type_info(type);
  if (n_per_row % ti.block_elems != 0) return 0;
  return (size_t)(n_per_row / ti.block_elems) * ti.block_bytes;
}

void quantize_rows(int32_t type, const float* x, void* out, int64_t n_rows, int64_t n_per_row, int n_threads) {
  const size_t rb = quantized_row_bytes(type, n_per_row);
  if (rb == 0 || n_rows <= 0) return;
  if (n_threads <= 0) n_threads = default_thread_count();
  // K-quant rows cost ~1 us per element-block, legacy rows far less: don't spawn threads for tiny inputs
  const int64_t min_elems_per_thread = 1 << 16;
  const int64_t useful = std::max<int64_t>(1, n_rows * n_per_row / min_elems_per_thread);
  const int nth = (int)std::min<int64_t>({(int64_t)n_threads, n_rows, useful});
  auto work = [&](int ith) {
    int64_t r0, r1;
    split_range(n_rows, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; ++r) quantize_row(type, x + r * n_per_row, (uint8_t*)out + r * rb, n_per_row);
  };
  if (nth == 1) {
    work(0);
    return;
  }
  std::vector<std::thread> threads;
  threads.reserve(nth - 1);
  for (int t = 1; t < nth; ++t) threads.emplace_back(work, t);
  work(0);
  for (auto& t : threads) t.join();
}

}  // namespace qc
