// Batched decode of one weight type on the kernel path QWEN_CPU_ISA selects, one thread: N_MAT
// matrices of ROWS x COLS (together larger than the caches, so the weights come from memory as in
// a decode step; N_MAT 2 keeps them in cache: the kernels' compute alone) times 1, 2, 4 and 8
// (and 9) activation rows, by each way matmul.cpp can cut the rows:
//   stored       the stored layout's route (gemv_rows: first row alone per 64 KiB block, the rest
//                together from L2; without one: row by row);
//   stored_all   the stored layout's gemv_rows over all activation rows at once;
//   stored_huge  the stored route over copies in transparent huge pages, as a Model keeps the
//                matrices without a repacked layout where the system has them (stored, stored_all:
//                4 KiB pages, as in the file mapping; the repacked copies in huge pages as a Model's)
//   r4_alone     repacked, each activation row by the layout's gemv over each 64 KiB block (one
//                row: over all rows at once, matmul.cpp's one-token route);
//   r4_all       repacked, gemv_rows over all activation rows at once;
//   r4_first1    repacked, per 64 KiB block the first row by gemv, the rest by gemv_rows;
//   r4_first2    repacked, per 64 KiB block the first two by gemv_rows, the rest by gemv_rows;
//   vec_dot      one vec_dot per output, each activation row in turn (matmul.cpp's route for a
//                type without a gemv: the "before" of a new gemv).
// Columns a type lacks (no stored gemv_rows, no repacked layout) print "-". The variants alternate
// within each repetition; prints per n_a the best ms for all matrices.
// Usage: gemv_rows_bench TYPE [ROWS COLS N_MAT REPS]  (TYPE: a weight type name, e.g. Q4_0, Q8_0,
//   Q6_K; default the 0.5B Qwen2.5 FFN gate/up shape, 4864 x 896, 48 matrices, 10 repetitions)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels.h"
#include "model.h"
#include "quantize.h"
#include "repack.h"

using namespace qc;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TYPE [ROWS COLS N_MAT REPS]\n", argv[0]);
    return 2;
  }
  const std::string tname = argv[1];
  int32_t type = -1;
  for (int32_t t = 0; t < GGML_TYPE_COUNT && type < 0; ++t)
    if (can_quantize_to(t) && tname == type_info(t).name) type = t;
  const int64_t rows = argc > 2 ? std::atoll(argv[2]) : 4864, cols = argc > 3 ? std::atoll(argv[3]) : 896;
  const int n_mat = argc > 4 ? std::atoi(argv[4]) : 48, reps = argc > 5 ? std::atoi(argv[5]) : 10;
  const Kernels& K = kernels();
  if (type < 0 || quantized_row_bytes(type, cols) == 0 || rows % 4 != 0) {
    std::fprintf(stderr, "%s: not a quantizable weight type, or %lld x %lld does not fit it\n", tname.c_str(),
                 (long long)rows, (long long)cols);
    return 2;
  }
  const WeightKernels& wk = K.weight[type];
  const int32_t layout = wk.layout;
  const bool has_stored = wk.gemv && wk.gemv_rows;
  const bool has_r4 = layout != QC_LAYOUT_STORED && K.layout[layout].gemv_rows && repack_fits(layout, rows, cols);
  const LayoutKernels& lk = K.layout[has_r4 ? layout : QC_LAYOUT_STORED];
  // the activation rows in the stored gemv's format and in the repacked one's (Q8_0: Q8_0 and Q8_0x4)
  const int32_t act_type = has_stored ? wk.gemv_act : has_r4 ? lk.gemv_act : wk.act_type;
  const int32_t r4_act_type = has_r4 ? lk.gemv_act : act_type;
  const size_t wrb = row_bytes(type, cols), mat_bytes = wrb * rows;

  // weights: one matrix quantized from normal values, copied N_MAT times (distinct memory)
  std::mt19937_64 g(1);
  std::normal_distribution<float> nd;
  std::vector<float> xw((size_t)(rows * cols));
  for (float& v : xw) v = nd(g);
  std::vector<uint8_t> one(mat_bytes);
  quantize_rows(type, xw.data(), one.data(), rows, cols, 0);
  std::vector<std::vector<uint8_t>> stored(n_mat, one);
  // the repacked copies one after another in transparent huge pages, as a Model keeps them
  PageBuffer packed(has_r4 ? n_mat * mat_bytes : 0, true);
  PageBuffer huge(has_stored ? n_mat * mat_bytes : 0, true);  // the stored bytes as they are
  for (int m = 0; has_stored && m < n_mat; ++m) std::memcpy(huge.data() + m * mat_bytes, stored[m].data(), mat_bytes);
  for (int m = 0; has_r4 && m < n_mat; ++m) repack_rows(layout, stored[m].data(), rows, cols, packed.data() + m * mat_bytes);
  constexpr int kMaxA = 9;  // 9: a speculative verification of 8 drafted tokens
  const size_t arb = act_row_bytes(act_type, cols);
  const size_t rrb = act_row_bytes(r4_act_type, cols);
  std::vector<uint8_t> act(kMaxA * arb), ract(kMaxA * rrb);
  std::vector<float> x((size_t)cols);
  for (int i = 0; i < kMaxA; ++i) {
    for (float& v : x) v = nd(g);
    K.quantize_act[act_type](x.data(), act.data() + i * arb, cols);
    K.quantize_act[r4_act_type](x.data(), ract.data() + i * rrb, cols);
  }
  // the same rows in vec_dot's activation format
  const size_t vrb = act_row_bytes(wk.act_type, cols);
  std::vector<uint8_t> vact(kMaxA * vrb);
  for (int i = 0; i < kMaxA; ++i) {
    for (float& v : x) v = nd(g);
    K.quantize_act[wk.act_type](x.data(), vact.data() + i * vrb, cols);
  }
  std::vector<float> y((size_t)(kMaxA * rows));
  const size_t ys = (size_t)rows;

  const int64_t unit = has_r4 ? repack_rows_of(layout) : 4;  // whole tiles of the layout, as matmul.cpp cuts
  int64_t block = (int64_t)(64 * 1024 / wrb);
  block -= block % unit;
  if (block < unit) block = unit;
  const int n = (int)cols;
  // one variant over one matrix w for n_a rows
  auto run = [&](int v, const uint8_t* w, int n_a) {
    if (v == 1) return wk.gemv_rows(n, w, wrb, (int)rows, act.data(), arb, n_a, y.data(), ys);
    if (v == 3) return lk.gemv_rows(n, w, wrb, (int)rows, ract.data(), rrb, n_a, y.data(), ys);
    if (v == 2 && n_a == 1) return lk.gemv(n, w, wrb, (int)rows, ract.data(), y.data());  // as matmul's one token
    if (v == 6) {
      for (int i = 0; i < n_a; ++i)
        for (int64_t r = 0; r < rows; ++r) y[i * ys + r] = wk.vec_dot(n, w + r * wrb, vact.data() + i * vrb);
      return;
    }
    for (int64_t rb = 0; rb < rows; rb += block) {
      const int nb = (int)(rows - rb < block ? rows - rb : block);
      const uint8_t* wb = w + rb * wrb;
      float* yb = y.data() + rb;
      switch (v) {
        case 0:  // stored: first row alone, the rest together
        case 7:
          wk.gemv(n, wb, wrb, nb, act.data(), yb);
          if (n_a > 1) wk.gemv_rows(n, wb, wrb, nb, act.data() + arb, arb, n_a - 1, yb + ys, ys);
          break;
        case 2:
          for (int i = 0; i < n_a; ++i) lk.gemv(n, wb, wrb, nb, ract.data() + i * rrb, yb + i * ys);
          break;
        case 4:
          lk.gemv(n, wb, wrb, nb, ract.data(), yb);
          if (n_a > 1) lk.gemv_rows(n, wb, wrb, nb, ract.data() + rrb, rrb, n_a - 1, yb + ys, ys);
          break;
        case 5: {
          const int first = n_a < 2 ? n_a : 2;
          lk.gemv_rows(n, wb, wrb, nb, ract.data(), rrb, first, yb, ys);
          if (n_a > first) lk.gemv_rows(n, wb, wrb, nb, ract.data() + first * rrb, rrb, n_a - first, yb + first * ys, ys);
          break;
        }
      }
    }
  };
  constexpr int kVariants = 8;
  const char* names[kVariants] = {"stored", "stored_all", "r4_alone", "r4_all", "r4_first1", "r4_first2", "vec_dot",
                                  "stored_huge"};
  auto has = [&](int v) { return v == 6 ? true : v < 2 || v == 7 ? has_stored : has_r4; };
  auto matrix = [&](int v, int m) {
    return v == 7 ? huge.data() + m * mat_bytes : v >= 2 && v < 6 ? packed.data() + m * mat_bytes : stored[m].data();
  };
  std::printf("%s %s %lld x %lld, %d matrices (%.1f MB), best of %d, ms for all\n", K.isa, tname.c_str(),
              (long long)rows, (long long)cols, n_mat, n_mat * mat_bytes / 1e6, reps);
  std::printf("n_a");
  for (const char* name : names) std::printf(" %10s", name);
  std::printf("\n");
  for (int n_a : {1, 2, 4, 8, kMaxA}) {
    double best[kVariants];
    for (double& b : best) b = 1e30;
    for (int r = 0; r < reps; ++r)
      for (int v = 0; v < kVariants; ++v) {
        if (!has(v)) continue;
        const auto t0 = std::chrono::steady_clock::now();
        for (int m = 0; m < n_mat; ++m) run(v, matrix(v, m), n_a);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (ms < best[v]) best[v] = ms;
      }
    std::printf("%3d", n_a);
    for (int v = 0; v < kVariants; ++v) has(v) ? std::printf(" %10.3f", best[v]) : std::printf(" %10s", "-");
    std::printf("\n");
  }
  return 0;
}
