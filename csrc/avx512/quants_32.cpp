// AVX-512 VNNI dot products of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 weights against their 8-bit
// activations.
//
// Four blocks per iteration: two 512-bit vectors of two blocks each; vpdpbusd makes each block's
// 32 byte products into 8 int32 lanes in one instruction. The four block scale products are
// converted together (one vcvtph2ps per side) and spread over the lanes by a permute; the
// float sums are accumulated with FMA and summed horizontally once. A remainder of 1..3 blocks
// (rows whose length is not a multiple of 128) goes through the same code at 256 bits. Q8_0
// runs entirely at 256 bits (see Q8_0Dot).
#include "simd512.h"
#include "../x86/min_dot.h"

namespace qc {
namespace avx512 {
namespace {

// Q4_0/Q4_1 nibbles of two blocks (16 bytes each at q0, q1) as unsigned bytes in element order:
// [block 0 values 0..15, 16..31, block 1 values 0..15, 16..31].
static inline __m512i nibbles_2x32(const uint8_t* q0, const uint8_t* q1) {
  const __m512i both = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q0)))),
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1))), 1);
  // the second copy of each block's bytes gives its high nibbles
  const __m512i shifted = _mm512_srlv_epi64(both, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
  return _mm512_and_si512(shifted, _mm512_set1_epi8(0x0f));
}

// One block's nibbles (16 bytes) as 32 unsigned bytes in element order.
static inline __m256i nibbles_32(const uint8_t* q) { return x86::unpack_nibbles_32(q); }

// Per weight type: pair() gives the int32 lanes of two blocks' integer dot products (8 lanes per
// block), one() those of one block; kMin: the type has a min, whose term m * s is added apart.
struct Q4_0Dot {
  typedef block_q4_0 W;
  typedef block_q8_0 A;
  static constexpr bool kMin = false;
  // sum (q - 8) a = sum q a - sum 8 a
  QC_VNNI static __m512i pair(const W* x, const A* y) {
    const __m512i a = load_2x32(y[0].qs, y[1].qs);
    const __m512i z = _mm512_setzero_si512();
    return _mm512_sub_epi32(_mm512_dpbusd_epi32(z, nibbles_2x32(x[0].qs, x[1].qs), a),
                            _mm512_dpbusd_epi32(z, _mm512_set1_epi8(8), a));
  }
  QC_VNNI static __m256i one(const W* x, const A* y) {
    const __m256i a = load256(y->qs);
    const __m256i z = _mm256_setzero_si256();
    return _mm256_sub_epi32(_mm256_dpbusd_epi32(z, nibbles_32(x->qs), a), _mm256_dpbusd_epi32(z, _mm256_set1_epi8(8), a));
  }
};

struct Q4_1Dot {
  typedef block_q4_1 W;
  typedef block_q8_1 A;
  static constexpr bool kMin = true;
  QC_VNNI static __m512i pair(const W* x, const A* y) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), nibbles_2x32(x[0].qs, x[1].qs), load_2x32(y[0].qs, y[1].qs));
  }
  QC_VNNI static __m256i one(const W* x, const A* y) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles_32(x->qs), load256(y->qs));
  }
};

struct Q8_0Dot {
  typedef block_q8_0 W;
  typedef block_q8_0 A;
  static constexpr bool kMin = false;
  // vpdpbusd wants one unsigned side: |w| there, the signs of w moved onto a (vpsignb; a is
  // never -128). Only one(): at 512 bits, without vpsignb, this took two vpdpbusd per block
  // and measured slower than AVX2, so Q8_0 goes through the 256-bit loop.
  QC_VNNI static __m256i one(const W* x, const A* y) {
    const __m256i w = load256(x->qs), a = load256(y->qs);
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
  }
};

// Q5_0/Q5_1: the 5th bits of two blocks (qh of each, little-endian u32) as a byte mask in the
// element order of nibbles_2x32.
static inline __mmask64 fifth_bits_2x32(const uint8_t* qh0, const uint8_t* qh1) {
  uint32_t h0, h1;
  std::memcpy(&h0, qh0, 4);
  std::memcpy(&h1, qh1, 4);
  return (__mmask64)h0 | ((__mmask64)h1 << 32);
}

struct Q5_0Dot {
  typedef block_q5_0 W;
  typedef block_q8_0 A;
  static constexpr bool kMin = false;
  // u = nibble + 16 * bit in 0..31; sum (u - 16) a = sum u a - sum 16 a
  QC_VNNI static __m512i pair(const W* x, const A* y) {
    const __m512i a = load_2x32(y[0].qs, y[1].qs);
    const __m512i q = nibbles_2x32(x[0].qs, x[1].qs), sixteen = _mm512_set1_epi8(16);
    const __m512i u = _mm512_mask_add_epi8(q, fifth_bits_2x32(x[0].qh, x[1].qh), q, sixteen);
    const __m512i z = _mm512_setzero_si512();
    return _mm512_sub_epi32(_mm512_dpbusd_epi32(z, u, a), _mm512_dpbusd_epi32(z, sixteen, a));
  }
  QC_VNNI static __m256i one(const W* x, const A* y) {
    const __m256i a = load256(y->qs);
    const __m256i u = _mm256_or_si256(nibbles_32(x->qs), _mm256_and_si256(x86::bits_to_bytes_32(x->qh), _mm256_set1_epi8(16)));
    const __m256i z = _mm256_setzero_si256();
    return _mm256_sub_epi32(_mm256_dpbusd_epi32(z, u, a), _mm256_dpbusd_epi32(z, _mm256_set1_epi8(16), a));
  }
};

struct Q5_1Dot {
  typedef block_q5_1 W;
  typedef block_q8_1 A;
  static constexpr bool kMin = true;
  QC_VNNI static __m512i pair(const W* x, const A* y) {
    const __m512i q = nibbles_2x32(x[0].qs, x[1].qs);
    const __m512i u = _mm512_mask_add_epi8(q, fifth_bits_2x32(x[0].qh, x[1].qh), q, _mm512_set1_epi8(16));
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, load_2x32(y[0].qs, y[1].qs));
  }
  QC_VNNI static __m256i one(const W* x, const A* y) {
    const __m256i u = _mm256_or_si256(nibbles_32(x->qs), _mm256_and_si256(x86::bits_to_bytes_32(x->qh), _mm256_set1_epi8(16)));
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, load256(y->qs));
  }
};

// The min term m * s of the blocks with a min (Q4_1 weights with Q8_1 activations).
template <typename D>
static inline __m128 min_terms4(const typename D::W* x, const typename D::A* y) {
  return _mm_mul_ps(load4_h(&x->m, sizeof(typename D::W)), load4_h(&y->s, sizeof(typename D::A)));
}

// vec_dot_32 of the types with a min (Q4_1, Q5_1): each block's exact integer dot (four at a
// time), then the float sums in the order the prefill tile uses too (x86/min_dot.h).
template <typename D>
QC_VNNI float vec_dot_32_min(int64_t nb, const typename D::W* x, const typename D::A* y) {
  alignas(16) int32_t isum[x86::kMinDotSegment];
  float total = 0.0f;
  for (int64_t s0 = 0; s0 < nb; s0 += x86::kMinDotSegment) {
    const int ns = nb - s0 < x86::kMinDotSegment ? (int)(nb - s0) : x86::kMinDotSegment;
    int b = 0;
    for (; b + 4 <= ns; b += 4) {
      const __m512i p01 = D::pair(x + s0 + b, y + s0 + b), p23 = D::pair(x + s0 + b + 2, y + s0 + b + 2);
      // lanes 0-7 of a pair: its first block, 8-15: its second; three hadds and a fold of the
      // halves leave one int32 per block
      const __m256i h = _mm256_hadd_epi32(
          _mm256_hadd_epi32(_mm512_castsi512_si256(p01), _mm512_extracti64x4_epi64(p01, 1)),
          _mm256_hadd_epi32(_mm512_castsi512_si256(p23), _mm512_extracti64x4_epi64(p23, 1)));
      _mm_store_si128(reinterpret_cast<__m128i*>(isum + b),
                      _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
    }
    for (; b < ns; ++b) isum[b] = x86::hsum_epi32(D::one(x + s0 + b, y + s0 + b));
    total = total + x86::min_dot_segment(isum, x + s0, y + s0, ns);
  }
  return total;
}

// w (n / 32 blocks of D::W) . a (n / 32 blocks of D::A)
template <typename D>
QC_VNNI float vec_dot_32(int64_t n, const void* vw, const void* va) {
  const typename D::W* x = static_cast<const typename D::W*>(vw);
  const typename D::A* y = static_cast<const typename D::A*>(va);
  const int64_t nb = n / 32;
  if constexpr (D::kMin) return vec_dot_32_min<D>(nb, x, y);
  const __m512i lanes01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i lanes23 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m128 acc_min = _mm_setzero_ps();
  int64_t i = 0;
  for (; i + 4 <= nb; i += 4) {
    const __m512 d = _mm512_castps128_ps512(
        _mm_mul_ps(load4_h(&x[i].d, sizeof(typename D::W)), load4_h(&y[i].d, sizeof(typename D::A))));
    const __m512i p01 = D::pair(x + i, y + i), p23 = D::pair(x + i + 2, y + i + 2);
    acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(lanes01, d), _mm512_cvtepi32_ps(p01), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(lanes23, d), _mm512_cvtepi32_ps(p23), acc1);
    if constexpr (D::kMin) acc_min = _mm_add_ps(acc_min, min_terms4<D>(x + i, y + i));
  }
  __m256 acc_tail = _mm256_setzero_ps();
  float min_tail = 0.0f;
  for (; i < nb; ++i) {
    const float d = h2f(x[i].d) * h2f(y[i].d);
    acc_tail = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(D::one(x + i, y + i)), acc_tail);
    if constexpr (D::kMin) min_tail += h2f(x[i].m) * h2f(y[i].s);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + hsum_ps(acc_tail);
  if constexpr (D::kMin) s += hsum128_ps(acc_min) + min_tail;
  return s;
}

// The same at 256 bits, one block per vector (D::one only), for the types whose pair() costs
// more than two one() calls.
template <typename D>
QC_VNNI float vec_dot_32_ymm(int64_t n, const void* vw, const void* va) {
  const typename D::W* x = static_cast<const typename D::W*>(vw);
  const typename D::A* y = static_cast<const typename D::A*>(va);
  const int64_t nb = n / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 4 <= nb; i += 4) {
    const __m128 d = _mm_mul_ps(load4_h(&x[i].d, sizeof(typename D::W)), load4_h(&y[i].d, sizeof(typename D::A)));
    acc0 = _mm256_fmadd_ps(x86::lane_ps(d, 0), _mm256_cvtepi32_ps(D::one(x + i, y + i)), acc0);
    acc1 = _mm256_fmadd_ps(x86::lane_ps(d, 1), _mm256_cvtepi32_ps(D::one(x + i + 1, y + i + 1)), acc1);
    acc0 = _mm256_fmadd_ps(x86::lane_ps(d, 2), _mm256_cvtepi32_ps(D::one(x + i + 2, y + i + 2)), acc0);
    acc1 = _mm256_fmadd_ps(x86::lane_ps(d, 3), _mm256_cvtepi32_ps(D::one(x + i + 3, y + i + 3)), acc1);
  }
  for (; i < nb; ++i)
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x[i].d) * h2f(y[i].d)), _mm256_cvtepi32_ps(D::one(x + i, y + i)), acc0);
  return hsum_ps(_mm256_add_ps(acc0, acc1));
}

}  // namespace

// the vec_dots the table (table.cpp) names: one instance of the forms above per type
QC_VNNI float vec_dot_q4_0(int64_t n, const void* w, const void* a) { return vec_dot_32<Q4_0Dot>(n, w, a); }
QC_VNNI float vec_dot_q4_1(int64_t n, const void* w, const void* a) { return vec_dot_32<Q4_1Dot>(n, w, a); }
QC_VNNI float vec_dot_q5_0(int64_t n, const void* w, const void* a) { return vec_dot_32<Q5_0Dot>(n, w, a); }
QC_VNNI float vec_dot_q5_1(int64_t n, const void* w, const void* a) { return vec_dot_32<Q5_1Dot>(n, w, a); }
QC_VNNI float vec_dot_q8_0(int64_t n, const void* w, const void* a) { return vec_dot_32_ymm<Q8_0Dot>(n, w, a); }

}  // namespace avx512
}  // namespace qc
