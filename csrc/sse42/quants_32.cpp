// SSE4.2 dot products of the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against their
// 8-bit activation formats, the float weight types (F32, F16, BF16) against float activations,
// and the Q8_0 / Q8_1 activation quantizers (bytes identical to the scalar ones: same float
// operations, round to nearest even by cvtps2dq under the default rounding mode).
//
// Each block's integer dot product is exact (pmaddubsw on two 16-byte halves, pmaddwd); four
// blocks per iteration have their int32 lanes reduced together by two phaddd into one vector
// (lane j = block j), converted once and multiplied by the four scale products (one software
// f16 conversion per side for the four blocks: these CPUs have no F16C).
#include "simd.h"

namespace qc {
namespace sse42 {
namespace {

// ---- activation quantizers ---------------------------------------------------------------

// One block of 32 floats x -> 32 int8 at qs, rounded to nearest even; returns the scale d
// (before rounding to f16) and, through sum, the sum of the 32 quantized values.
static inline float quantize_block_32(const float* x, int8_t* qs, int32_t* sum) {
  __m128 v[8];
  __m128 m = _mm_setzero_ps();
  for (int j = 0; j < 8; ++j) {
    v[j] = _mm_loadu_ps(x + 4 * j);
    m = _mm_max_ps(m, abs_ps(v[j]));
  }
  const float d = hmax_ps(m) / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m128 s = _mm_set1_ps(id);
  __m128i q[8];
  for (int j = 0; j < 8; ++j) q[j] = _mm_cvtps_epi32(_mm_mul_ps(v[j], s));
  if (sum) {
    const __m128i t = _mm_add_epi32(_mm_add_epi32(_mm_add_epi32(q[0], q[1]), _mm_add_epi32(q[2], q[3])),
                                    _mm_add_epi32(_mm_add_epi32(q[4], q[5]), _mm_add_epi32(q[6], q[7])));
    *sum = hsum_epi32(t);
  }
  for (int h = 0; h < 2; ++h) {
    const __m128i w0 = _mm_packs_epi32(q[4 * h], q[4 * h + 1]), w1 = _mm_packs_epi32(q[4 * h + 2], q[4 * h + 3]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 16 * h), _mm_packs_epi16(w0, w1));
  }
  return d;
}

}  // namespace

// y (n / 32 blocks of block_q8_0) = Q8_0(x (n))
void quantize_row_q8_0(const float* x, void* vy, int64_t n) {
  block_q8_0* y = static_cast<block_q8_0*>(vy);
  for (int64_t i = 0; i < n / QK8_0; ++i) y[i].d = fp32_to_fp16(quantize_block_32(x + i * QK8_0, y[i].qs, nullptr));
}

// y (n / 32 blocks of block_q8_1) = Q8_1(x (n)): Q8_0 plus s = d * sum(q) for the weight min terms
void quantize_row_q8_1(const float* x, void* vy, int64_t n) {
  block_q8_1* y = static_cast<block_q8_1*>(vy);
  for (int64_t i = 0; i < n / QK8_1; ++i) {
    int32_t sum = 0;
    const float d = quantize_block_32(x + i * QK8_1, y[i].qs, &sum);
    y[i].d = fp32_to_fp16(d);
    y[i].s = fp32_to_fp16(d * (float)sum);
  }
}

namespace {

// ---- float weights -----------------------------------------------------------------------

// sum over i < n (a multiple of 8) of load(i) * a: load(i, &lo, &hi) gives weights i..i+7 as
// floats; 4 accumulators to hide the add latency (no FMA on these CPUs).
template <typename Load>
static inline float dot_float(int64_t n, const float* a, Load load) {
  __m128 s0 = _mm_setzero_ps(), s1 = _mm_setzero_ps(), s2 = _mm_setzero_ps(), s3 = _mm_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128 w0, w1, w2, w3;
    load(i, &w0, &w1);
    load(i + 8, &w2, &w3);
    s0 = _mm_add_ps(s0, _mm_mul_ps(w0, _mm_loadu_ps(a + i)));
    s1 = _mm_add_ps(s1, _mm_mul_ps(w1, _mm_loadu_ps(a + i + 4)));
    s2 = _mm_add_ps(s2, _mm_mul_ps(w2, _mm_loadu_ps(a + i + 8)));
    s3 = _mm_add_ps(s3, _mm_mul_ps(w3, _mm_loadu_ps(a + i + 12)));
  }
  for (; i + 8 <= n; i += 8) {
    __m128 w0, w1;
    load(i, &w0, &w1);
    s0 = _mm_add_ps(s0, _mm_mul_ps(w0, _mm_loadu_ps(a + i)));
    s1 = _mm_add_ps(s1, _mm_mul_ps(w1, _mm_loadu_ps(a + i + 4)));
  }
  return hsum_ps(_mm_add_ps(_mm_add_ps(s0, s1), _mm_add_ps(s2, s3)));
}

}  // namespace

// w (n floats) . a (n floats)
float vec_dot_f32(int64_t n, const void* vw, const void* va) {
  const float* w = static_cast<const float*>(vw);
  const float* a = static_cast<const float*>(va);
  const int64_t n8 = n & ~int64_t(7);
  float s = dot_float(n8, a, [w](int64_t i, __m128* lo, __m128* hi) {
    *lo = _mm_loadu_ps(w + i);
    *hi = _mm_loadu_ps(w + i + 4);
  });
  for (int64_t i = n8; i < n; ++i) s += w[i] * a[i];
  return s;
}

// w (n binary16) . a (n floats)
float vec_dot_f16(int64_t n, const void* vw, const void* va) {
  const half_t* w = static_cast<const half_t*>(vw);
  const float* a = static_cast<const float*>(va);
  const int64_t n8 = n & ~int64_t(7);
  float s = dot_float(n8, a, [w](int64_t i, __m128* lo, __m128* hi) { h2f_8(w + i, lo, hi); });
  for (int64_t i = n8; i < n; ++i) s += fp16_to_fp32(w[i]) * a[i];
  return s;
}

// w (n bfloat16) . a (n floats)
float vec_dot_bf16(int64_t n, const void* vw, const void* va) {
  const bf16_t* w = static_cast<const bf16_t*>(vw);
  const float* a = static_cast<const float*>(va);
  const int64_t n8 = n & ~int64_t(7);
  float s = dot_float(n8, a, [w](int64_t i, __m128* lo, __m128* hi) {
    // bf16 is the top half of a float: interleave zero words below each value
    const __m128i v = load128(w + i);
    *lo = _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), v));
    *hi = _mm_castsi128_ps(_mm_unpackhi_epi16(_mm_setzero_si128(), v));
  });
  for (int64_t i = n8; i < n; ++i) s += bf16_to_fp32(w[i]) * a[i];
  return s;
}

namespace {

// ---- 32-element block weights ------------------------------------------------------------

// The loop shared by the block types W (weights) and A (activations), both starting with their
// f16 scale d: block_dot(i) returns 4 int32 lanes whose sum is block i's exact integer dot
// product. For the types with a min (Q4_1, Q5_1: kMin) the block term m * s, outside the integer
// dot, is accumulated four blocks at a time too.
template <bool kMin, typename W, typename A, typename BlockDot>
static inline float dot_blocks(int64_t nb, const W* x, const A* y, BlockDot block_dot) {
  __m128 acc = _mm_setzero_ps(), acc_min = _mm_setzero_ps();
  int64_t i = 0;
  for (; i + 4 <= nb; i += 4) {
    const __m128 d = _mm_mul_ps(load4_h(&x[i].d, sizeof(W)), load4_h(&y[i].d, sizeof(A)));
    const __m128i p = hsum4_epi32(block_dot(i), block_dot(i + 1), block_dot(i + 2), block_dot(i + 3));
    acc = _mm_add_ps(acc, _mm_mul_ps(d, _mm_cvtepi32_ps(p)));
    if constexpr (kMin) acc_min = _mm_add_ps(acc_min, _mm_mul_ps(load4_h(&x[i].m, sizeof(W)), load4_h(&y[i].s, sizeof(A))));
  }
  float s = hsum_ps(acc);
  if constexpr (kMin) s += hsum_ps(acc_min);
  for (; i < nb; ++i) {
    s += fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d) * (float)hsum_epi32(block_dot(i));
    if constexpr (kMin) s += fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
  }
  return s;
}

// 16 bytes q (element j in the low nibble of byte j, j + 16 in the high one) -> the unsigned
// values of elements 0..15 (lo) and 16..31 (hi).
static inline void unpack_nibbles(const uint8_t* q, __m128i* lo, __m128i* hi) {
  const __m128i x = load128(q), m = _mm_set1_epi8(0x0f);
  *lo = _mm_and_si128(x, m);
  *hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
}

// 4 int32 lanes summing to the dot of signed lo/hi (elements 0..15, 16..31) with a (32 int8);
// |pair sums| <= 2 * 16 * 127, so the two halves are added in int16 before pmaddwd.
static inline __m128i dot_signed_small(__m128i lo, __m128i hi, const int8_t* a) {
  const __m128i p = _mm_add_epi16(pairs_i8i8(lo, load128(a)), pairs_i8i8(hi, load128(a + 16)));
  return _mm_madd_epi16(p, _mm_set1_epi16(1));
}

// The same for unsigned lo/hi <= 31 (pair sums <= 2 * 31 * 127, two of them fit int16).
static inline __m128i dot_unsigned_small(__m128i lo, __m128i hi, const int8_t* a) {
  const __m128i p = _mm_add_epi16(_mm_maddubs_epi16(lo, load128(a)), _mm_maddubs_epi16(hi, load128(a + 16)));
  return _mm_madd_epi16(p, _mm_set1_epi16(1));
}

}  // namespace

// w (n / 32 blocks of block_q4_0) . a (n / 32 blocks of block_q8_0)
float vec_dot_q4_0(int64_t n, const void* vw, const void* va) {
  const block_q4_0* x = static_cast<const block_q4_0*>(vw);
  const block_q8_0* y = static_cast<const block_q8_0*>(va);
  return dot_blocks<false>(n / QK4_0, x, y, [x, y](int64_t i) {
    __m128i lo, hi;
    unpack_nibbles(x[i].qs, &lo, &hi);
    const __m128i eight = _mm_set1_epi8(8);
    return dot_signed_small(_mm_sub_epi8(lo, eight), _mm_sub_epi8(hi, eight), y[i].qs);
  });
}

// w (n / 32 blocks of block_q4_1) . a (n / 32 blocks of block_q8_1)
float vec_dot_q4_1(int64_t n, const void* vw, const void* va) {
  const block_q4_1* x = static_cast<const block_q4_1*>(vw);
  const block_q8_1* y = static_cast<const block_q8_1*>(va);
  return dot_blocks<true>(n / QK4_1, x, y, [x, y](int64_t i) {
    __m128i lo, hi;
    unpack_nibbles(x[i].qs, &lo, &hi);
    return dot_unsigned_small(lo, hi, y[i].qs);
  });
}

namespace {

// The 5th bits of a Q5 block (qh, 4 bytes) as 0xff/0x00 bytes for elements 0..15 and 16..31.
static inline void fifth_bits(const uint8_t* qh, __m128i* lo, __m128i* hi) {
  uint32_t w;
  std::memcpy(&w, qh, 4);
  *lo = bits_to_bytes_16(w, 0);
  *hi = bits_to_bytes_16(w, 2);
}

}  // namespace

// w (n / 32 blocks of block_q5_0) . a (n / 32 blocks of block_q8_0)
float vec_dot_q5_0(int64_t n, const void* vw, const void* va) {
  const block_q5_0* x = static_cast<const block_q5_0*>(vw);
  const block_q8_0* y = static_cast<const block_q8_0*>(va);
  return dot_blocks<false>(n / QK5_0, x, y, [x, y](int64_t i) {
    __m128i lo, hi, blo, bhi;
    unpack_nibbles(x[i].qs, &lo, &hi);
    fifth_bits(x[i].qh, &blo, &bhi);
    // q - 16 = nibble where the 5th bit is set, nibble - 16 (high nibble 0xf0) where it is clear
    const __m128i f0 = _mm_set1_epi8((char)0xf0);
    return dot_signed_small(_mm_or_si128(lo, _mm_andnot_si128(blo, f0)), _mm_or_si128(hi, _mm_andnot_si128(bhi, f0)),
                            y[i].qs);
  });
}

// w (n / 32 blocks of block_q5_1) . a (n / 32 blocks of block_q8_1)
float vec_dot_q5_1(int64_t n, const void* vw, const void* va) {
  const block_q5_1* x = static_cast<const block_q5_1*>(vw);
  const block_q8_1* y = static_cast<const block_q8_1*>(va);
  return dot_blocks<true>(n / QK5_1, x, y, [x, y](int64_t i) {
    __m128i lo, hi, blo, bhi;
    unpack_nibbles(x[i].qs, &lo, &hi);
    fifth_bits(x[i].qh, &blo, &bhi);
    const __m128i b4 = _mm_set1_epi8(0x10);
    return dot_unsigned_small(_mm_or_si128(lo, _mm_and_si128(blo, b4)), _mm_or_si128(hi, _mm_and_si128(bhi, b4)),
                              y[i].qs);
  });
}

// w (n / 32 blocks of block_q8_0) . a (n / 32 blocks of block_q8_0)
float vec_dot_q8_0(int64_t n, const void* vw, const void* va) {
  const block_q8_0* x = static_cast<const block_q8_0*>(vw);
  const block_q8_0* y = static_cast<const block_q8_0*>(va);
  return dot_blocks<false>(n / QK8_0, x, y, [x, y](int64_t i) {
    // pair sums up to 2 * 128 * 127: too large to add two in int16, so each goes to int32
    const __m128i ones = _mm_set1_epi16(1);
    const __m128i p0 = _mm_madd_epi16(pairs_i8i8(load128(x[i].qs), load128(y[i].qs)), ones);
    const __m128i p1 = _mm_madd_epi16(pairs_i8i8(load128(x[i].qs + 16), load128(y[i].qs + 16)), ones);
    return _mm_add_epi32(p0, p1);
  });
}

}  // namespace sse42
}  // namespace qc
