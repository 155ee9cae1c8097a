// Scalar reference versions of the non-matmul kernels (contracts in kernels.h). Plain C++ with
// libm's exp; reductions accumulate in double so that these can serve as the oracle the SIMD
// versions are compared with.
#include <algorithm>
#include <cmath>

#include "../attn_groups.h"

#include "../kernels.h"

namespace qc {
namespace scalar {
namespace {

// y (n) = x / sqrt(mean(x^2) + eps) * w
void rmsnorm(float* y, const float* x, const float* w, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += (double)x[i] * x[i];
  const float r = (float)(1.0 / std::sqrt(ss / (double)n + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * r * w[i];
}

// x (n) = softmax(x); an all -inf row is left undefined (NaN), as in any softmax.
void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = (float)(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

// y (n) = gate * sigmoid(gate) * up
void swiglu(float* y, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// y (n) = a + b
void add(float* y, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

// x (n_head, head_dim) rotated in place; cos, sin (head_dim/2)
void rope(float* x, int n_head, int head_dim, const float* cos, const float* sin, bool neox) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_head; ++h) {
    float* xh = x + (int64_t)h * head_dim;
    for (int i = 0; i < half; ++i) {
      // neox pairs element i with i + half; the interleaved layout pairs 2i with 2i + 1
      float* a = neox ? xh + i : xh + 2 * i;
      float* b = neox ? xh + i + half : xh + 2 * i + 1;
      const float x0 = *a, x1 = *b;
      *a = x0 * cos[i] - x1 * sin[i];
      *b = x0 * sin[i] + x1 * cos[i];
    }
  }
}

// Element d of a cache row of type T, as float.
template <int32_t T>
static inline float kv_elem(const void* row, int d) {
  if constexpr (T == GGML_F32) {
    return static_cast<const float*>(row)[d];
  } else if constexpr (T == GGML_F16) {
    return fp16_to_fp32(static_cast<const half_t*>(row)[d]);
  } else if constexpr (T == GGML_Q8_0) {
    const block_q8_0& b = static_cast<const block_q8_0*>(row)[d / 32];
    return fp16_to_fp32(b.d) * (float)b.qs[d % 32];
  } else {
    static_assert(T == GGML_Q4_0, "cache types: F32, F16, Q8_0, Q4_0");
    const block_q4_0& b = static_cast<const block_q4_0*>(row)[d / 32];
    const int j = d % 32;
    return fp16_to_fp32(b.d) * (float)((j < 16 ? b.qs[j] & 15 : b.qs[j - 16] >> 4) - 8);
  }
}

// attn_fn (kernels.h) query by query in two passes over the keys: the largest score, then the
// exponentials and the weighted values, all in double; the state is rounded to float once per call.
// scratch: head_dim doubles (this query's acc).
template <int32_t KT, int32_t VT>
void attn(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v, size_t v_row_bytes,
          int64_t n_keys, int head_dim, float scale, float* m, float* l, float* acc, float* scratch) {
  double* a = reinterpret_cast<double*>(scratch);
  auto row = [](const void* base, size_t bytes, int64_t i) { return static_cast<const uint8_t*>(base) + i * bytes; };
  for (int j = 0; j < n_q; ++j) {
    const float* qj = q + (int64_t)j * head_dim;
    auto score = [&](int64_t i) {
      const void* ki = row(k, k_row_bytes, i);
      double dot = 0.0;
      for (int d = 0; d < head_dim; ++d) dot += (double)qj[d] * kv_elem<KT>(ki, d);
      return dot * scale;
    };
    double mx = m[j];
    for (int64_t i = 0; i < n_keys; ++i) mx = std::max(mx, score(i));
    const double c = std::exp((double)m[j] - mx);  // 0 before any key (m = -inf)
    double sum = (double)l[j] * c;
    float* aj = acc + (int64_t)j * head_dim;
    for (int d = 0; d < head_dim; ++d) a[d] = (double)aj[d] * c;
    for (int64_t i = 0; i < n_keys; ++i) {
      const double p = std::exp(score(i) - mx);
      sum += p;
      const void* vi = row(v, v_row_bytes, i);
      for (int d = 0; d < head_dim; ++d) a[d] += p * kv_elem<VT>(vi, d);
    }
    m[j] = (float)mx;
    l[j] = (float)sum;
    for (int d = 0; d < head_dim; ++d) aj[d] = (float)a[d];
  }
}

// y (n) = x rounded to binary16; NaN payloads are not kept (every NaN becomes a quiet NaN of its sign)
void fp32_to_fp16_row(const float* x, half_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

}  // namespace
}  // namespace scalar

#define QC_KERNEL_PREFIX "scalar::"

void register_op_kernels_scalar(Kernels& k) {
  k.rmsnorm = scalar::rmsnorm;
  k.softmax = scalar::softmax;
  k.swiglu = scalar::swiglu;
  k.add = scalar::add;
  k.rope = scalar::rope;
  using namespace scalar;
  QC_SET_ATTN_ALL(k);
  k.fp32_to_fp16_row = scalar::fp32_to_fp16_row;
}

}  // namespace qc
