// Standalone kernel test: every kernel table this build has and this CPU runs (qc::available_isas)
// against the scalar reference table and float64 references, with the error bounds of the Python
// tests (tests/test_simd_vs_scalar.py, tests/test_ops.py). No Python needed, so it runs where the
// package cannot (under qemu-aarch64 for NEON, see .ci/test-neon-qemu; on an emulated pre-AVX
// x86, see .ci/test-x86-baseline).
//
// For each table other than "scalar", against the scalar table on the same bytes:
//   - act_type of every weight type: equal;
//   - quantize_act (Q8_0, Q8_1, Q8_K, F32): bytes IDENTICAL, on random rows at several scales and
//     adversarial ones (ties at .5, zeros, a lone value, huge and tiny magnitudes, NaN-free);
//   - vec_dot of all 13 weight types: |got - scalar| <= 1e-5 * sum_i |w_i a_i| (+1e-30), the sum
//     taken in float64 over the scalar dequantization of the weights and the activation values,
//     on random weights (finite random f16 scales) and on every quant byte set to 0x00, 0xFF,
//     0x80, 0x7F, 0x55 against activations +1, -1, alternating and random;
//   - dequantize, where a table overrides it: bit-identical;
//   - gemm (prefill tiles), where a table has one: each output within the vec_dot bound of the
//     scalar vec_dot, padding of the output stride untouched;
//   - the threaded matmul driver (csrc/matmul.h, 2 threads, 37 outputs, 1 and 3 tokens): every
//     output within the vec_dot bound.
// For every table, scalar included, against float64 computed here:
//   - rmsnorm: rtol 2e-6; an all-zero row gives exact zeros;
//   - softmax: |err| <= (2e-6 + 6e-8 |x - max|) * ref + 1.2e-38; -inf entries give exactly 0;
//     exp through softmax([x, 0]): relative 3.6e-7 for x < -17, 4.8e-7 up to 0; tiny results <= 2^-126;
//   - swiglu: rtol 2e-6, atol 1e-30;
//   - add: bit-identical to float addition;
//   - fp32_to_fp16_row: bit-identical to the scalar table's (itself checked against numpy by
//     tests/test_ops.py), except that a NaN only has to stay a NaN of the same sign;
//   - rope (both pairings, head_dim 2..128, non-unit tables): |err| <= 3e-6 vs float64 rotation
//     with the same float tables;
//   - attention (every pair of f32/f16/q8_0/q4_0 K and V caches, 1..10 queries per KV head,
//     head_dim 64 and 128, and 6..136 for f16/f32; keys across block boundaries; decode at 1.5K and
//     3K keys with and without the split of a pair's keys across threads): |err| <= 5e-6 (1e-5
//     for the long and odd shapes) vs float64 causal attention over the dequantized rows, and the
//     SIMD tables within the same bound of the scalar one; cache rows past the keys hold NaN.
//   - MoeFfn (moe.h): within 2e-5 of the largest output vs a float64 evaluation of the block
//     (test_moe says how the activations are quantized there); measured <= 1.2e-6.
// Prints one line per failure, one per table, and 'N passed, M failed'; exits 1 on any failure.
// Options: --expect-isas a,b,c  fail unless available_isas() is exactly that list.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "../kernels.h"
#include "../matmul.h"
#include "../moe.h"
#include "../ops.h"
#include "../threadpool.h"

namespace {

using namespace qc;

// ---- bookkeeping -------------------------------------------------------------------------

struct Report {
  int passed = 0, failed = 0;
  void check(bool ok, const std::string& isa, const std::string& what) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      std::printf("FAIL [%s] %s\n", isa.c_str(), what.c_str());
    }
  }
};

template <typename... Args>
std::string fmt(const char* f, Args... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, f, args...);
  return buf;
}

// A generator seeded from a test's name and parameters, so every case is reproducible on its own.
std::mt19937_64 rng_for(const std::string& key) {
  uint64_t h = 1469598103934665603ull;
  for (char c : key) h = (h ^ (uint8_t)c) * 1099511628211ull;
  return std::mt19937_64(h);
}

std::vector<float> normal(std::mt19937_64& g, size_t n, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<float> v(n);
  for (auto& x : v) x = (float)(d(g) * scale);
  return v;
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// ---- quantized kernels -------------------------------------------------------------------

struct WeightType {
  int32_t type;
  int blk, bytes;
  std::vector<int> scale_offsets;  // byte offsets of the f16 scale fields in a block
};

const std::vector<WeightType>& weight_types() {
  static const std::vector<WeightType> t = {
      {GGML_F32, 1, 4, {}},          {GGML_F16, 1, 2, {}},          {GGML_BF16, 1, 2, {}},
      {GGML_Q4_0, 32, 18, {0}},      {GGML_Q4_1, 32, 20, {0, 2}},   {GGML_Q5_0, 32, 22, {0}},
      {GGML_Q5_1, 32, 24, {0, 2}},   {GGML_Q8_0, 32, 34, {0}},      {GGML_Q2_K, 256, 84, {80, 82}},
      {GGML_Q3_K, 256, 110, {108}},  {GGML_Q4_K, 256, 144, {0, 2}}, {GGML_Q5_K, 256, 176, {0, 2}},
      {GGML_Q6_K, 256, 210, {208}},
  };
  return t;
}

// Every repacked layout of a stored type (repack.h): a table picks one (WeightKernels::layout),
// the layouts themselves are checked whatever the table picks.
std::vector<int32_t> layouts_of(int32_t wtype) {
  std::vector<int32_t> out;
  for (int32_t l = QC_LAYOUT_STORED + 1; l < QC_LAYOUT_COUNT; ++l)
    if (repack_base_type(l) == wtype) out.push_back(l);
  return out;
}

int act_block(int32_t atype) { return atype == GGML_F32 ? 1 : atype == GGML_Q8_K ? QK_K : 32; }

// n values of a weight type as raw bytes: random (or all `fill`) quant bytes with finite random f16
// scales (either sign, ~0.05) in the scale fields, so every byte pattern decodes to finite values.
std::vector<uint8_t> random_weights(std::mt19937_64& g, const WeightType& wt, int64_t n, int fill = -1) {
  std::vector<uint8_t> w((size_t)(n / wt.blk) * wt.bytes);
  if (wt.type == GGML_F32 || wt.type == GGML_F16 || wt.type == GGML_BF16) {
    const std::vector<float> v = normal(g, (size_t)n);
    for (int64_t i = 0; i < n; ++i) {
      if (wt.type == GGML_F32) {
        std::memcpy(&w[4 * i], &v[i], 4);
      } else {
        const uint16_t h = wt.type == GGML_F16 ? fp32_to_fp16(v[i]) : (uint16_t)(fp32_to_bits(v[i]) >> 16);
        std::memcpy(&w[2 * i], &h, 2);
      }
    }
    return w;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : w) b = (uint8_t)(fill < 0 ? byte(g) : fill);
  std::normal_distribution<double> d(0.0, 0.05);
  for (size_t blk = 0; blk < w.size() / wt.bytes; ++blk)
    for (int off : wt.scale_offsets) {
      const half_t h = fp32_to_fp16((float)d(g));
      std::memcpy(&w[blk * wt.bytes + off], &h, 2);
    }
  return w;
}

// float64 values (n) of activation bytes in format atype (layouts of blocks.h)
std::vector<double> act_values(int32_t atype, const std::vector<uint8_t>& a, int64_t n) {
  std::vector<double> v((size_t)n);
  if (atype == GGML_F32) {
    for (int64_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, &a[4 * i], 4);
      v[i] = f;
    }
  } else if (atype == GGML_Q8_K) {
    const block_q8_K* b = reinterpret_cast<const block_q8_K*>(a.data());
    for (int64_t i = 0; i < n; ++i) v[i] = (double)b[i / QK_K].qs[i % QK_K] * b[i / QK_K].d;
  } else {
    const size_t head = atype == GGML_Q8_1 ? 4 : 2, bytes = head + 32;
    for (int64_t i = 0; i < n; ++i) {
      half_t d;
      std::memcpy(&d, &a[(i / 32) * bytes], 2);
      v[i] = (double)(int8_t)a[(i / 32) * bytes + head + i % 32] * fp16_to_fp32(d);
    }
  }
  return v;
}

std::vector<uint8_t> quantize(const Kernels& K, int32_t atype, const std::vector<float>& x) {
  std::vector<uint8_t> a(act_row_bytes(atype, (int64_t)x.size()));
  K.quantize_act[atype](x.data(), a.data(), (int64_t)x.size());
  return a;
}

// The activation rows of tests/test_simd_vs_scalar.py: random ones at several scales, adversarial ones.
std::vector<std::pair<std::string, std::vector<float>>> activation_rows(std::mt19937_64& g, int n) {
  std::vector<std::pair<std::string, std::vector<float>>> rows;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  rows.push_back({"normal", normal(g, n)});
  std::vector<float> outl = normal(g, n);
  for (auto& x : outl) x *= u(g) < 0.02 ? 50.0f : 1.0f;
  rows.push_back({"outliers", outl});
  rows.push_back({"tiny", normal(g, n, 1e-6)});
  rows.push_back({"large", normal(g, n, 1e3)});
  rows.push_back({"zeros", std::vector<float>(n, 0.0f)});
  std::vector<float> lone(n, 0.0f), alt(n), ties(n);
  lone[n / 3] = -2.5f;
  rows.push_back({"lone", lone});
  rows.push_back({"constant", std::vector<float>(n, 0.75f)});
  for (int i = 0; i < n; ++i) alt[i] = i % 2 == 0 ? 1.0f : -1.0f;
  rows.push_back({"alternating", alt});
  // amax = 127 gives scale 1 in every format, so k + 0.5 lands exactly on a rounding tie
  std::uniform_int_distribution<int> k(-127, 126);
  for (int i = 0; i < n; ++i) ties[i] = i % 32 == 0 ? 127.0f : (float)k(g) + 0.5f;
  rows.push_back({"ties", ties});
  return rows;
}

void test_quantize_act(Report& R, const Kernels& K, const Kernels& S) {
  for (int32_t atype : {(int32_t)GGML_Q8_0, (int32_t)GGML_Q8_1, (int32_t)GGML_Q8_K, (int32_t)GGML_F32, (int32_t)QC_ACT_Q8_0X4,
                         (int32_t)QC_ACT_Q8_X8, (int32_t)QC_ACT_Q8_0F})
    for (int n : {192, 256, 4096}) {
      if (!K.quantize_act[atype]) continue;  // private layouts: only where a table has a kernel for them
      if (n % act_block(atype) != 0 && atype != QC_ACT_Q8_0X4) continue;  // 192: Q8_0x4's padded last group
      auto g = rng_for(fmt("act %d %d", atype, n));
      for (auto& row : activation_rows(g, n)) {
        const std::vector<uint8_t> got = quantize(K, atype, row.second), ref = quantize(S, atype, row.second);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < got.size(); ++i)
          if (got[i] != ref[i] && bad++ == 0) first = i;
        R.check(bad == 0, K.isa,
                fmt("quantize_act %s n=%d %s: %zu bytes differ, first at %zu", act_format_name(atype), n,
                    row.first.c_str(), bad, first));
      }
    }
}

// One vec_dot case: x quantized by each table (bytes checked identical above), dot on both tables
// over the scalar-quantized bytes, error within 1e-5 of sum |w_i a_i|.
void check_dot(Report& R, const Kernels& K, const Kernels& S, const WeightType& wt, const std::vector<uint8_t>& w,
               const std::vector<float>& x, const std::string& what) {
  const int64_t n = (int64_t)x.size();
  const int32_t atype = S.weight[wt.type].act_type;
  const std::vector<uint8_t> a = quantize(S, atype, x);
  const float got = K.weight[wt.type].vec_dot(n, w.data(), a.data());
  const float ref = S.weight[wt.type].vec_dot(n, w.data(), a.data());
  std::vector<float> wv((size_t)n);
  S.dequantize[wt.type](w.data(), wv.data(), n);
  const std::vector<double> av = act_values(atype, a, n);
  double scale = 0.0;
  for (int64_t i = 0; i < n; ++i) scale += std::fabs((double)wv[i] * av[i]);
  const double err = std::fabs((double)got - (double)ref);
  R.check(std::isfinite(ref) && err <= 1e-5 * scale + 1e-30, K.isa,
          fmt("vec_dot %s n=%lld %s: got %.9g scalar %.9g diff %.3g sum|terms| %.3g", type_info(wt.type).name,
              (long long)n, what.c_str(), got, ref, err, scale));
}

void test_vec_dot(Report& R, const Kernels& K, const Kernels& S) {
  for (const WeightType& wt : weight_types()) {
    const char* name = type_info(wt.type).name;
    R.check(K.weight[wt.type].vec_dot && K.weight[wt.type].act_type == S.weight[wt.type].act_type, K.isa,
            fmt("%s: vec_dot missing or act_type %d != scalar %d", name, K.weight[wt.type].act_type,
                S.weight[wt.type].act_type));
    if (!K.weight[wt.type].vec_dot) continue;
    const int blk = std::max(wt.blk, act_block(S.weight[wt.type].act_type));
    std::vector<int64_t> sizes =
        blk == 1 ? std::vector<int64_t>{1, 7, 64, 4101} : std::vector<int64_t>{blk, 2 * blk, 3 * blk, 4096 + blk};
    auto g = rng_for(fmt("dot %s", name));
    std::uniform_int_distribution<int> pick(0, 2);
    const double mags[3] = {1e-3, 1.0, 30.0};
    for (int64_t n : sizes)
      for (int rep = 0; rep < 3; ++rep) {
        const std::vector<uint8_t> w = random_weights(g, wt, n);
        const std::vector<float> x = normal(g, (size_t)n, mags[pick(g)]);
        check_dot(R, K, S, wt, w, x, fmt("random %d", rep));
      }
    if (wt.blk == 1) continue;
    for (int fill : {0x00, 0xFF, 0x80, 0x7F, 0x55})
      for (int64_t n : {(int64_t)blk, (int64_t)5 * blk}) {
        const std::vector<uint8_t> w = random_weights(g, wt, n, fill);
        std::vector<float> ones((size_t)n, 1.0f), neg((size_t)n, -1.0f), alt((size_t)n);
        for (int64_t i = 0; i < n; ++i) alt[i] = i % 2 == 0 ? 1.0f : -1.0f;
        const std::vector<float> rnd = normal(g, (size_t)n);
        const char* xs[4] = {"+1", "-1", "alternating", "random"};
        const std::vector<float>* rows[4] = {&ones, &neg, &alt, &rnd};
        for (int r = 0; r < 4; ++r) check_dot(R, K, S, wt, w, *rows[r], fmt("fill 0x%02x x %s", fill, xs[r]));
      }
  }
}

void test_dequantize(Report& R, const Kernels& K, const Kernels& S) {
  for (const WeightType& wt : weight_types()) {
    if (K.dequantize[wt.type] == S.dequantize[wt.type]) continue;  // inherited: nothing to compare
    auto g = rng_for(fmt("deq %d", wt.type));
    const int64_t n = 8 * std::max(wt.blk, 32) + (wt.blk == 1 ? 5 : 0);
    const std::vector<uint8_t> w = random_weights(g, wt, n);
    std::vector<float> got((size_t)n), ref((size_t)n);
    K.dequantize[wt.type](w.data(), got.data(), n);
    S.dequantize[wt.type](w.data(), ref.data(), n);
    R.check(std::memcmp(got.data(), ref.data(), got.size() * 4) == 0, K.isa,
            fmt("dequantize %s differs from scalar", type_info(wt.type).name));
  }
}

// n_rows random rows of n elements of a weight type, one after another (random_weights per row).
std::vector<uint8_t> random_rows(std::mt19937_64& g, const WeightType& wt, int64_t n, int n_rows, int fill = -1) {
  std::vector<uint8_t> w;
  for (int r = 0; r < n_rows; ++r) {
    const std::vector<uint8_t> row = random_weights(g, wt, n, fill);
    w.insert(w.end(), row.begin(), row.end());
  }
  return w;
}

// A decode kernel's y (n_rows + 2 floats, the last two set to -7 before the call) for the stored
// rows w: every y[r] within the vec_dot bound of the scalar vec_dot of row r over a (the type's
// activation format, quantized from the same x), and nothing written past n_rows.
void check_rows(Report& R, const Kernels& K, const Kernels& S, const WeightType& wt, int64_t n, int n_rows,
                const std::vector<uint8_t>& w, const std::vector<uint8_t>& a, const std::vector<float>& y,
                const std::string& what) {
  const int32_t atype = S.weight[wt.type].act_type;
  const std::vector<double> av = act_values(atype, a, n);
  const size_t wb = row_bytes(wt.type, n);
  std::vector<float> wv((size_t)n);
  bool ok = y[n_rows] == -7.0f && y[n_rows + 1] == -7.0f;
  double worst = 0.0;
  for (int r = 0; r < n_rows; ++r) {
    const float ref = S.weight[wt.type].vec_dot(n, w.data() + r * wb, a.data());
    S.dequantize[wt.type](w.data() + r * wb, wv.data(), n);
    double scale = 0.0;
    for (int64_t e = 0; e < n; ++e) scale += std::fabs((double)wv[e] * av[e]);
    const double err = std::fabs((double)y[r] - ref);
    ok = ok && std::isfinite(ref) && err <= 1e-5 * scale + 1e-30;
    worst = std::max(worst, err / (scale + 1e-30));
  }
  R.check(ok, K.isa, what + fmt(": beyond the vec_dot bound (worst %.3g of sum|terms|) or wrote past n_rows", worst));
}

// WeightKernels::gemv where a table has one: for row lengths of 1, 3, 18 and 33 blocks of its
// activation layout and 1..9 rows (the kernels' passes of several rows and their remainders),
// random and filled weights, activations at several scales: every y[r] within the vec_dot bound
// of the scalar vec_dot of row r over the Q8_0 activations of the same x (the layout is made by
// the scalar reference quantizer from those bytes); nothing written past n_rows.
void test_gemv(Report& R, const Kernels& K, const Kernels& S) {
  for (const WeightType& wt : weight_types()) {
    const WeightKernels& wk = K.weight[wt.type];
    if (!wk.gemv) continue;
    const int32_t atype = S.weight[wt.type].act_type;
    const int blk = act_block_elems(wk.gemv_act);
    for (int64_t n : {(int64_t)blk, (int64_t)3 * blk, (int64_t)18 * blk, (int64_t)33 * blk})
      for (int n_rows : {1, 3, 4, 5, 9})
        for (int fill : {-1, 0x00, 0xFF, 0x88}) {
          auto g = rng_for(fmt("gemv %d %lld %d %d", wt.type, (long long)n, n_rows, fill));
          const std::vector<float> x = normal(g, (size_t)n, n_rows % 2 ? 1.0 : 30.0);
          const std::vector<uint8_t> a = quantize(S, atype, x), a4 = quantize(S, wk.gemv_act, x);
          const std::vector<uint8_t> w = random_rows(g, wt, n, n_rows, fill);
          std::vector<float> y((size_t)n_rows + 2, -7.0f);
          wk.gemv(n, w.data(), row_bytes(wt.type, n), n_rows, a4.data(), y.data());
          check_rows(R, K, S, wt, n, n_rows, w, a, y, fmt("gemv %s n=%lld rows=%d fill=%d", type_info(wt.type).name,
                                                          (long long)n, n_rows, fill));
        }
  }
}

// The repacked layouts (repack.h): unrepack_rows(repack_rows(w)) == w byte for byte, and the
// tiles hold the bytes repack.h says (spot checks of one row's scale and first value byte); a
// shape that does not fit is refused. Independent of the instruction set: checked once.
void test_repack(Report& R) {
  for (const WeightType& wt : weight_types()) {
    for (const int32_t layout : layouts_of(wt.type)) {
      auto g = rng_for(fmt("repack %d %d", wt.type, layout));
      const int64_t cols = repack_cols(layout);
      const int rows = (int)repack_rows_of(layout);
      std::vector<int64_t> lengths = {cols, 3 * cols};
      if (repack_panel_cols(layout)) lengths.push_back(repack_panel_cols(layout) + 3 * cols);  // a last panel of 3 tiles
      for (int64_t n : lengths)
        for (int n_rows : {rows, 3 * rows}) {
          const size_t wb = row_bytes(wt.type, n);
          const std::vector<uint8_t> w = random_rows(g, wt, n, n_rows);
          std::vector<uint8_t> packed(w.size()), back(w.size());
          repack_rows(layout, w.data(), n_rows, n, packed.data());
          unrepack_rows(layout, packed.data(), n_rows, n, back.data());
          R.check(back == w, "repack", fmt("%s layout %d %d x %lld: unrepack(repack(w)) != w", type_info(wt.type).name, layout, n_rows, (long long)n));
          if (n > repack_panel_cols(layout) && repack_panel_cols(layout)) {
            // P tiles per panel, P + 3 per row, slabs of 4 quads: row 5 (quad 1, row 1)'s tile P + 1 is its
            // slab's tile 4P + 3 + 1 (after panel 0, quad 0's 3 tiles of panel 1); its scale of that
            // tile's block k (R4T: 4 blocks of Q4_0 / Q5_0, 2 of Q8_0 per tile row) at 4r + k, or 4k + r (Q8_0)
            const int64_t p = repack_panel_cols(layout) / cols, bpt = cols / 32, k = 1;
            const uint8_t* t = packed.data() + (4 * p + 4) * (size_t)row_bytes(wt.type, cols) * 4;
            const uint8_t* b = w.data() + 5 * wb + ((p + 1) * bpt + k) * type_info(wt.type).block_bytes;
            const bool q8 = layout == QC_LAYOUT_Q8_0_R4T;
            const uint8_t* d = t + (layout == QC_LAYOUT_Q5_0_R4T ? 320 : 256) + 2 * (q8 ? 4 * k + 1 : 4 * 1 + k);
            R.check(n == (p + 3) * cols && d[0] == b[0] && d[1] == b[1], "repack",
                    fmt("%s layout %d: row 5's tile %lld not where repack.h's panels put it", type_info(wt.type).name, layout,
                        (long long)(p + 1)));
            continue;
          }
          if (layout == QC_LAYOUT_Q4_0_R16) {  // row 21 (band 1, row 5): block 1 of tile 0 (s = 1, lane 5)
            if (n_rows < 32) continue;
            const uint8_t* t = packed.data() + (size_t)(n / cols) * 16 * row_bytes(wt.type, cols);  // band 1, tile 0
            const uint8_t* b1 = w.data() + 21 * wb + type_info(wt.type).block_bytes;
            const uint8_t* d = t + 512 + 2 * (16 * 1 + 5);
            R.check(d[0] == b1[0] && d[1] == b1[1] && t[256 + 4 * 5] == b1[2] && t[256 + 64 + 4 * 5] == b1[2 + 4] &&
                        t[256 + 3 * 64 + 4 * 5 + 3] == b1[2 + 15],
                    "repack", fmt("%s layout %d: row 21's tile-0 block not where repack.h puts it", type_info(wt.type).name, layout));
            continue;
          }
          // row 5 (quad 1, row 1), in tile 0: block 2 (Q4_0, Q5_0, Q8_0) or the super-block (Q4_K, Q5_K)
          if (n_rows < 8) continue;
          const size_t tile = (size_t)row_bytes(wt.type, cols) * 4, tiles_per_quad = (size_t)(n / cols);
          const uint8_t* t = packed.data() + tiles_per_quad * tile;  // quad 1, tile 0
          if (layout == QC_LAYOUT_Q8_0_R4T) {  // two blocks per tile: row 5's block 1 (s = 1, lane 16 + 4), signed
            const uint8_t* b1 = w.data() + 5 * wb + type_info(wt.type).block_bytes;
            const uint8_t* d = t + 256 + 2 * (4 * 1 + 1);
            R.check(d[0] == b1[0] && d[1] == b1[1] && t[16 + 4] == b1[2] && t[32 + 16 + 4] == b1[2 + 4] &&
                        t[7 * 32 + 16 + 4 + 3] == b1[2 + 31],
                    "repack", fmt("%s layout %d: row 5's tile-0 block not where repack.h puts it", type_info(wt.type).name, layout));
            continue;
          }
          if (layout == QC_LAYOUT_Q4_1_R4T || layout == QC_LAYOUT_Q5_1_R4T) {
            // two blocks per tile: row 5's block 1 (s = 1, lane 16 + 4); Q5_1: d, m, qh, qs
            const bool q51 = layout == QC_LAYOUT_Q5_1_R4T;
            const uint8_t* b1 = w.data() + 5 * wb + type_info(wt.type).block_bytes;
            const uint8_t* dm = t + (q51 ? 160 : 128) + 2 * (4 * 1 + 1);
            const uint8_t* qs = b1 + (q51 ? 8 : 4);
            bool qh_ok = true;
            if (q51) {  // plane byte e = 0 of that lane: bit J = qh bit 4J
              uint32_t bits;
              std::memcpy(&bits, b1 + 4, 4);
              for (int J = 0; J < 8; ++J) qh_ok &= ((t[128 + 16 + 4] >> J) & 1u) == ((bits >> (4 * J)) & 1u);
            }
            R.check(dm[0] == b1[0] && dm[1] == b1[1] && dm[16] == b1[2] && dm[17] == b1[3] && t[16 + 4] == qs[0] &&
                        t[32 + 16 + 4] == qs[4] && qh_ok,
                    "repack", fmt("%s layout %d: row 5's tile-0 block not where repack.h puts it", type_info(wt.type).name, layout));
            continue;
          }
          const bool k4 = wt.type == GGML_Q4_K || wt.type == GGML_Q5_K, q8 = wt.type == GGML_Q8_0, q5 = wt.type == GGML_Q5_0;
          const bool q5t = layout == QC_LAYOUT_Q5_0_R4T, lanes = q5t || layout == QC_LAYOUT_Q4_0_R4T;
          const uint8_t* b = w.data() + 5 * wb + (k4 ? 0 : 2 * type_info(wt.type).block_bytes);  // its d, ...
          const uint8_t* d = k4 ? t + 16 : t + (q8 ? 512 : q5 ? 320 : 256) + 2 * (4 * 1 + 2);
          // the R4T layouts: block 2 is the pair h = 1's low half, row 1 its lane 4
          const uint8_t v = k4 ? t[64 + type_info(wt.type).block_bytes - 16] : q8 ? (uint8_t)(t[128 * 1 + 16 * 2] ^ 0x80) : lanes ? t[32 + 4] : t[64 * 1 + 16 * 2];
          const uint8_t first = k4 ? b[16] : q5 ? b[6] : b[2];  // the first byte of qs (Q5_K: of qh)
          bool qh_ok = true;
          if (q5t) {  // plane byte e = 0 of that lane: bit J = qh bit 4J
            uint32_t bits;
            std::memcpy(&bits, b + 2, 4);
            for (int J = 0; J < 8; ++J) qh_ok &= ((t[256 + 32 + 4] >> J) & 1u) == ((bits >> (4 * J)) & 1u);
          } else if (q5) {  // its qh bytes 0, 1 (elements 0..15) and 2, 3 (16..31) in row 1's lo and hi masks
            const uint8_t* qh = t + 256 + 16 * 1 + 2 * 2;
            qh_ok = qh[0] == b[2] && qh[1] == b[3] && qh[8] == b[4] && qh[9] == b[5];
          }
          R.check(d[0] == b[0] && d[1] == b[1] && v == first && qh_ok, "repack",
                  fmt("%s layout %d: row 5's tile-0 block not where repack.h puts it", type_info(wt.type).name, layout));
        }
      bool threw = false;
      try {
        std::vector<uint8_t> w(row_bytes(wt.type, 96 * cols / 128) * rows + 1), p(w.size());
        repack_rows(layout, w.data(), rows, 96 * cols / 128, p.data());
      } catch (const std::invalid_argument&) {
        threw = true;
      }
      R.check(threw, "repack", fmt("%s: a row of 3/4 of a tile was not refused", type_info(wt.type).name));
    }
  }
}

// LayoutKernels::gemv where a table has one: over repacked rows (1, 2 and 3 times the layout's
// rows per tile, of 1, 2, 3, 33 and 34 tiles; random and filled weights), every y[r] within the vec_dot bound of the scalar vec_dot of
// the stored row r over the Q8_0 activations of the same x; nothing written past n_rows.
void test_layout_gemv(Report& R, const Kernels& K, const Kernels& S) {
  for (const WeightType& wt : weight_types()) {
    for (const int32_t layout : layouts_of(wt.type)) {
      if (!K.layout[layout].gemv) continue;
      const LayoutKernels& lk = K.layout[layout];
      const int32_t atype = S.weight[wt.type].act_type;
      const int64_t cols = repack_cols(layout);
      const int rows = (int)repack_rows_of(layout);
      for (int64_t n : {cols, 2 * cols, 3 * cols, 33 * cols, 34 * cols})
        for (int n_rows : {rows, 2 * rows, 3 * rows})
          for (int fill : {-1, 0x00, 0xFF, 0x88}) {
            auto g = rng_for(fmt("layout gemv %d %lld %d %d", wt.type, (long long)n, n_rows, fill));
            const std::vector<float> x = normal(g, (size_t)n, n_rows == 2 * rows ? 30.0 : 1.0);
            const std::vector<uint8_t> a = quantize(S, atype, x), a4 = quantize(S, lk.gemv_act, x);
            const std::vector<uint8_t> w = random_rows(g, wt, n, n_rows, fill);
            std::vector<uint8_t> packed(w.size());
            repack_rows(layout, w.data(), n_rows, n, packed.data());
            std::vector<float> y((size_t)n_rows + 2, -7.0f);
            lk.gemv(n, packed.data(), row_bytes(wt.type, n), n_rows, a4.data(), y.data());
            check_rows(R, K, S, wt, n, n_rows, w, a, y, fmt("layout gemv %s/%d n=%lld rows=%d fill=%d",
                                                            type_info(wt.type).name, layout, (long long)n, n_rows, fill));
            // Q4_0_R16 repeats Q4_0_R4T's arithmetic: the same bits in either layout
            if (layout == QC_LAYOUT_Q4_0_R16 && K.layout[QC_LAYOUT_Q4_0_R4T].gemv && repack_fits(QC_LAYOUT_Q4_0_R4T, n_rows, n) &&
                K.layout[QC_LAYOUT_Q4_0_R4T].gemv_act == lk.gemv_act) {
              std::vector<uint8_t> quads(w.size());
              repack_rows(QC_LAYOUT_Q4_0_R4T, w.data(), n_rows, n, quads.data());
              std::vector<float> yq(y.size(), -7.0f);
              K.layout[QC_LAYOUT_Q4_0_R4T].gemv(n, quads.data(), row_bytes(wt.type, n), n_rows, a4.data(), yq.data());
              R.check(std::memcmp(yq.data(), y.data(), sizeof(float) * y.size()) == 0, K.isa,
                      fmt("layout gemv Q4_0_R16 n=%lld rows=%d fill=%d: not bit for bit Q4_0_R4T's", (long long)n, n_rows, fill));
            }
            // Q5_0's, Q4_1's, Q5_1's, Q4_K's and Q5_K's layouts repeat the stored gemv's arithmetic where the
            // table repacks into them: a matrix decodes to the same bits repacked or not
            const WeightKernels& wk = K.weight[wt.type];
            if ((wt.type == GGML_Q5_0 || wt.type == GGML_Q4_1 || wt.type == GGML_Q5_1 || wt.type == GGML_Q4_K ||
                 wt.type == GGML_Q5_K) && wk.gemv && wk.layout == layout && wk.gemv_act == lk.gemv_act) {
              std::vector<float> ys(y.size(), -7.0f);
              wk.gemv(n, w.data(), row_bytes(wt.type, n), n_rows, a4.data(), ys.data());
              R.check(std::memcmp(ys.data(), y.data(), sizeof(float) * y.size()) == 0, K.isa,
                      fmt("layout gemv %s layout %d n=%lld rows=%d fill=%d: not bit for bit the stored gemv", type_info(wt.type).name, layout,
                          (long long)n, n_rows, fill));
            }
          }
    }
  }
}

// n_a rows of x (n values each) quantized one by one into activation format fmt, act_row_bytes apart
std::vector<uint8_t> act_rows(const Kernels& S, int32_t fmt, const std::vector<float>& x, int64_t n, int n_a) {
  const size_t arb = act_row_bytes(fmt, n);
  std::vector<uint8_t> a(arb * n_a);
  for (int i = 0; i < n_a; ++i) {
    const std::vector<uint8_t> ai = quantize(S, fmt, std::vector<float>(x.begin() + i * n, x.begin() + (i + 1) * n));
    std::memcpy(a.data() + i * arb, ai.data(), arb);
  }
  return a;
}

// LayoutKernels::gemv_rows where a table has one: 1..9 activation rows (its passes of two rows and
// the one left) over repacked rows (1, 3 and 5 times the layout's rows per tile, of 1, 2, 3 and 17 tiles: past a min type's
// first 32-block segment, x86/min_dot.h; and past a layout's first panel), row i of y equal bit for bit
// to the layout's gemv of activation row i alone (which test_layout_gemv bounds against the scalar
// reference); the y_stride padding is left untouched.
void test_layout_gemv_rows(Report& R, const Kernels& K, const Kernels& S) {
  for (const WeightType& wt : weight_types()) {
    for (const int32_t layout : layouts_of(wt.type)) {
      if (!K.layout[layout].gemv_rows) continue;
      const LayoutKernels& lk = K.layout[layout];
      const int64_t cols = repack_cols(layout);
      const int rows = (int)repack_rows_of(layout);
      std::vector<int64_t> lengths = {cols, 2 * cols, 3 * cols, 17 * cols};
      if (repack_panel_cols(layout)) lengths.push_back(repack_panel_cols(layout) + 3 * cols);  // a last panel of 3 tiles
      for (int64_t n : lengths)
        for (int n_rows : {rows, 3 * rows, 5 * rows})
          for (int n_a = 1; n_a <= 9; ++n_a) {
            auto g = rng_for(fmt("layout gemv_rows %d %lld %d %d", wt.type, (long long)n, n_rows, n_a));
            const std::vector<float> x = normal(g, (size_t)(n * n_a), 1.0);
            const size_t arb = act_row_bytes(lk.gemv_act, n), wrb = row_bytes(wt.type, n);
            const std::vector<uint8_t> a = act_rows(S, lk.gemv_act, x, n, n_a);
            const std::vector<uint8_t> w = random_rows(g, wt, n, n_rows, -1);
            std::vector<uint8_t> packed(w.size());
            repack_rows(layout, w.data(), n_rows, n, packed.data());
            const size_t ys = (size_t)n_rows + 3;
            std::vector<float> y(ys * n_a, -7.0f), one((size_t)n_rows);
            lk.gemv_rows(n, packed.data(), wrb, n_rows, a.data(), arb, n_a, y.data(), ys);
            bool ok = true;
            for (int i = 0; i < n_a; ++i) {
              lk.gemv(n, packed.data(), wrb, n_rows, a.data() + i * arb, one.data());
              ok &= std::memcmp(one.data(), y.data() + i * ys, sizeof(float) * n_rows) == 0;
              for (size_t j = n_rows; j < ys; ++j) ok &= y[i * ys + j] == -7.0f;
            }
            R.check(ok, K.isa, fmt("layout gemv_rows %s/%d n=%lld rows=%d n_a=%d: not the gemv of each row alone, or wrote "
                                   "past n_rows", type_info(wt.type).name, layout, (long long)n, n_rows, n_a));
          }
    }
  }
}

// WeightKernels::gemv_rows where a table has one: 1..9 activation rows (its passes of up to 4
// rows and the 1..3 left) over 1, 3, 4, 5 and 9 stored rows (the passes of 4 weight rows and the
// rest) of 1 and 3 activation blocks, row i of y equal bit for bit to the gemv of activation row
// i alone (which test_gemv bounds against the scalar reference); the y_stride padding is untouched.
// The float types (float activations, a block of 1) also over rows of 45 and 203 elements (their
// kernels' steps of 32 and 8 and the tail), and there every value is bit for bit the vec_dot of
// the same path. Layouts of 32-value blocks also over rows of 18, 28 and 48 blocks (SmolLM2's 576
// and 1536 and Qwen2.5-0.5B's 896, not multiples of 128 or 256; 48: two of min_dot.h's
// segments), and for Q4_1 and Q5_1, whose decode rows keep the prefill tile's order (min_dot.h),
// and Q6_K (whose avx2 gemv keeps vec_dot's lanes), bit for bit the vec_dot of the same path. The
// K-quants (256-value blocks) also over rows of 6, 35 and 74 blocks (Qwen2.5-1.5B's 1536 and 8960,
// 7B's 18944: more than the avx2 Q6_K kernel's chunk of 64 super-blocks).
void test_gemv_rows(Report& R, const Kernels& K, const Kernels& S) {
  for (const WeightType& wt : weight_types()) {
    const WeightKernels& wk = K.weight[wt.type];
    if (!wk.gemv_rows) continue;
    const int64_t blk = act_block_elems(wk.gemv_act);
    const bool float_act = wk.gemv_act == GGML_F32;
    // the vec_dot comparison where both come from the same path (avx512 keeps the avx2 gemvs)
    auto path = [](const char* name) { return std::string(name).substr(0, std::string(name).find("::")); };
    const bool min_type = wt.type == GGML_Q4_1 || wt.type == GGML_Q5_1;
    const bool same_path = (float_act || min_type || wt.type == GGML_Q6_K) && path(wk.gemv_name) == path(wk.vec_dot_name);
    std::vector<int64_t> sizes{blk, 3 * blk};
    if (float_act) sizes = {1, 3, 45, 203};
    if (blk == 32) sizes.insert(sizes.end(), {18 * blk, 28 * blk, 48 * blk});
    if (blk == 256) sizes.insert(sizes.end(), {6 * blk, 35 * blk, 74 * blk});
    for (int64_t n : sizes)
      for (int n_rows : {1, 3, 4, 5, 9})
        for (int n_a = 1; n_a <= 9; ++n_a) {
          auto g = rng_for(fmt("gemv_rows %d %lld %d %d", wt.type, (long long)n, n_rows, n_a));
          const std::vector<float> x = normal(g, (size_t)(n * n_a), n_a % 2 ? 1.0 : 30.0);
          const size_t arb = act_row_bytes(wk.gemv_act, n), wrb = row_bytes(wt.type, n);
          const std::vector<uint8_t> a = act_rows(S, wk.gemv_act, x, n, n_a);
          const std::vector<uint8_t> w = random_rows(g, wt, n, n_rows, -1);
          const size_t ys = (size_t)n_rows + 3;
          std::vector<float> y(ys * n_a, -7.0f), one((size_t)n_rows);
          wk.gemv_rows(n, w.data(), wrb, n_rows, a.data(), arb, n_a, y.data(), ys);
          bool ok = true;
          for (int i = 0; i < n_a; ++i) {
            wk.gemv(n, w.data(), wrb, n_rows, a.data() + i * arb, one.data());
            ok &= std::memcmp(one.data(), y.data() + i * ys, sizeof(float) * n_rows) == 0;
            for (size_t j = n_rows; j < ys; ++j) ok &= y[i * ys + j] == -7.0f;
            for (int r = 0; same_path && r < n_rows; ++r) {
              const float d = wk.vec_dot(n, w.data() + r * wrb, a.data() + i * arb);
              ok &= std::memcmp(&d, &one[r], sizeof d) == 0;
            }
          }
          R.check(ok, K.isa, fmt("gemv_rows %s n=%lld rows=%d n_a=%d: not the gemv of each row alone (float types: "
                                 "the vec_dot), or wrote past n_rows", type_info(wt.type).name, (long long)n, n_rows, n_a));
        }
  }
}

// WeightKernels::gemm where a table has one: every y[i * y_stride + j] within the vec_dot bound
// of the scalar vec_dot of weight row j and activation row i, for tile-edge shapes (1..21 weight
// rows: 8- and 16-row tiles and their remainders; 1..9 activation rows; rows of 2 blocks, and of
// 33 blocks or 3 super-blocks, past one segment of the tiles' repacking); the y_stride padding
// is left untouched. Random weights and
// activations, then every quant byte 0xFF (the largest values of each type) against activations
// all +1 or all -1 (every quantized activation at +-127): the largest integer sums a kernel
// can meet, where int16 sums of byte products (csrc/avx2/gemm.cpp) would overflow first.
void test_gemm(Report& R, const Kernels& K, const Kernels& S) {
  for (const WeightType& wt : weight_types()) {
    if (!K.weight[wt.type].gemm) continue;
    const int32_t atype = S.weight[wt.type].act_type;
    const int64_t n_short = 2 * std::max(wt.blk, act_block(atype)) + (wt.blk == 1 ? 3 : 0);
    const int64_t n_long = wt.blk == QK_K ? 3 * QK_K : wt.blk == 32 ? 33 * 32 : 0;
    for (int64_t n : {n_short, n_long})
    for (int fill : {-1, 0xFF})
    for (int n_w : {1, 4, 13, 21})
      for (int n_a : {1, 3, 9}) {
        if (n == 0 || (n == n_long && (n_w != 21 || n_a != 9))) continue;  // long rows: one shape
        const size_t wb = row_bytes(wt.type, n), ab = row_bytes(atype, n);
        auto g = rng_for(fmt("gemm %d %d %d %d %lld", wt.type, n_w, n_a, fill, (long long)n));
        // the gemm reads its own layout where it has one (made by the scalar reference quantizer)
        const int32_t gtype = K.weight[wt.type].gemm_act >= 0 ? K.weight[wt.type].gemm_act : atype;
        const size_t gb = act_row_bytes(gtype, n);
        std::vector<uint8_t> w, a, ga;
        std::vector<std::vector<double>> av;
        for (int j = 0; j < n_w; ++j) {
          const std::vector<uint8_t> row = random_weights(g, wt, n, fill);
          w.insert(w.end(), row.begin(), row.end());
        }
        for (int i = 0; i < n_a; ++i) {
          const std::vector<float> x = fill < 0 ? normal(g, (size_t)n) : std::vector<float>((size_t)n, i % 2 ? -1.0f : 1.0f);
          const std::vector<uint8_t> row = quantize(S, atype, x), grow = quantize(S, gtype, x);
          a.insert(a.end(), row.begin(), row.end());
          ga.insert(ga.end(), grow.begin(), grow.end());
          av.push_back(act_values(atype, row, n));
        }
        const size_t y_stride = (size_t)n_w + 3;
        std::vector<float> y((size_t)n_a * y_stride, -7.0f), wv((size_t)n);
        K.weight[wt.type].gemm(n, w.data(), wb, n_w, ga.data(), gb, n_a, y.data(), y_stride);
        bool ok = true;
        for (int j = 0; j < n_w; ++j) {
          S.dequantize[wt.type](w.data() + j * wb, wv.data(), n);
          for (int i = 0; i < n_a; ++i) {
            const float ref = S.weight[wt.type].vec_dot(n, w.data() + j * wb, a.data() + i * ab);
            double scale = 0.0;
            for (int64_t e = 0; e < n; ++e) scale += std::fabs((double)wv[e] * av[i][e]);
            ok = ok && std::fabs((double)y[i * y_stride + j] - ref) <= 1e-5 * scale + 1e-30;
          }
        }
        for (int i = 0; i < n_a; ++i)
          for (size_t j = n_w; j < y_stride; ++j) ok = ok && y[i * y_stride + j] == -7.0f;
        R.check(ok, K.isa, fmt("gemm %s n=%lld n_w=%d n_a=%d fill %d: beyond the vec_dot bound or wrote past n_w",
                               type_info(wt.type).name, (long long)n, n_w, n_a, fill));
      }
  }
}

// Prefill vs decode on one table: WeightKernels::gemm (several tokens) against the same table's
// vec_dot (one token, as a decode step computes it) on the same activations. Bit-identical for the
// types whose tile and row share a summation order (Q4_1, Q5_1: csrc/x86/min_dot.h; the float types:
// dot_float_rows), so that a token's outputs do not depend on the kind of step; rows of 2, 18 and 48
// blocks (two segments).
void test_gemm_matches_vec_dot(Report& R, const Kernels& K) {
  for (const WeightType& wt : weight_types()) {
    const bool exact = wt.type == GGML_Q4_1 || wt.type == GGML_Q5_1 || wt.type == GGML_F32 || wt.type == GGML_F16 ||
                       wt.type == GGML_BF16;
    if (!K.weight[wt.type].gemm || !exact) continue;
    const int32_t atype = K.weight[wt.type].act_type;
    const int32_t gtype = K.weight[wt.type].gemm_act >= 0 ? K.weight[wt.type].gemm_act : atype;
    for (int64_t n : {64, 576, 1536}) {
      auto g = rng_for(fmt("gemm=vec_dot %d %lld", wt.type, (long long)n));
      const int n_w = 13, n_a = 5;
      const size_t wb = row_bytes(wt.type, n), ab = row_bytes(atype, n), gb = act_row_bytes(gtype, n);
      std::vector<uint8_t> w, a, ga;
      for (int j = 0; j < n_w; ++j) {
        const std::vector<uint8_t> row = random_weights(g, wt, n);
        w.insert(w.end(), row.begin(), row.end());
      }
      for (int i = 0; i < n_a; ++i) {
        const std::vector<float> x = normal(g, (size_t)n);
        const std::vector<uint8_t> row = quantize(K, atype, x), grow = quantize(K, gtype, x);
        a.insert(a.end(), row.begin(), row.end());
        ga.insert(ga.end(), grow.begin(), grow.end());
      }
      std::vector<float> y((size_t)n_a * n_w);
      K.weight[wt.type].gemm(n, w.data(), wb, n_w, ga.data(), gb, n_a, y.data(), (size_t)n_w);
      int differ = 0;
      for (int i = 0; i < n_a; ++i)
        for (int j = 0; j < n_w; ++j)
          differ += y[i * n_w + j] != K.weight[wt.type].vec_dot(n, w.data() + j * wb, a.data() + i * ab);
      R.check(differ == 0, K.isa, fmt("gemm vs vec_dot %s n=%lld: %d of %d outputs not bit-identical",
                                      type_info(wt.type).name, (long long)n, differ, n_a * n_w));
    }
  }
}

// The threaded matmul driver (activation quantization included) on a 2-thread pool, n_out = 37
// (an uneven split), 1 and 3 tokens: every output within the vec_dot bound of the scalar table's.
void test_matmul(Report& R, const Kernels& K, const Kernels& S) {
  ThreadPool pool(2);
  const int64_t n_in = 512, n_out = 37;
  for (const WeightType& wt : weight_types()) {
    if (!K.weight[wt.type].vec_dot) continue;
    const int32_t atype = S.weight[wt.type].act_type;
    for (int64_t n_tok : {1, 3}) {
      auto g = rng_for(fmt("matmul %d %lld", wt.type, (long long)n_tok));
      std::vector<uint8_t> w;
      for (int64_t r = 0; r < n_out; ++r) {
        const std::vector<uint8_t> row = random_weights(g, wt, n_in);
        w.insert(w.end(), row.begin(), row.end());
      }
      const std::vector<float> x = normal(g, (size_t)(n_tok * n_in));
      std::vector<float> got((size_t)(n_tok * n_out)), ref(got.size());
      std::vector<uint8_t> scratch(std::max(matmul_scratch_bytes(K, wt.type, n_in, n_tok),
                                            matmul_scratch_bytes(S, wt.type, n_in, n_tok)));
      matmul(pool, K, w.data(), wt.type, n_out, n_in, x.data(), n_tok, got.data(), scratch.data());
      matmul(pool, S, w.data(), wt.type, n_out, n_in, x.data(), n_tok, ref.data(), scratch.data());
      const size_t rb = row_bytes(wt.type, n_in);
      std::vector<float> wv((size_t)n_in);
      bool ok = true;
      for (int64_t t = 0; t < n_tok; ++t) {
        const std::vector<float> xt(x.begin() + t * n_in, x.begin() + (t + 1) * n_in);
        const std::vector<double> av = act_values(atype, quantize(S, atype, xt), n_in);
        for (int64_t r = 0; r < n_out; ++r) {
          S.dequantize[wt.type](w.data() + r * rb, wv.data(), n_in);
          double scale = 0.0;
          for (int64_t i = 0; i < n_in; ++i) scale += std::fabs((double)wv[i] * av[i]);
          const size_t o = (size_t)(t * n_out + r);
          ok = ok && std::fabs((double)got[o] - ref[o]) <= 1e-5 * scale + 1e-30;
        }
      }
      R.check(ok, K.isa, fmt("matmul %s n_tok=%lld: beyond 1e-5 * sum|terms| of scalar", type_info(wt.type).name,
                             (long long)n_tok));
    }
  }
}

// A table's prefill form over a layout (LayoutKernels::gemm) gives its stored gemm's results bit
// for bit: matmul over 3 slabs of repacked rows against the same rows stored, rows without and with
// column panels (a last panel of 3 tiles), 2, 5 and 70 tokens, two threads.
void test_layout_gemm(Report& R, const Kernels& K) {
  ThreadPool pool(2);
  for (const WeightType& wt : weight_types()) {
    for (const int32_t layout : layouts_of(wt.type)) {
      if (!K.layout[layout].gemm) continue;
      const int64_t n_out = 3 * repack_rows_of(layout);
      std::vector<int64_t> lengths = {3 * repack_cols(layout)};
      if (repack_panel_cols(layout)) lengths.push_back(repack_panel_cols(layout) + 3 * repack_cols(layout));
      for (const int64_t n_in : lengths)
        for (int64_t n_tok : {2, 5, 70}) {
          auto g = rng_for(fmt("layout gemm %d %d %lld %lld", wt.type, layout, (long long)n_in, (long long)n_tok));
          std::vector<uint8_t> w = random_rows(g, wt, n_in, (int)n_out), packed(w.size());
          repack_rows(layout, w.data(), n_out, n_in, packed.data());
          const std::vector<float> x = normal(g, (size_t)(n_tok * n_in));
          std::vector<float> got((size_t)(n_tok * n_out)), ref(got.size());
          const MatmulOutput stored{w.data(), wt.type, n_out, ref.data()};
          const MatmulOutput repacked{packed.data(), wt.type, n_out, got.data(), layout};
          std::vector<uint8_t> scratch(std::max(matmul_group_scratch_bytes(K, &stored, 1, n_in, n_tok),
                                                matmul_group_scratch_bytes(K, &repacked, 1, n_in, n_tok)));
          matmul_group(pool, K, &stored, 1, n_in, x.data(), n_tok, scratch.data());
          matmul_group(pool, K, &repacked, 1, n_in, x.data(), n_tok, scratch.data());
          R.check(got == ref, K.isa, fmt("layout gemm %s over %s %lld x %lld, %lld tokens: not the stored gemm's bits",
                                         K.layout[layout].gemm_name, type_info(wt.type).name, (long long)n_out,
                                         (long long)n_in, (long long)n_tok));
        }
    }
  }
}

// matmul over repacked weights (MatmulOutput::layout), on every table: where it has the layout's
// gemv, and where it has not (the rows are then unpacked for one token as well): a group of two outputs of 9 tiles' rows by 3 tiles each, 1 token (the layout's gemv), 3 and 70 tokens (the rows
// unpacked back for the stored gemm or vec_dot), on two threads: every output within 1e-5 *
// sum|terms| of the same product over the stored rows.
void test_matmul_repacked(Report& R, const Kernels& K) {
  ThreadPool pool(2);
  for (const WeightType& wt : weight_types()) {
    for (const int32_t layout : layouts_of(wt.type)) {
      if (!K.weight[wt.type].vec_dot) continue;
      const int64_t n_out = 9 * repack_rows_of(layout);
      const int64_t n_in = 3 * repack_cols(layout);
      for (int64_t n_tok : {1, 3, 70}) {
        auto g = rng_for(fmt("matmul repacked %d %d %lld", wt.type, layout, (long long)n_tok));
        std::vector<uint8_t> w[2], packed[2];
        for (int i = 0; i < 2; ++i) {
          w[i] = random_rows(g, wt, n_in, (int)n_out);
          packed[i].resize(w[i].size());
          repack_rows(layout, w[i].data(), n_out, n_in, packed[i].data());
        }
        const std::vector<float> x = normal(g, (size_t)(n_tok * n_in));
        std::vector<float> got((size_t)(2 * n_tok * n_out)), ref(got.size());
        const MatmulOutput stored[2] = {{w[0].data(), wt.type, n_out, ref.data()},
                                        {w[1].data(), wt.type, n_out, ref.data() + n_tok * n_out}};
        const MatmulOutput repacked[2] = {{packed[0].data(), wt.type, n_out, got.data(), layout},
                                          {packed[1].data(), wt.type, n_out, got.data() + n_tok * n_out, layout}};
        std::vector<uint8_t> scratch(std::max(matmul_group_scratch_bytes(K, stored, 2, n_in, n_tok),
                                              matmul_group_scratch_bytes(K, repacked, 2, n_in, n_tok)));
        matmul_group(pool, K, stored, 2, n_in, x.data(), n_tok, scratch.data());
        matmul_group(pool, K, repacked, 2, n_in, x.data(), n_tok, scratch.data());
        const int32_t atype = K.weight[wt.type].act_type;
        const size_t rb = row_bytes(wt.type, n_in);
        std::vector<float> wv((size_t)n_in);
        bool ok = true;
        for (int i = 0; i < 2; ++i)
          for (int64_t t = 0; t < n_tok; ++t) {
            const std::vector<float> xt(x.begin() + t * n_in, x.begin() + (t + 1) * n_in);
            const std::vector<double> av = act_values(atype, quantize(K, atype, xt), n_in);
            for (int64_t r = 0; r < n_out; ++r) {
              K.dequantize[wt.type](w[i].data() + r * rb, wv.data(), n_in);
              double scale = 0.0;
              for (int64_t e = 0; e < n_in; ++e) scale += std::fabs((double)wv[e] * av[e]);
              const size_t o = (size_t)((i * n_tok + t) * n_out + r);
              ok = ok && std::fabs((double)got[o] - ref[o]) <= 1e-5 * scale + 1e-30;
            }
          }
        R.check(ok, K.isa, fmt("matmul repacked %s/%d n_tok=%lld: beyond 1e-5 * sum|terms| of the stored rows'",
                               type_info(wt.type).name, layout, (long long)n_tok));
      }
    }
  }
}

// matmul_each: three outputs of 9 tiles' rows (36 as stored), each with its own input row, in the
// stored layout and (where the type has one) repacked, on two threads: every output bit-identical to matmul of its
// row alone (the MoE decode relies on this: a token's results do not depend on the batch).
void test_matmul_each(Report& R, const Kernels& K) {
  ThreadPool pool(2);
  const int64_t n_in = 256;
  for (const WeightType& wt : weight_types()) {
    if (!K.weight[wt.type].vec_dot || n_in % type_info(wt.type).block_elems != 0) continue;
    std::vector<int32_t> layouts = layouts_of(wt.type);
    layouts.insert(layouts.begin(), QC_LAYOUT_STORED);
    for (const int32_t layout : layouts) {
      const int64_t n_out = 9 * repack_rows_of(layout);
      auto g = rng_for(fmt("matmul each %d %d", wt.type, layout));
      std::vector<uint8_t> w[3];
      MatmulOutput outs[3];
      std::vector<float> got((size_t)(3 * n_out)), ref(got.size());
      for (int i = 0; i < 3; ++i) {
        const std::vector<uint8_t> rows = random_rows(g, wt, n_in, (int)n_out);
        w[i] = rows;
        if (layout != QC_LAYOUT_STORED) repack_rows(layout, rows.data(), n_out, n_in, w[i].data());
        outs[i] = {w[i].data(), wt.type, n_out, got.data() + i * n_out, layout};
      }
      const std::vector<float> x = normal(g, (size_t)(3 * n_in));
      std::vector<uint8_t> scratch(matmul_group_scratch_bytes(K, outs, 3, n_in, 3));
      matmul_each(pool, K, outs, 3, n_in, x.data(), scratch.data());
      for (int i = 0; i < 3; ++i)
        matmul(pool, K, w[i].data(), wt.type, n_out, n_in, x.data() + i * n_in, 1, ref.data() + i * n_out, scratch.data(),
               layout);
      R.check(std::memcmp(got.data(), ref.data(), sizeof(float) * got.size()) == 0, K.isa,
              fmt("matmul_each %s layout %d: not bit-identical to each row alone", type_info(wt.type).name, layout));
    }
  }
}

// ---- elementwise and row kernels ---------------------------------------------------------

const int kOddSizes[] = {1, 3, 7, 8, 9, 17, 37, 896, 4099};

void test_rmsnorm(Report& R, const Kernels& K) {
  for (int n : kOddSizes) {
    auto g = rng_for(fmt("rmsnorm %d", n));
    const std::vector<float> w = normal(g, n);
    for (double mag : {1.0, 30.0, 1e-3}) {
      const std::vector<float> x = normal(g, n, mag);
      std::vector<float> y(n);
      K.rmsnorm(y.data(), x.data(), w.data(), n, 1e-6f);
      double ss = 0.0;
      for (float v : x) ss += (double)v * v;
      const double r = 1.0 / std::sqrt(ss / n + 1e-6);
      double worst = 0.0;
      bool ok = true;
      for (int i = 0; i < n; ++i) {
        const double ref = (double)x[i] * r * w[i], err = std::fabs(y[i] - ref);
        ok = ok && err <= 2e-6 * std::fabs(ref) + 1e-30;
        worst = std::max(worst, err / (std::fabs(ref) + 1e-30));
      }
      R.check(ok, K.isa, fmt("rmsnorm n=%d x~%g: worst relative error %.3g > 2e-6", n, mag, worst));
    }
  }
  std::vector<float> z(13, 0.0f), one(13, 1.0f), y(13, 1.0f);
  K.rmsnorm(y.data(), z.data(), one.data(), 13, 1e-5f);
  bool zero = true;
  for (float v : y) zero = zero && v == 0.0f && !std::signbit(v);
  R.check(zero, K.isa, "rmsnorm of a zero row is not exactly zero");
}

std::vector<double> softmax64(const std::vector<float>& x) {
  double mx = -INFINITY, sum = 0.0;
  for (float v : x) mx = std::max(mx, (double)v);
  std::vector<double> e(x.size());
  for (size_t i = 0; i < x.size(); ++i) sum += e[i] = std::exp((double)x[i] - mx);
  for (auto& v : e) v /= sum;
  return e;
}

void test_softmax(Report& R, const Kernels& K) {
  for (int n : kOddSizes) {
    auto g = rng_for(fmt("softmax %d", n));
    for (double mag : {1.0, 10.0, 40.0, 1e-3}) {
      std::vector<float> x = normal(g, n, mag), y = x;
      K.softmax(y.data(), n);
      const std::vector<double> ref = softmax64(x);
      float mx = x[0];
      for (float v : x) mx = std::max(mx, v);
      bool ok = true;
      for (int i = 0; i < n; ++i) {
        const double tol = (2e-6 + 6e-8 * std::fabs((double)x[i] - mx)) * ref[i] + 1.2e-38;
        ok = ok && std::fabs(y[i] - ref[i]) <= tol;
      }
      R.check(ok, K.isa, fmt("softmax n=%d x~%g beyond (2e-6 + 6e-8|x-max|) relative", n, mag));
    }
  }
  {  // masked entries: exactly 0; a row with one finite entry gives exactly 1 there
    auto g = rng_for("softmax mask");
    std::vector<float> a = normal(g, 21), b = normal(g, 21);
    for (int i = 0; i < 21; i += 3) a[i] = -kInf;
    for (int i = 1; i < 21; ++i) b[i] = -kInf;
    std::vector<float> ya = a, yb = b;
    K.softmax(ya.data(), 21);
    K.softmax(yb.data(), 21);
    const std::vector<double> ra = softmax64(a);
    bool ok = yb[0] == 1.0f;
    for (int i = 0; i < 21; ++i) {
      ok = ok && (std::isinf(a[i]) ? ya[i] == 0.0f : std::fabs(ya[i] - ra[i]) <= 2e-6 * ra[i]);
      if (i > 0) ok = ok && yb[i] == 0.0f;
    }
    R.check(ok, K.isa, "softmax with -inf entries: not exactly 0 there or beyond 2e-6 elsewhere");
  }
  {  // softmax([x, 0])[0] is e^x itself once 1 + e^x rounds to 1 (x < -17)
    double worst_low = 0.0, worst = 0.0;
    for (int i = 0; i <= 6000; ++i) {
      const float x = i <= 4000 ? (float)(-87.3 + (70.3 * i) / 4000) : (float)(-17.0 + 17.0 * (i - 4000) / 2000);
      float row[2] = {x, 0.0f};
      K.softmax(row, 2);
      const double ref = std::exp((double)x) / (1.0 + std::exp((double)x));
      const double rel = std::fabs(row[0] - ref) / ref;
      if (x < -17.0f) worst_low = std::max(worst_low, rel);
      worst = std::max(worst, rel);
    }
    R.check(worst_low <= 3.6e-7 && worst <= 4.8e-7, K.isa,
            fmt("exp through softmax: relative error %.3g (x < -17, bound 3.6e-7), %.3g (bound 4.8e-7)", worst_low,
                worst));
    float t1[2] = {-90.0f, 0.0f}, t2[2] = {-200.0f, 0.0f};
    K.softmax(t1, 2);
    K.softmax(t2, 2);
    R.check(t1[0] <= 0x1p-126f && t2[0] <= 0x1p-126f && t1[1] == 1.0f && t2[1] == 1.0f, K.isa,
            "softmax([-90 or -200, 0]) not (<= 2^-126, 1)");
  }
}

void test_swiglu(Report& R, const Kernels& K) {
  for (int n : kOddSizes) {
    auto g = rng_for(fmt("swiglu %d", n));
    std::vector<float> gate = normal(g, n, 6.0), up = normal(g, n), y(n);
    const float special[4] = {-100.0f, 100.0f, -30.0f, 0.0f};
    for (int i = 0; i < std::min(n, 4); ++i) gate[i] = special[i];
    K.swiglu(y.data(), gate.data(), up.data(), n);
    bool ok = true;
    for (int i = 0; i < n; ++i) {
      const double gd = gate[i], ref = gd / (1.0 + std::exp(-gd)) * up[i];
      ok = ok && std::fabs(y[i] - ref) <= 1e-30 + 2e-6 * std::fabs(ref);
    }
    R.check(ok, K.isa, fmt("swiglu n=%d beyond rtol 2e-6 / atol 1e-30", n));
  }
}

void test_add(Report& R, const Kernels& K) {
  for (int n : kOddSizes) {
    auto g = rng_for(fmt("add %d", n));
    std::vector<float> a = normal(g, n), b = normal(g, n), y(n);
    K.add(y.data(), a.data(), b.data(), n);
    bool ok = true;
    for (int i = 0; i < n; ++i) ok = ok && fp32_to_bits(y[i]) == fp32_to_bits(a[i] + b[i]);
    K.add(a.data(), a.data(), b.data(), n);  // in place (y aliases a)
    ok = ok && std::memcmp(a.data(), y.data(), (size_t)n * 4) == 0;
    R.check(ok, K.isa, fmt("add n=%d not bit-identical to float addition", n));
  }
}

void test_fp16(Report& R, const Kernels& K, const Kernels& S) {
  auto g = rng_for("fp16");
  std::vector<float> x;
  std::normal_distribution<double> d(0.0, 1.0);
  std::uniform_real_distribution<double> e(-28.0, 18.0);
  for (int i = 0; i < 3000; ++i) x.push_back((float)(d(g) * std::exp2(e(g))));
  for (uint32_t h = 0; h + 1 < 0x7c00; ++h) {  // exactly halfway between two finite halves: ties to even
    const double t = ((double)fp16_to_fp32((half_t)h) + fp16_to_fp32((half_t)(h + 1))) / 2;
    x.push_back((float)t);
    if (h % 7 == 0) x.push_back((float)-t);
  }
  const float specials[] = {0.0f, -0.0f, kInf, -kInf, kNaN, -kNaN, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e5f,
                            0x1p-24f, 0x1p-25f, 0x1p-25f * 1.0000001f, 0x1p-26f, 0x1p-14f, 0x1p-14f * (1 - 0x1p-12f),
                            1e-30f, fp32_from_bits(0x7fc00001u), fp32_from_bits(0xff800001u),
                            fp32_from_bits(0x7fffffffu), 0.1f, 0.2f, 0.3f};
  for (float s : specials) x.push_back(s);
  std::vector<half_t> got(x.size()), ref(x.size());
  K.fp32_to_fp16_row(x.data(), got.data(), (int64_t)x.size());
  S.fp32_to_fp16_row(x.data(), ref.data(), (int64_t)x.size());
  size_t bad = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const bool nan_ok = std::isnan(x[i]) && (got[i] & 0x7fff) > 0x7c00 && (got[i] & 0x8000) == (ref[i] & 0x8000);
    if (got[i] != ref[i] && !nan_ok) ++bad;
  }
  R.check(bad == 0 && x.size() % 4 != 0, K.isa, fmt("fp32_to_fp16_row: %zu of %zu halves differ", bad, x.size()));
}

void test_rope(Report& R, const Kernels& K) {
  for (bool neox : {true, false})
    for (int head_dim : {2, 6, 18, 64, 128}) {
      auto g = rng_for(fmt("rope %d %d", neox, head_dim));
      const int n_tok = 5, n_head = 3, half = head_dim / 2;
      double worst = 0.0;
      for (int t = 0; t < n_tok; ++t) {
        std::vector<float> x = normal(g, (size_t)n_head * head_dim), y = x, c(half), s(half);
        for (int i = 0; i < half; ++i) {  // position 5 + t, base 1e4, linear scaling 0.5, attn_factor 1.5
          const double ang = (5 + t) * 0.5 * std::pow(1e4, -2.0 * i / head_dim);
          c[i] = (float)(std::cos(ang) * 1.5);
          s[i] = (float)(std::sin(ang) * 1.5);
        }
        K.rope(y.data(), n_head, head_dim, c.data(), s.data(), neox);
        for (int h = 0; h < n_head; ++h)
          for (int i = 0; i < half; ++i) {
            const int ia = h * head_dim + (neox ? i : 2 * i), ib = h * head_dim + (neox ? i + half : 2 * i + 1);
            const double a = x[ia], b = x[ib];
            worst = std::max(worst, std::fabs(y[ia] - (a * c[i] - b * s[i])));
            worst = std::max(worst, std::fabs(y[ib] - (a * s[i] + b * c[i])));
          }
      }
      R.check(worst <= 3e-6, K.isa, fmt("rope neox=%d head_dim=%d: error %.3g > 3e-6", neox, head_dim, worst));
    }
}

// ---- attention ---------------------------------------------------------------------------

const char* type_name(int32_t t) { return type_info(t).name; }

// Causal GQA attention of n_tok queries at positions pos0.. over caches (n_kv_head, n_ctx, row)
// of types kv, stored from float rows by kv_store_row, whose rows past pos0 + n_tok hold NaN (a
// quantized row: NaN scales), through attention() on a pool of n_threads (3 threads split a
// decode pair's keys across threads once it has >= 1024 keys), vs float64 softmax attention over
// the dequantized rows: max |err| <= tol. For a SIMD table the output is also held to the scalar
// table's within tol. Tables with q8_query (avx512's) score a q8_0/q4_0 K cache against the queries quantized to
// int8 (attn_groups.h, QueryQ8): their float64 reference takes the queries so rounded, and their
// distance to the scalar table's exact queries is held to kQ8QueryTol instead (the largest
// measured over these cases, avx512 and avx2, was 0.015 at 7 queries over 6..12 keys; with one
// scale per 32 elements, 0.027).
constexpr double kQ8QueryTol = 0.03;
void attention_case(Report& R, const Kernels& K, const Kernels& S, KvTypes kv, int n_tok, int pos0, int n_head,
                    int n_kv_head, int head_dim, int n_threads, double tol) {
  const std::string what = fmt("attention K %s V %s n_tok=%d pos0=%d heads=%d/%d head_dim=%d threads=%d",
                               type_name(kv.k), type_name(kv.v), n_tok, pos0, n_head, n_kv_head, head_dim, n_threads);
  auto g = rng_for(what);
  const int n_ctx = pos0 + n_tok + 3, n_q = n_head / n_kv_head, n_keys_max = pos0 + n_tok;
  const size_t rows = (size_t)n_kv_head * n_ctx;
  const std::vector<float> q = normal(g, (size_t)n_tok * n_head * head_dim);
  const std::vector<float> kf = normal(g, rows * head_dim, 1.5), vf = normal(g, rows * head_dim);
  const size_t kb = kv_row_bytes(kv.k, head_dim), vb = kv_row_bytes(kv.v, head_dim);
  std::vector<uint8_t> kc(rows * kb), vc(rows * vb);
  std::vector<double> kd(rows * head_dim), vd(rows * head_dim);  // the rows as stored, dequantized
  std::vector<float> tmp(head_dim);
  for (size_t r = 0; r < rows; ++r) {
    kv_store_row(S, kv.k, kf.data() + r * head_dim, kc.data() + r * kb, head_dim);
    kv_store_row(S, kv.v, vf.data() + r * head_dim, vc.data() + r * vb, head_dim);
    S.dequantize[kv.k](kc.data() + r * kb, tmp.data(), head_dim);
    for (int d = 0; d < head_dim; ++d) kd[r * head_dim + d] = tmp[d];
    S.dequantize[kv.v](vc.data() + r * vb, tmp.data(), head_dim);
    for (int d = 0; d < head_dim; ++d) vd[r * head_dim + d] = tmp[d];
    if ((int)(r % n_ctx) >= n_keys_max) {  // never to be read: NaN elements, or NaN block scales
      for (auto [type, row, bytes] : {std::tuple{kv.k, kc.data() + r * kb, kb}, std::tuple{kv.v, vc.data() + r * vb, vb}}) {
        if (type == GGML_F32) for (size_t i = 0; i < bytes; i += 4) std::memcpy(row + i, &kNaN, 4);
        else if (type == GGML_F16) for (size_t i = 0; i < bytes; i += 2) reinterpret_cast<half_t*>(row)[i / 2] = 0x7e00;
        else for (size_t i = 0; i < bytes; i += type_info(type).block_bytes) reinterpret_cast<half_t*>(row + i)[0] = 0x7e00;
      }
    }
  }
  const bool q8_query = K.attn[kv_index(kv.k)][kv_index(kv.v)].q8_query;
  std::vector<float> qr = q;  // the queries the reference takes
  if (q8_query)
    for (size_t g = 0; g < q.size() / 4; ++g) {  // quantize_queries_q8's rounding
      float amax = 0.0f;
      for (int e = 0; e < 4; ++e) amax = std::max(amax, std::fabs(q[g * 4 + e]));
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      for (int e = 0; e < 4; ++e) qr[g * 4 + e] = (float)std::nearbyint(q[g * 4 + e] * id) * d;
    }
  auto run = [&](const Kernels& T) {
    ThreadPool pool(n_threads);
    std::vector<float> out(q.size(), kNaN), scratch(attention_scratch_floats(n_threads, n_head, n_kv_head, head_dim, n_keys_max));
    attention(pool, T, out.data(), q.data(), kc.data(), vc.data(), kv, n_tok, pos0, n_head, n_kv_head, head_dim, n_ctx,
              scratch.data());
    return out;
  };
  const std::vector<float> out = run(K);
  double worst = 0.0;
  for (int t = 0; t < n_tok; ++t)
    for (int h = 0; h < n_head; ++h) {
      const size_t qoff = ((size_t)t * n_head + h) * head_dim, kvoff = (size_t)(h / n_q) * n_ctx * head_dim;
      const int n_keys = pos0 + t + 1;
      std::vector<double> p(n_keys);
      double mx = -INFINITY, sum = 0.0;
      for (int i = 0; i < n_keys; ++i) {
        double dot = 0.0;
        for (int d = 0; d < head_dim; ++d) dot += (double)qr[qoff + d] * kd[kvoff + (size_t)i * head_dim + d];
        p[i] = dot / std::sqrt((double)head_dim);
        mx = std::max(mx, p[i]);
      }
      for (auto& x : p) sum += x = std::exp(x - mx);
      for (int d = 0; d < head_dim; ++d) {
        double ref = 0.0;
        for (int i = 0; i < n_keys; ++i) ref += p[i] / sum * vd[kvoff + (size_t)i * head_dim + d];
        const double err = std::fabs(out[qoff + d] - ref);
        worst = std::isnan(err) ? INFINITY : std::max(worst, err);
      }
    }
  R.check(worst <= tol, K.isa, fmt("%s: error %.3g > %.3g vs float64", what.c_str(), worst, tol));
  if (&K != &S) {
    const std::vector<float> ref = run(S);
    double diff = 0.0;
    for (size_t i = 0; i < out.size(); ++i) {
      const double e = std::fabs((double)out[i] - ref[i]);
      diff = std::isnan(e) ? INFINITY : std::max(diff, e);
    }
    const double dtol = q8_query ? kQ8QueryTol : tol;
    R.check(diff <= dtol, K.isa, fmt("%s: differs from scalar by %.3g > %.3g", what.c_str(), diff, dtol));
    if (q8_query && std::getenv("QC_ATTN_Q8_DIFF")) std::printf("q8 query diff %.4g %s\n", diff, what.c_str());
  }
}

// kv_row_bytes and kv_store_row refuse what a cache cannot hold.
void test_kv_rows(Report& R, const Kernels& K) {
  auto throws = [](auto f) {
    try {
      f();
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  float x[40] = {};
  uint8_t row[160];
  R.check(kv_row_bytes(GGML_Q8_0, 64) == 68 && kv_row_bytes(GGML_Q4_0, 64) == 36 && kv_row_bytes(GGML_F16, 6) == 12 &&
              kv_row_bytes(GGML_F32, 6) == 24,
          K.isa, "kv_row_bytes sizes");
  R.check(throws([] { kv_row_bytes(GGML_Q8_0, 40); }) && throws([] { kv_row_bytes(GGML_Q4_1, 64); }) &&
              throws([] { kv_row_bytes(GGML_F16, 0); }) && throws([&] { kv_store_row(K, GGML_Q4_0, x, row, 40); }),
          K.isa, "kv_row_bytes / kv_store_row accept a bad type or head_dim");
}

void test_attention(Report& R, const Kernels& K, const Kernels& S) {
  test_kv_rows(R, K);
  const int32_t types[4] = {GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q4_0};
  for (int32_t kt : types)
    for (int32_t vt : types) {
      const KvTypes kv{kt, vt};
      for (int head_dim : {64, 128}) {
        attention_case(R, K, S, kv, 1, 0, 14, 2, head_dim, 2, 5e-6);
        attention_case(R, K, S, kv, 3, 62, 14, 2, head_dim, 2, 5e-6);  // 63 .. 65 keys: across a block boundary
      }
      attention_case(R, K, S, kv, 7, 5, 9, 3, 64, 2, 5e-6);
    }
  for (KvTypes kv : {KvTypes{GGML_F16, GGML_F16}, KvTypes{GGML_F32, GGML_F32}}) {
    for (int n_tok : {1, 7})
      for (int pos0 : {0, 5}) attention_case(R, K, S, kv, n_tok, pos0, 14, 2, 128, 2, 5e-6);
    attention_case(R, K, S, kv, 3, 70, 10, 1, 20, 2, 1e-5);  // 10 queries per KV head, head_dim % 8 != 0
    for (int n_q = 1; n_q <= 8; ++n_q) attention_case(R, K, S, kv, 2, 126, 2 * n_q, 2, 136, 2, 5e-6);
    attention_case(R, K, S, kv, 61, 0, 4, 2, 32, 3, 1e-5);  // a long prompt
    for (int head_dim : {6, 8, 16, 30}) attention_case(R, K, S, kv, 3, 9, 6, 2, head_dim, 2, 1e-5);
    attention_case(R, K, S, kv, 40, 0, 4, 2, 16, 1, 1e-5);  // the tiny test model's shape
  }
  // q8_0/q4_0 K against int8 queries (QueryQ8): every group size of the score kernels, and
  // head_dim 32 and 96 (a 64-element chunk with one block)
  for (KvTypes kv : {KvTypes{GGML_Q8_0, GGML_F16}, KvTypes{GGML_Q4_0, GGML_Q4_0}}) {
    for (int n_q = 1; n_q <= 8; ++n_q) attention_case(R, K, S, kv, 2, 126, 2 * n_q, 2, 96, 2, 5e-6);
    attention_case(R, K, S, kv, 3, 70, 10, 1, 32, 2, 1e-5);
  }
  // decode at depth: 1 thread (whole pairs) and 3 threads (each pair's keys split into parts)
  for (KvTypes kv : {KvTypes{GGML_F16, GGML_F16}, KvTypes{GGML_Q8_0, GGML_Q8_0}, KvTypes{GGML_Q4_0, GGML_Q4_0},
                     KvTypes{GGML_Q8_0, GGML_F16}})
    for (int n_threads : {1, 3}) {
      attention_case(R, K, S, kv, 1, 1499, 14, 2, 64, n_threads, 1e-5);
      attention_case(R, K, S, kv, 1, 2999, 7, 1, 128, n_threads, 1e-5);
    }
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t e; (e = s.find(',', b)) != std::string::npos; b = e + 1) out.push_back(s.substr(b, e - b));
  out.push_back(s.substr(b));
  return out;
}

}  // namespace

// ---- mixture of experts ------------------------------------------------------------------

// MoeFfn (moe.h) against a straightforward float64 evaluation of the same block: router softmax,
// top-k (renormalised or not), each chosen expert's silu(gate) * up then down, plus the shared
// expert scaled by its sigmoid gate; the quantized products' activations quantized as the kernels
// quantize them (so only rounding order separates the two), checked within 2e-5 of the output's
// largest magnitude. One token (the fused decode group), 7 tokens with 3 computed alone (grouped by
// expert), and the same with the expert matrices repacked where the type has a layout.
void moe_case(Report& R, const Kernels& K, const WeightType& wt, bool shexp, bool norm_topk, bool repacked) {
  ThreadPool pool(2);
  const int64_t E = 256;
  MoeConfig c;
  c.n_expert = 6, c.n_expert_used = 2, c.n_ff_exp = 256, c.n_ff_shexp = shexp ? 256 : 0, c.norm_topk = norm_topk;
  const int64_t F = c.n_ff_exp, X = c.n_expert;
  auto g = rng_for(fmt("moe %d %d %d", wt.type, (int)shexp, (int)norm_topk));
  const size_t rb_e = row_bytes(wt.type, E), rb_f = row_bytes(wt.type, F);
  std::vector<uint8_t> gate = random_rows(g, wt, E, (int)(X * F)), up = random_rows(g, wt, E, (int)(X * F));
  std::vector<uint8_t> down = random_rows(g, wt, F, (int)(X * E));
  std::vector<uint8_t> sg = random_rows(g, wt, E, (int)F), su = random_rows(g, wt, E, (int)F), sd = random_rows(g, wt, F, (int)E);
  const std::vector<float> router = normal(g, (size_t)(X * E), 0.2), sgate = normal(g, (size_t)E, 0.1);
  MoeWeights w;
  w.gate_inp = {router.data(), GGML_F32, X, E};
  w.gate_exps = {gate.data(), wt.type, X * F, E};
  w.up_exps = {up.data(), wt.type, X * F, E};
  w.down_exps = {down.data(), wt.type, X * E, F};
  if (shexp) {
    w.gate_inp_shexp = {sgate.data(), GGML_F32, 1, E};
    w.gate_shexp = {sg.data(), wt.type, F, E};
    w.up_shexp = {su.data(), wt.type, F, E};
    w.down_shexp = {sd.data(), wt.type, E, F};
  }
  std::vector<uint8_t> packed[3];
  const int32_t layout = K.weight[wt.type].layout;
  if (repacked) {
    if (layout == QC_LAYOUT_STORED || !repack_fits(layout, X * F, E)) return;
    Tensor* ts[3] = {&w.gate_exps, &w.up_exps, &w.down_exps};
    for (int i = 0; i < 3; ++i) {
      packed[i].resize(row_bytes(wt.type, ts[i]->cols) * ts[i]->rows);
      repack_rows(layout, static_cast<const uint8_t*>(ts[i]->data), ts[i]->rows, ts[i]->cols, packed[i].data());
      ts[i]->data = packed[i].data(), ts[i]->layout = layout;
    }
  }
  // float64 value of a product of quantized rows w (row r at r * rb) with x, x quantized as the kernels' activations
  const int32_t atype = K.weight[wt.type].act_type;
  auto product = [&](const std::vector<uint8_t>& wq, size_t rb, int64_t r0, int64_t n_out, const std::vector<float>& x) {
    const std::vector<double> av = act_values(atype, quantize(K, atype, x), (int64_t)x.size());
    std::vector<float> wv(x.size());
    std::vector<double> y((size_t)n_out);
    for (int64_t r = 0; r < n_out; ++r) {
      K.dequantize[wt.type](wq.data() + (r0 + r) * rb, wv.data(), (int64_t)x.size());
      for (size_t i = 0; i < x.size(); ++i) y[r] += (double)wv[i] * av[i];
    }
    return y;
  };
  auto ffn = [&](const std::vector<uint8_t>& g_, const std::vector<uint8_t>& u_, const std::vector<uint8_t>& d_, int64_t e,
                 const std::vector<float>& x) {
    const std::vector<double> gv = product(g_, rb_e, e * F, F, x), uv = product(u_, rb_e, e * F, F, x);
    std::vector<float> h((size_t)F);
    for (int64_t i = 0; i < F; ++i) h[i] = (float)(gv[i] / (1.0 + std::exp(-gv[i])) * uv[i]);
    return product(d_, rb_f, e * E, E, h);
  };
  MoeFfn moe(c, E);
  for (int64_t m : {1, 7}) {
    const int64_t n_alone = m == 1 ? 1 : 3;
    const std::vector<float> x = normal(g, (size_t)(m * E));
    std::vector<float> y((size_t)(m * E));
    std::vector<uint8_t> act(moe.scratch_bytes(K, w, m));
    moe.run(pool, K, w, x.data(), y.data(), m, n_alone, act.data());
    double worst = 0.0, top = 0.0;
    for (int64_t t = 0; t < m; ++t) {
      const std::vector<float> xt(x.begin() + t * E, x.begin() + (t + 1) * E);
      std::vector<double> p((size_t)X), ref((size_t)E, 0.0);
      double mx = -1e300, sum = 0.0;
      for (int64_t e = 0; e < X; ++e) {
        for (int64_t i = 0; i < E; ++i) p[e] += (double)router[e * E + i] * xt[i];
        mx = std::max(mx, p[e]);
      }
      for (auto& v : p) sum += (v = std::exp(v - mx));
      for (auto& v : p) v /= sum;
      std::vector<int64_t> order((size_t)X);
      for (int64_t e = 0; e < X; ++e) order[e] = e;
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
      double wsum = 0.0;
      for (int j = 0; j < c.n_expert_used; ++j) wsum += p[order[j]];
      for (int j = 0; j < c.n_expert_used; ++j) {
        const std::vector<double> d = ffn(gate, up, down, order[j], xt);
        const double s = norm_topk ? p[order[j]] / wsum : p[order[j]];
        for (int64_t i = 0; i < E; ++i) ref[i] += s * d[i];
      }
      if (shexp) {
        double dot = 0.0;
        for (int64_t i = 0; i < E; ++i) dot += (double)sgate[i] * xt[i];
        const std::vector<double> d = ffn(sg, su, sd, 0, xt);
        for (int64_t i = 0; i < E; ++i) ref[i] += d[i] / (1.0 + std::exp(-dot));
      }
      for (int64_t i = 0; i < E; ++i) {
        worst = std::max(worst, std::fabs(y[t * E + i] - ref[i]));
        top = std::max(top, std::fabs(ref[i]));
      }
    }
    R.check(worst <= 2e-5 * top, K.isa,
            fmt("moe %s%s%s%s m=%lld: |err| %.3g of max %.3g", type_info(wt.type).name, shexp ? " shexp" : "",
                norm_topk ? " norm" : "", repacked ? " repacked" : "", (long long)m, worst, top));
  }
}

void test_moe(Report& R, const Kernels& K) {
  for (const WeightType& wt : weight_types()) {
    if (wt.type != GGML_F32 && wt.type != GGML_Q8_0 && wt.type != GGML_Q4_0 && wt.type != GGML_Q4_K) continue;
    if (!K.weight[wt.type].vec_dot) continue;
    moe_case(R, K, wt, true, false, false);
    moe_case(R, K, wt, false, true, false);
    moe_case(R, K, wt, false, true, true);
  }
}

int main(int argc, char** argv) {
  std::vector<std::string> expect;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--expect-isas") == 0 && i + 1 < argc) {
      expect = split(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--expect-isas name,name,...]\n", argv[0]);
      return 2;
    }
  }
  int count = 0;
  const char* const* names = available_isas(&count);
  std::vector<std::string> isas(names, names + count);
  std::string list;
  for (auto& n : isas) list += (list.empty() ? "" : ",") + n;
  std::printf("cpu features: %s\navailable isas: %s\n", cpu_features(), list.c_str());

  Report R;
  if (!expect.empty()) R.check(expect == isas, "dispatch", "available isas " + list + " differ from the expected ones");
  set_isa("scalar");
  const Kernels& S = kernels();
  test_repack(R);
  for (const std::string& name : isas) {
    const auto t0 = std::chrono::steady_clock::now();
    const int passed0 = R.passed, failed0 = R.failed;
    R.check(set_isa(name.c_str()) && name == kernels().isa, name, "set_isa failed");
    const Kernels& K = kernels();
    if (name != "scalar") {
      test_quantize_act(R, K, S);
      test_vec_dot(R, K, S);
      test_dequantize(R, K, S);
      test_gemm(R, K, S);
      test_gemm_matches_vec_dot(R, K);
      test_gemv(R, K, S);
      test_gemv_rows(R, K, S);
      test_layout_gemv(R, K, S);
      test_layout_gemv_rows(R, K, S);
      test_matmul(R, K, S);
      test_matmul_repacked(R, K);
      test_layout_gemm(R, K);
      test_matmul_each(R, K);
    }
    test_rmsnorm(R, K);
    test_softmax(R, K);
    test_swiglu(R, K);
    test_add(R, K);
    test_fp16(R, K, S);
    test_rope(R, K);
    test_attention(R, K, S);
#ifdef QWEN_HAVE_AVX512
    if (name == "avx512") {  // the table's attention without AVX512-VNNI (vpmaddubsw for q8_0/q4_0 K)
      Kernels T = K;
      register_op_kernels_avx512(T, CpuFeatures{});
      T.isa = "avx512 (attention without VNNI)";
      test_attention(R, T, S);
    }
#endif
    test_moe(R, K);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[%s] %d passed, %d failed (%.1f s)\n", name.c_str(), R.passed - passed0, R.failed - failed0, secs);
  }
  std::printf("%d passed, %d failed\n", R.passed, R.failed);
  return R.failed == 0 ? 0 : 1;
}
