#include "hadamard.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "blocks.h"

namespace qc {

int kv_rotation(int32_t type, int head_dim, bool v) {
  if (type_info(type).block_elems <= 1 || head_dim <= 0) return 0;  // float types: no blocks to fit
  int n = 1;
  while (head_dim % (2 * n) == 0) n *= 2;  // the largest power of two dividing head_dim
  if (n < 32) return 0;
  return v ? std::min(n, 64) : n;
}

void hadamard_chunks(float* x, int64_t n_chunks, int n) {
  if (n < 4 || (n & (n - 1)) != 0) throw std::invalid_argument("hadamard: width " + std::to_string(n) + " is not a power of two >= 4");
  const float scale = 1.0f / std::sqrt((float)n);
  for (int64_t c = 0; c < n_chunks; ++c, x += n) {
    // the butterflies of spans 1 and 2 as one 4-point transform per group of 4 (twice as fast as
    // their loops), then the wider spans, whose loops over contiguous values the compiler vectorizes
    for (int i = 0; i < n; i += 4) {
      const float s0 = x[i] + x[i + 1], d0 = x[i] - x[i + 1], s1 = x[i + 2] + x[i + 3], d1 = x[i + 2] - x[i + 3];
      x[i] = s0 + s1, x[i + 1] = d0 + d1, x[i + 2] = s0 - s1, x[i + 3] = d0 - d1;
    }
    for (int h = 4; h < n; h *= 2)
      for (int i = 0; i < n; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const float a = x[j], b = x[j + h];
          x[j] = a + b, x[j + h] = a - b;
        }
    for (int j = 0; j < n; ++j) x[j] *= scale;
  }
}

void hadamard_chunks(ThreadPool& pool, float* x, int64_t n_chunks, int n) {
  if (n_chunks * n <= 4096) return hadamard_chunks(x, n_chunks, n);  // a decode step's heads: not worth a barrier
  pool.run([&](int ith, int nth) {
    int64_t c0, c1;
    split_range(n_chunks, ith, nth, &c0, &c1);
    hadamard_chunks(x + c0 * n, c1 - c0, n);
  });
}

}  // namespace qc
