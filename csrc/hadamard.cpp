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

namespace {

// (a, b) <- (a + b, a - b) on 4 values each, all loaded before any is stored, so that the
// compiler makes it one vector load, add, subtract and store each (no aliasing to rule out).
inline void butterfly4(float* a, float* b) {
  const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
  a[0] = a0 + b0, a[1] = a1 + b1, a[2] = a2 + b2, a[3] = a3 + b3;
  b[0] = a0 - b0, b[1] = a1 - b1, b[2] = a2 - b2, b[3] = a3 - b3;
}

}  // namespace

void hadamard_chunks(float* x, int64_t n_chunks, int n) {
  if (n < 4 || (n & (n - 1)) != 0) throw std::invalid_argument("hadamard: width " + std::to_string(n) + " is not a power of two >= 4");
  const float scale = 1.0f / std::sqrt((float)n);
  for (int64_t c = 0; c < n_chunks; ++c, x += n) {
    // spans 1 and 2 (within groups of 4) as one 4-point transform per group, scaled; then the
    // wider spans, 4 values at a time
    for (int i = 0; i < n; i += 4) {
      const float s0 = x[i] + x[i + 1], d0 = x[i] - x[i + 1], s1 = x[i + 2] + x[i + 3], d1 = x[i + 2] - x[i + 3];
      x[i] = (s0 + s1) * scale, x[i + 1] = (d0 + d1) * scale, x[i + 2] = (s0 - s1) * scale, x[i + 3] = (d0 - d1) * scale;
    }
    for (int h = 4; h < n; h *= 2)
      for (int i = 0; i < n; i += 2 * h)
        for (int j = i; j < i + h; j += 4) butterfly4(x + j, x + j + h);
  }
}

void hadamard_chunks(ThreadPool& pool, float* x, int64_t n_chunks, int n) {
  // up to 4096 values (a decode step's heads) on this thread: not worth a barrier
  share(pool, n_chunks, 1, 4096 / n + 1, [&](int64_t c0, int64_t c1) { hadamard_chunks(x + c0 * n, c1 - c0, n); });
}

}  // namespace qc
