// Batched decode of one weight type, stored against repacked (repack.h), on the kernel path
// QWEN_CPU_ISA selects, one thread: N_MAT matrices of ROWS x COLS (together larger than the
// caches, so the weights come from memory as in a decode step) times 1, 2 and 4 activation rows,
// by each way matmul.cpp can cut the rows:
//   stored       the stored layout's route (gemv_rows: first row alone per 64 KiB block, the rest
//                together from L2; without one: row by row);
//   r4_alone     repacked, each activation row by the layout's gemv over each 64 KiB block;
//   r4_all       repacked, gemv_rows over all activation rows at once;
//   r4_first1    repacked, per 64 KiB block the first row by gemv, the rest by gemv_rows;
//   r4_first2    repacked, per 64 KiB block the first two by gemv_rows, the rest by gemv_rows.
// The variants alternate within each repetition; prints per n_a the best ms for all matrices.
// Usage: gemv_rows_bench TYPE [ROWS COLS N_MAT REPS]  (TYPE: Q4_0, Q5_0 or Q8_0; default the
//   0.5B Qwen2.5 FFN gate/up shape, 4864 x 896, 48 matrices, 10 repetitions)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels.h"
#include "repack.h"

using namespace qc;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TYPE [ROWS COLS N_MAT REPS]\n", argv[0]);
    return 2;
  }
  const std::string tname = argv[1];
  const int32_t type = tname == "Q4_0" ? GGML_Q4_0 : tname == "Q5_0" ? GGML_Q5_0 : tname == "Q8_0" ? GGML_Q8_0 : -1;
  const int64_t rows = argc > 2 ? std::atoll(argv[2]) : 4864, cols = argc > 3 ? std::atoll(argv[3]) : 896;
  const int n_mat = argc > 4 ? std::atoi(argv[4]) : 48, reps = argc > 5 ? std::atoi(argv[5]) : 10;
  const Kernels& K = kernels();
  const int32_t layout = type < 0 ? QC_LAYOUT_STORED : repack_layout_of(type);
  if (type < 0 || !K.weight[type].gemv || !K.layout[layout].gemv_rows || !repack_fits(layout, rows, cols)) {
    std::fprintf(stderr, "%s: no stored gemv or repacked gemv_rows for %s %lld x %lld\n", K.isa, tname.c_str(),
                 (long long)rows, (long long)cols);
    return 2;
  }
  const WeightKernels& wk = K.weight[type];
  const LayoutKernels& lk = K.layout[layout];
  const size_t wrb = row_bytes(type, cols), mat_bytes = wrb * rows, block_bytes = type_info(type).block_bytes;

  // weights: random quant bytes, every block's d (its first 2 bytes) a plain 0.0625
  std::mt19937_64 g(1);
  std::vector<std::vector<uint8_t>> stored(n_mat), packed(n_mat);
  for (int m = 0; m < n_mat; ++m) {
    stored[m].resize(mat_bytes);
    for (size_t i = 0; i < mat_bytes; ++i) stored[m][i] = (uint8_t)g();
    for (size_t b = 0; b < mat_bytes; b += block_bytes) stored[m][b] = 0x00, stored[m][b + 1] = 0x2c;
    packed[m].resize(mat_bytes);
    repack_rows(layout, stored[m].data(), rows, cols, packed[m].data());
  }
  // 4 activation rows, in each kernel's format (both Q8_0x4 here, checked)
  if (wk.gemv_act != lk.gemv_act) return 2;
  const size_t arb = act_row_bytes(wk.gemv_act, cols);
  std::vector<uint8_t> act(4 * arb);
  std::normal_distribution<float> nd;
  std::vector<float> x((size_t)cols);
  for (int i = 0; i < 4; ++i) {
    for (float& v : x) v = nd(g);
    K.quantize_act[wk.gemv_act](x.data(), act.data() + i * arb, cols);
  }
  std::vector<float> y((size_t)(4 * rows));
  const size_t ys = (size_t)rows;

  int64_t block = (int64_t)(64 * 1024 / wrb);
  block -= block % 4;
  const int n = (int)cols;
  // one variant over one matrix w for n_a rows
  auto run = [&](int v, const uint8_t* w, int n_a) {
    for (int64_t rb = 0; rb < rows; rb += block) {
      const int nb = (int)(rows - rb < block ? rows - rb : block);
      const uint8_t* wb = w + rb * wrb;
      float* yb = y.data() + rb;
      switch (v) {
        case 0:  // stored: first row alone, the rest together
          wk.gemv(n, wb, wrb, nb, act.data(), yb);
          if (n_a > 1) wk.gemv_rows(n, wb, wrb, nb, act.data() + arb, arb, n_a - 1, yb + ys, ys);
          break;
        case 1:
          for (int i = 0; i < n_a; ++i) lk.gemv(n, wb, wrb, nb, act.data() + i * arb, yb + i * ys);
          break;
        case 2:
          if (rb == 0) lk.gemv_rows(n, w, wrb, (int)rows, act.data(), arb, n_a, y.data(), ys);
          break;
        case 3:
          lk.gemv(n, wb, wrb, nb, act.data(), yb);
          if (n_a > 1) lk.gemv_rows(n, wb, wrb, nb, act.data() + arb, arb, n_a - 1, yb + ys, ys);
          break;
        case 4: {
          const int first = n_a < 2 ? n_a : 2;
          lk.gemv_rows(n, wb, wrb, nb, act.data(), arb, first, yb, ys);
          if (n_a > first) lk.gemv_rows(n, wb, wrb, nb, act.data() + first * arb, arb, n_a - first, yb + first * ys, ys);
          break;
        }
      }
    }
  };
  const char* names[5] = {"stored", "r4_alone", "r4_all", "r4_first1", "r4_first2"};
  std::printf("%s %s %lld x %lld, %d matrices (%.1f MB), best of %d, ms for all\n", K.isa, tname.c_str(),
              (long long)rows, (long long)cols, n_mat, n_mat * mat_bytes / 1e6, reps);
  std::printf("n_a %10s %10s %10s %10s %10s\n", names[0], names[1], names[2], names[3], names[4]);
  for (int n_a : {1, 2, 4}) {
    double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
    for (int r = 0; r < reps; ++r)
      for (int v = 0; v < 5; ++v) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int m = 0; m < n_mat; ++m) run(v, v ? packed[m].data() : stored[m].data(), n_a);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (ms < best[v]) best[v] = ms;
      }
    std::printf("%3d %10.2f %10.2f %10.2f %10.2f %10.2f\n", n_a, best[0], best[1], best[2], best[3], best[4]);
  }
  return 0;
}
