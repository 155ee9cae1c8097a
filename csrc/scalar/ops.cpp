// Scalar reference versions of the non-matmul kernels (contracts in kernels.h). Plain C++ with
// libm's exp; reductions accumulate in double so that these can serve as the oracle the SIMD
// versions are compared with.
#include <cmath>

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

// Element d of cache row p (f16 or f32 storage).
static inline float kv_at(const void* p, int64_t idx, bool f16) {
  return f16 ? fp16_to_fp32(static_cast<const half_t*>(p)[idx]) : static_cast<const float*>(p)[idx];
}

// out, q (n_q, head_dim); key/value row i at element i * kv_stride of k, v; scratch (n_q, n_keys)
void attn_group(float* out, const float* q, int n_q, const void* k, const void* v, int64_t n_keys, int64_t kv_stride,
                int head_dim, float scale, bool kv_f16, float* scratch) {
  for (int j = 0; j < n_q; ++j) {
    const float* qj = q + (int64_t)j * head_dim;
    float* s = scratch + (int64_t)j * n_keys;
    for (int64_t i = 0; i < n_keys; ++i) {
      double dot = 0.0;
      for (int d = 0; d < head_dim; ++d) dot += (double)qj[d] * kv_at(k, i * kv_stride + d, kv_f16);
      s[i] = (float)dot * scale;
    }
    softmax(s, n_keys);
    float* oj = out + (int64_t)j * head_dim;
    for (int d = 0; d < head_dim; ++d) oj[d] = 0.0f;
    for (int64_t i = 0; i < n_keys; ++i)
      for (int d = 0; d < head_dim; ++d) oj[d] += s[i] * kv_at(v, i * kv_stride + d, kv_f16);
  }
}

// y (n) = x rounded to binary16; NaN payloads are not kept (every NaN becomes a quiet NaN of its sign)
void fp32_to_fp16_row(const float* x, half_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

}  // namespace
}  // namespace scalar

void register_op_kernels_scalar(Kernels& k) {
  k.rmsnorm = scalar::rmsnorm;
  k.softmax = scalar::softmax;
  k.swiglu = scalar::swiglu;
  k.add = scalar::add;
  k.rope = scalar::rope;
  k.attn_group = scalar::attn_group;
  k.fp32_to_fp16_row = scalar::fp32_to_fp16_row;
}

}  // namespace qc
