// Decode attention (one query token) over a KV cache at a given depth, per cache type, on the
// kernel path QWEN_CPU_ISA selects: the time of one token's attention over n_layer layers (each
// layer its own cache, so the caches do not stay in the CPU's caches), and the K+V bytes it reads.
// For scale, the same bytes read by a plain summing loop on the same threads (the machine's read
// bandwidth right now).
// Usage: attn_bench N_THREADS DEPTH K_TYPE V_TYPE [n_layer n_head n_kv_head head_dim reps n_tok]
//   types by name: F32 F16 Q8_0 Q4_0; n_tok > 1 (prefill): the attention of the last n_tok
//   positions up to DEPTH (a long prompt's last chunk), the times then of all n_tok. Prints one line:
//   isa k v depth threads us_per_token us_per_layer bytes_per_token GB/s cpu_us_per_token read_GB/s
//   GFLOP/s fma_GFLOP/s
// (the fastest of the repetitions; cpu_us_per_token: the process CPU time, all threads, per token:
// on a shared machine the wall time of a run includes time the threads waited for a core;
// read_GB/s: the N_THREADS threads summing the caches' 64-bit words, the read roof for as many;
// GFLOP/s: the attention's 4 flops per query head, key and element (score and value FMAs) over
// the wall time; fma_GFLOP/s: one thread's float FMA rate (the compute roof per core; x86 only,
// else 0).)
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ops.h"
#include "threadpool.h"

using namespace qc;

#if defined(__x86_64__)
// One thread's float FMA rate in GFLOP/s: 12 independent chains (enough to cover the FMA latency
// on both pipes) of W-lane vectors, 2 flops per lane; inlined into callers built for that width.
template <typename V, int W>
__attribute__((always_inline)) inline double fma_rate() {
  constexpr int kChains = 12;
  constexpr long kIters = 20000000;
  V a[kChains], b, c;
  for (int l = 0; l < W; ++l) b[l] = 0.999999f, c[l] = 1e-7f;
  for (int i = 0; i < kChains; ++i)
    for (int l = 0; l < W; ++l) a[i][l] = 1.0f + i;
  const auto t0 = std::chrono::steady_clock::now();
  for (long it = 0; it < kIters; ++it) _Pragma("GCC unroll 16") for (int i = 0; i < kChains; ++i) a[i] = a[i] * b + c;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float sink = 0;
  for (int i = 0; i < kChains; ++i) sink = sink + a[i][0];
  return 2.0 * W * kChains * kIters / s / 1e9;
}
typedef float f32x16 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));
__attribute__((target("avx512f,fma"))) static double fma_rate_512() { return fma_rate<f32x16, 16>(); }
__attribute__((target("avx2,fma"))) static double fma_rate_256() { return fma_rate<f32x8, 8>(); }
#endif

// The FMA rate of the kernel path's vector width (avx512* paths: zmm; avx2, avxvnni*: ymm).
static double fma_gflops(const std::string& isa) {
#if defined(__x86_64__)
  if (isa.rfind("avx512", 0) == 0) return fma_rate_512();
  if (isa.rfind("avx", 0) == 0) return fma_rate_256();
#endif
  (void)isa;
  return 0.0;
}

static int32_t type_of(const std::string& s) {
  for (int32_t t : {GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q4_0})
    if (s == type_info(t).name) return t;
  std::fprintf(stderr, "unknown cache type %s (F32, F16, Q8_0, Q4_0)\n", s.c_str());
  std::exit(2);
}

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s N_THREADS DEPTH K_TYPE V_TYPE [n_layer n_head n_kv_head head_dim reps n_tok]\n", argv[0]);
    return 2;
  }
  const int n_threads = std::atoi(argv[1]);
  const int64_t depth = std::atoll(argv[2]);
  const KvTypes kv{type_of(argv[3]), type_of(argv[4])};
  const int n_layer = argc > 5 ? std::atoi(argv[5]) : 24, n_head = argc > 6 ? std::atoi(argv[6]) : 14;
  const int n_kv_head = argc > 7 ? std::atoi(argv[7]) : 2, head_dim = argc > 8 ? std::atoi(argv[8]) : 64;
  const int reps = argc > 9 ? std::atoi(argv[9]) : 5;
  const int n_tok = argc > 10 ? std::atoi(argv[10]) : 1;
  const Kernels& K = kernels();
  const size_t kb = kv_row_bytes(kv.k, head_dim), vb = kv_row_bytes(kv.v, head_dim);
  const size_t rows = (size_t)n_kv_head * depth;

  // one layer's rows from random floats, copied to every layer
  std::mt19937 g(1);
  std::normal_distribution<float> nd;
  std::vector<float> x(head_dim);
  std::vector<uint8_t> k((size_t)n_layer * rows * kb), v((size_t)n_layer * rows * vb);
  for (size_t r = 0; r < rows; ++r) {
    for (auto& e : x) e = nd(g);
    kv_store_row(K, kv.k, x.data(), k.data() + r * kb, head_dim);
    for (auto& e : x) e = nd(g);
    kv_store_row(K, kv.v, x.data(), v.data() + r * vb, head_dim);
  }
  for (int l = 1; l < n_layer; ++l) {
    std::memcpy(k.data() + l * rows * kb, k.data(), rows * kb);
    std::memcpy(v.data() + l * rows * vb, v.data(), rows * vb);
  }
  std::vector<float> q((size_t)n_tok * n_head * head_dim), out(q.size());
  for (auto& e : q) e = nd(g);
  std::vector<float> scratch(attention_scratch_floats(n_threads, n_head, n_kv_head, head_dim, depth));
  ThreadPool pool(n_threads);

  std::vector<double> times, cpu;
  for (int r = 0; r < reps + 1; ++r) {  // the first pass warms up (page faults, thread start)
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    for (int l = 0; l < n_layer; ++l)
      attention(pool, K, out.data(), q.data(), k.data() + l * rows * kb, v.data() + l * rows * vb, kv, n_tok, depth - n_tok,
                n_head, n_kv_head, head_dim, depth, scratch.data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r) times.push_back(s), cpu.push_back((double)(std::clock() - c0) / CLOCKS_PER_SEC);
  }
  double read_s = 1e30;
  std::vector<uint64_t> sums(n_threads);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.run([&](int ith, int nth) {  // each thread its share of each buffer's words
      uint64_t a[8] = {};
      for (const std::vector<uint8_t>* buf : {&k, &v}) {
        const uint64_t* w = reinterpret_cast<const uint64_t*>(buf->data());
        const size_t n8 = buf->size() / 64, i0 = n8 * ith / nth * 8, i1 = n8 * (ith + 1) / nth * 8;
        for (size_t i = i0; i < i1; i += 8)
          for (int j = 0; j < 8; ++j) a[j] += w[i + j];
      }
      for (uint64_t x : a) sums[ith] += x;
    });
    read_s = std::min(read_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  uint64_t sink = 0;
  for (uint64_t x : sums) sink += x;
  std::sort(times.begin(), times.end());
  std::sort(cpu.begin(), cpu.end());
  const double t = times[0];  // the fastest: the machine may be shared
  const double bytes = (double)n_layer * rows * (kb + vb);
  // score and value FMAs of the n_tok tokens, token t seeing depth - n_tok + t + 1 keys
  const double flops = 4.0 * n_layer * n_head * head_dim * ((double)n_tok * depth - (double)n_tok * (n_tok - 1) / 2);
  std::printf("%s %s %s %lld %d %.1f %.2f %.0f %.2f %.1f %.2f %.1f %.1f\n", K.isa, argv[3], argv[4], (long long)depth,
              n_threads, t * 1e6, t * 1e6 / n_layer, bytes, bytes / t / 1e9, cpu[0] * 1e6,
              (double)(k.size() + v.size()) / read_s / 1e9, flops / t / 1e9, fma_gflops(K.isa));
  return sink == 42 ? 1 : 0;  // the sum is used: the reading loop cannot be dropped
}
