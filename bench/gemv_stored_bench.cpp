// Batched decode of one stored weight type (no repacking), on the kernel path QWEN_CPU_ISA selects,
// one thread: N_MAT matrices of ROWS x COLS (together larger than the caches unless N_MAT is 1)
// times 1, 2, 4 and 8 activation rows, per 64 KiB block of weight rows as matmul.cpp cuts them:
//   vec_dot   one vec_dot per output, tiles of 16 rows, every activation row over a tile (kVecDot);
//   alone     the gemv of each activation row over the block (rows_alone);
//   first1    the first activation row by the gemv, the rest by gemv_rows (rows_first_then_rest);
//   all       gemv_rows over all activation rows at once.
// The variants alternate within each repetition; prints per n_a the best ms for all matrices.
// Usage: gemv_stored_bench TYPE [ROWS COLS N_MAT REPS]  (TYPE: Q4_1 or Q8_0; default SmolLM2's
//   FFN gate/up shape, 1536 x 576, 96 matrices, 10 repetitions)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels.h"

using namespace qc;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TYPE [ROWS COLS N_MAT REPS]\n", argv[0]);
    return 2;
  }
  const std::string tname = argv[1];
  const int32_t type = tname == "Q4_1" ? GGML_Q4_1 : tname == "Q8_0" ? GGML_Q8_0 : -1;
  const int64_t rows = argc > 2 ? std::atoll(argv[2]) : 1536, cols = argc > 3 ? std::atoll(argv[3]) : 576;
  const int n_mat = argc > 4 ? std::atoi(argv[4]) : 96, reps = argc > 5 ? std::atoi(argv[5]) : 10;
  const Kernels& K = kernels();
  if (type < 0 || !K.weight[type].vec_dot) return 2;
  const WeightKernels& wk = K.weight[type];
  const bool has_gemv = wk.gemv && wk.gemv_rows && cols % act_block_elems(wk.gemv_act) == 0;
  const size_t wrb = row_bytes(type, cols), mat_bytes = wrb * rows, block_bytes = type_info(type).block_bytes;

  // weights: random quant bytes, every block's d (and Q4_1's m) a plain 0.0625
  std::mt19937_64 g(1);
  std::vector<std::vector<uint8_t>> mats(n_mat);
  for (auto& m : mats) {
    m.resize(mat_bytes);
    for (size_t i = 0; i < mat_bytes; ++i) m[i] = (uint8_t)g();
    for (size_t b = 0; b < mat_bytes; b += block_bytes) {
      m[b] = 0x00, m[b + 1] = 0x2c;
      if (type == GGML_Q4_1) m[b + 2] = 0x00, m[b + 3] = 0x2c;
    }
  }
  // 8 activation rows in the vec_dot's format and in the gemv's
  const int32_t fmt[2] = {wk.act_type, has_gemv ? wk.gemv_act : wk.act_type};
  const size_t arb[2] = {act_row_bytes(fmt[0], cols), act_row_bytes(fmt[1], cols)};
  std::vector<uint8_t> act[2] = {std::vector<uint8_t>(8 * arb[0]), std::vector<uint8_t>(8 * arb[1])};
  std::normal_distribution<float> nd;
  std::vector<float> x((size_t)cols);
  for (int i = 0; i < 8; ++i) {
    for (float& v : x) v = nd(g);
    for (int f = 0; f < 2; ++f) K.quantize_act[fmt[f]](x.data(), act[f].data() + i * arb[f], cols);
  }
  std::vector<float> y((size_t)(8 * rows));
  const size_t ys = (size_t)rows;
  int64_t block = (int64_t)(64 * 1024 / wrb);
  block -= block % 4;
  const int n = (int)cols;
  auto run = [&](int v, const uint8_t* w, int n_a) {
    const uint8_t* a = act[v == 0 ? 0 : 1].data();
    const size_t ab = arb[v == 0 ? 0 : 1];
    for (int64_t rb = 0; rb < rows; rb += block) {
      const int nb = (int)(rows - rb < block ? rows - rb : block);
      const uint8_t* wb = w + rb * wrb;
      float* yb = y.data() + rb;
      switch (v) {
        case 0:
          for (int r0 = 0; r0 < nb; r0 += 16)
            for (int i = 0; i < n_a; ++i)
              for (int r = r0; r < nb && r < r0 + 16; ++r) yb[i * ys + r] = wk.vec_dot(n, wb + r * wrb, a + i * ab);
          break;
        case 1:
          for (int i = 0; i < n_a; ++i) wk.gemv(n, wb, wrb, nb, a + i * ab, yb + i * ys);
          break;
        case 2:
          wk.gemv(n, wb, wrb, nb, a, yb);
          if (n_a > 1) wk.gemv_rows(n, wb, wrb, nb, a + ab, ab, n_a - 1, yb + ys, ys);
          break;
        case 3:
          wk.gemv_rows(n, wb, wrb, nb, a, ab, n_a, yb, ys);
          break;
      }
    }
  };
  const char* names[4] = {"vec_dot", "alone", "first1", "all"};
  const int n_var = has_gemv ? 4 : 1;
  std::printf("%s %s %lld x %lld, %d matrices (%.1f MB), best of %d, ms for all\n", K.isa, tname.c_str(),
              (long long)rows, (long long)cols, n_mat, n_mat * mat_bytes / 1e6, reps);
  std::printf("n_a");
  for (int v = 0; v < n_var; ++v) std::printf(" %10s", names[v]);
  std::printf("\n");
  for (int n_a : {1, 2, 4, 8}) {
    double best[4] = {1e30, 1e30, 1e30, 1e30};
    for (int r = 0; r < reps; ++r)
      for (int v = 0; v < n_var; ++v) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int m = 0; m < n_mat; ++m) run(v, mats[m].data(), n_a);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (ms < best[v]) best[v] = ms;
      }
    std::printf("%3d", n_a);
    for (int v = 0; v < n_var; ++v) std::printf(" %10.3f", best[v]);
    std::printf("\n");
  }
  return 0;
}
