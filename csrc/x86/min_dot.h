// The float summation order of the 32-element block types with a min (Q4_1, Q5_1: value d*q + m),
// shared by their prefill tile (gemm_x8, gemm_impl.h) and their decode rows (vec_dot,
// avx2/quants_32.cpp, avx512/quants_32.cpp), in every x86 compilation, so that both give bit-identical outputs. A token's
// logits then do not depend on whether a prefill or a decode step computed it (i.e. on the cache
// state), which reproducible output and speculative decoding need. With two orders the outputs
// differed in the last bits; through a network, where an activation can land on the other side
// of a quantization step, SmolLM2 Q4_1's logits differed by up to 0.5 on AVX2 and AVX-512.
//
// Per output (one weight row against one activation row): the blocks in segments of
// kMinDotSegment; in each segment, block b (counted from the segment's start, isum_b its exact
// integer dot) goes to accumulator j = b mod 4, in block order:
//   p_j = fma(float(isum_b) * d_w, d_a, p_j),   m_j = fma(m_w, s_a, m_j)   (all starting at 0);
// then y = y + (((p_0 + p_1) + (p_2 + p_3)) + ((m_0 + m_1) + (m_2 + m_3))), y starting at 0.
// Four independent sums: a decode row does each step for 4 blocks in one vector instruction.
#pragma once
#include "simd256.h"

namespace qc {
namespace x86 {

constexpr int kMinDotSegment = 32;

// (p_0 + p_1) + (p_2 + p_3) of the 4 lanes of v
static inline float min_dot_sum4(__m128 v) {
  alignas(16) float f[4];
  _mm_store_ps(f, v);
  return (f[0] + f[1]) + (f[2] + f[3]);
}

// The part of one segment of ns <= kMinDotSegment blocks (x: weights W, y: activations A, both
// with their f16 d; W has m, A has s), given the blocks' exact integer dots isum[0 .. ns-1].
template <typename W, typename A>
static inline float min_dot_segment(const int32_t* isum, const W* x, const A* y, int ns) {
  __m128 p = _mm_setzero_ps(), m = _mm_setzero_ps();  // lane j: accumulator j
  int i = 0;
  for (; i + 4 <= ns; i += 4) {
    const __m128 t = _mm_mul_ps(_mm_cvtepi32_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(isum + i))),
                                load4_h(&x[i].d, sizeof(W)));
    p = _mm_fmadd_ps(t, load4_h(&y[i].d, sizeof(A)), p);
    m = _mm_fmadd_ps(load4_h(&x[i].m, sizeof(W)), load4_h(&y[i].s, sizeof(A)), m);
  }
  if (i < ns) {  // 1..3 blocks left: the lanes past them add fma(0, 0, .), which changes nothing
    alignas(16) float t[4] = {0, 0, 0, 0}, da[4] = {0, 0, 0, 0}, mw[4] = {0, 0, 0, 0}, sa[4] = {0, 0, 0, 0};
    for (int j = 0; i + j < ns; ++j) {
      t[j] = (float)isum[i + j] * h2f(x[i + j].d);
      da[j] = h2f(y[i + j].d);
      mw[j] = h2f(x[i + j].m);
      sa[j] = h2f(y[i + j].s);
    }
    p = _mm_fmadd_ps(_mm_load_ps(t), _mm_load_ps(da), p);
    m = _mm_fmadd_ps(_mm_load_ps(mw), _mm_load_ps(sa), m);
  }
  return min_dot_sum4(p) + min_dot_sum4(m);
}

}  // namespace x86
}  // namespace qc
