// Scalar reference kernels for the float weight types (F32, F16, BF16) and the 32-element block
// types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): dequantization (bit for bit what gguf-py's
// gguf.quants.dequantize computes, in the same float32 operation order) and the dot products
// with the quantized activations (integer sums within a block, scales applied in float).
//
// No fused multiply-add here: `d * q + m` must round twice, as numpy does.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <cstring>

#include "quants.h"

namespace qc {
namespace scalar {

// ---- float types ------------------------------------------------------------------------

// x (n floats) -> y (n)
void dequantize_row_f32(const void* x, float* y, int64_t n) { std::memcpy(y, x, (size_t)n * sizeof(float)); }

// x (n halves) -> y (n)
void dequantize_row_f16(const void* x, float* y, int64_t n) {
  const half_t* h = static_cast<const half_t*>(x);
  for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(h[i]);
}

// x (n bfloat16) -> y (n)
void dequantize_row_bf16(const void* x, float* y, int64_t n) {
  const bf16_t* h = static_cast<const bf16_t*>(x);
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(h[i]);
}

// w (n floats) . a (n floats)
float vec_dot_f32(int64_t n, const void* vw, const void* va) {
  const float* w = static_cast<const float*>(vw);
  const float* a = static_cast<const float*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += w[i] * a[i];
  return sum;
}

// w (n halves) . a (n floats)
float vec_dot_f16(int64_t n, const void* vw, const void* va) {
  const half_t* w = static_cast<const half_t*>(vw);
  const float* a = static_cast<const float*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += fp16_to_fp32(w[i]) * a[i];
  return sum;
}

// w (n bfloat16) . a (n floats)
float vec_dot_bf16(int64_t n, const void* vw, const void* va) {
  const bf16_t* w = static_cast<const bf16_t*>(vw);
  const float* a = static_cast<const float*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += bf16_to_fp32(w[i]) * a[i];
  return sum;
}

// The decode forms of the float types (gemv_fn, gemv_rows_fn), the reference of the SIMD ones:
// y[r] = vec_dot of weight row r; gemv_rows takes up to 8 activation rows per pass over a weight
// row, each weight converted once for them and each row's sum in vec_dot's order, so every value
// is bit for bit the vec_dot (and gemv) of that activation row alone.
namespace {
// The element access of each float weight type (half_t and bf16_t are the same integer type).
struct F32W {
  static float elem(const void* w, int64_t i) { return static_cast<const float*>(w)[i]; }
};
struct F16W {
  static float elem(const void* w, int64_t i) { return fp16_to_fp32(static_cast<const half_t*>(w)[i]); }
};
struct BF16W {
  static float elem(const void* w, int64_t i) { return bf16_to_fp32(static_cast<const bf16_t*>(w)[i]); }
};

template <class W>
void gemv_rows_float(int64_t n, const void* vw, size_t wrb, int n_rows, const void* va, size_t arb, int n_a, float* y,
                     size_t ys) {
  constexpr int kRows = 8;
  const uint8_t* a = static_cast<const uint8_t*>(va);
  for (int r = 0; r < n_rows; ++r) {
    const void* w = static_cast<const uint8_t*>(vw) + r * wrb;
    for (int t0 = 0; t0 < n_a; t0 += kRows) {
      const int m = n_a - t0 < kRows ? n_a - t0 : kRows;
      const float* at[kRows];
      float sum[kRows];
      for (int t = 0; t < m; ++t) {
        at[t] = reinterpret_cast<const float*>(a + (size_t)(t0 + t) * arb);
        sum[t] = 0.0f;
      }
      for (int64_t i = 0; i < n; ++i) {
        const float wi = W::elem(w, i);
        for (int t = 0; t < m; ++t) sum[t] += wi * at[t][i];
      }
      for (int t = 0; t < m; ++t) y[(size_t)(t0 + t) * ys + r] = sum[t];
    }
  }
}
}  // namespace

#define QC_SCALAR_FLOAT_GEMV(t, T)                                                                              \
  void gemv_##t(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, float* y) {                  \
    gemv_rows_float<T>(n, w, wrb, n_rows, a, 0, 1, y, 0);                                                      \
  }                                                                                                            \
  void gemv_##t##_rows(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_a,   \
                       float* y, size_t ys) {                                                                  \
    gemv_rows_float<T>(n, w, wrb, n_rows, a, arb, n_a, y, ys);                                                 \
  }
QC_SCALAR_FLOAT_GEMV(f32, F32W) QC_SCALAR_FLOAT_GEMV(f16, F16W) QC_SCALAR_FLOAT_GEMV(bf16, BF16W)
#undef QC_SCALAR_FLOAT_GEMV

// ---- unpacking: one block -> its 32 integer quants --------------------------------------
// Element j of a 4-bit block is the low nibble of qs[j] for j < 16, the high nibble of
// qs[j - 16] otherwise; the 5-bit types add bit j of the little-endian u32 qh as bit 4.

static inline void unpack_nibbles(const uint8_t* qs, int q[32]) {
  for (int j = 0; j < 16; ++j) {
    q[j] = qs[j] & 0x0f;
    q[j + 16] = qs[j] >> 4;
  }
}

static inline void add_fifth_bits(const uint8_t* qh_bytes, int q[32]) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 32; ++j) q[j] |= (int)((qh >> j) & 1) << 4;
}

// ---- dequantization ----------------------------------------------------------------------
// x (n / 32 blocks) -> y (n)

void dequantize_row_q4_0(const void* x, float* y, int64_t n) {
  const block_q4_0* b = static_cast<const block_q4_0*>(x);
  for (int64_t i = 0; i < n / QK4_0; ++i, y += QK4_0) {
    int q[32];
    unpack_nibbles(b[i].qs, q);
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < 32; ++j) y[j] = d * (float)(q[j] - 8);
  }
}

void dequantize_row_q4_1(const void* x, float* y, int64_t n) {
  const block_q4_1* b = static_cast<const block_q4_1*>(x);
  for (int64_t i = 0; i < n / QK4_1; ++i, y += QK4_1) {
    int q[32];
    unpack_nibbles(b[i].qs, q);
    const float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
    for (int j = 0; j < 32; ++j) y[j] = d * (float)q[j] + m;
  }
}

void dequantize_row_q5_0(const void* x, float* y, int64_t n) {
  const block_q5_0* b = static_cast<const block_q5_0*>(x);
  for (int64_t i = 0; i < n / QK5_0; ++i, y += QK5_0) {
    int q[32];
    unpack_nibbles(b[i].qs, q);
    add_fifth_bits(b[i].qh, q);
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < 32; ++j) y[j] = d * (float)(q[j] - 16);
  }
}

void dequantize_row_q5_1(const void* x, float* y, int64_t n) {
  const block_q5_1* b = static_cast<const block_q5_1*>(x);
  for (int64_t i = 0; i < n / QK5_1; ++i, y += QK5_1) {
    int q[32];
    unpack_nibbles(b[i].qs, q);
    add_fifth_bits(b[i].qh, q);
    const float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
    for (int j = 0; j < 32; ++j) y[j] = d * (float)q[j] + m;
  }
}

void dequantize_row_q8_0(const void* x, float* y, int64_t n) {
  const block_q8_0* b = static_cast<const block_q8_0*>(x);
  for (int64_t i = 0; i < n / QK8_0; ++i, y += QK8_0) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < 32; ++j) y[j] = (float)b[i].qs[j] * d;
  }
}

// ---- dot products with the quantized activations -----------------------------------------
// w (n / 32 weight blocks) . a (n / 32 activation blocks). Per block: an exact int32 sum of
// q_w * q_a, then one float multiply by both scales.

static inline int32_t dot32(const int q[32], const int8_t* a) {
  int32_t s = 0;
  for (int j = 0; j < 32; ++j) s += q[j] * a[j];
  return s;
}

// Q4_0 weight (values d * (q - 8)) with Q8_0 activations.
float vec_dot_q4_0_q8_0(int64_t n, const void* vw, const void* va) {
  const block_q4_0* w = static_cast<const block_q4_0*>(vw);
  const block_q8_0* a = static_cast<const block_q8_0*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK4_0; ++i) {
    int q[32];
    unpack_nibbles(w[i].qs, q);
    for (int j = 0; j < 32; ++j) q[j] -= 8;
    sum += fp16_to_fp32(w[i].d) * fp16_to_fp32(a[i].d) * (float)dot32(q, a[i].qs);
  }
  return sum;
}

// Q4_1 weight (values d * q + m) with Q8_1 activations: sum(m * x) over a block is m * s.
float vec_dot_q4_1_q8_1(int64_t n, const void* vw, const void* va) {
  const block_q4_1* w = static_cast<const block_q4_1*>(vw);
  const block_q8_1* a = static_cast<const block_q8_1*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK4_1; ++i) {
    int q[32];
    unpack_nibbles(w[i].qs, q);
    sum += fp16_to_fp32(w[i].d) * fp16_to_fp32(a[i].d) * (float)dot32(q, a[i].qs) +
           fp16_to_fp32(w[i].m) * fp16_to_fp32(a[i].s);
  }
  return sum;
}

// Q5_0 weight (values d * (q - 16)) with Q8_0 activations.
float vec_dot_q5_0_q8_0(int64_t n, const void* vw, const void* va) {
  const block_q5_0* w = static_cast<const block_q5_0*>(vw);
  const block_q8_0* a = static_cast<const block_q8_0*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK5_0; ++i) {
    int q[32];
    unpack_nibbles(w[i].qs, q);
    add_fifth_bits(w[i].qh, q);
    for (int j = 0; j < 32; ++j) q[j] -= 16;
    sum += fp16_to_fp32(w[i].d) * fp16_to_fp32(a[i].d) * (float)dot32(q, a[i].qs);
  }
  return sum;
}

// Q5_1 weight (values d * q + m) with Q8_1 activations.
float vec_dot_q5_1_q8_1(int64_t n, const void* vw, const void* va) {
  const block_q5_1* w = static_cast<const block_q5_1*>(vw);
  const block_q8_1* a = static_cast<const block_q8_1*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK5_1; ++i) {
    int q[32];
    unpack_nibbles(w[i].qs, q);
    add_fifth_bits(w[i].qh, q);
    sum += fp16_to_fp32(w[i].d) * fp16_to_fp32(a[i].d) * (float)dot32(q, a[i].qs) +
           fp16_to_fp32(w[i].m) * fp16_to_fp32(a[i].s);
  }
  return sum;
}

// Q8_0 weight with Q8_0 activations.
float vec_dot_q8_0_q8_0(int64_t n, const void* vw, const void* va) {
  const block_q8_0* w = static_cast<const block_q8_0*>(vw);
  const block_q8_0* a = static_cast<const block_q8_0*>(va);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) s += w[i].qs[j] * a[i].qs[j];
    sum += fp16_to_fp32(w[i].d) * fp16_to_fp32(a[i].d) * (float)s;
  }
  return sum;
}

}  // namespace scalar
}  // namespace qc
