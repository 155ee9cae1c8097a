// AVX-512 dot products of the float weight types (F32, F16, BF16) against float activations:
// 16 lanes per vector, four accumulators, and a masked load for the last n % 16 elements (so
// no scalar tail). These need only AVX-512 F/BW/VL, not VNNI. Registered where 512-bit operations
// are not split in halves: on Zen 4 their decode ran a quarter slower than the avx2 kernels, which
// that table keeps (bench/README.md, "Float weights on Zen 4").
#include "simd512.h"

namespace qc {
namespace avx512 {
namespace {

// sum over i < n of load(i .. i + 15, mask) * a, where load returns 16 weights as floats with
// the lanes outside `mask` zero.
template <typename Load>
static inline float dot_float(int64_t n, const float* a, Load load) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  const __mmask16 all = 0xffff;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(load(i, all), _mm512_loadu_ps(a + i), s0);
    s1 = _mm512_fmadd_ps(load(i + 16, all), _mm512_loadu_ps(a + i + 16), s1);
    s2 = _mm512_fmadd_ps(load(i + 32, all), _mm512_loadu_ps(a + i + 32), s2);
    s3 = _mm512_fmadd_ps(load(i + 48, all), _mm512_loadu_ps(a + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(load(i, all), _mm512_loadu_ps(a + i), s0);
  if (i < n) {
    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    s1 = _mm512_fmadd_ps(load(i, m), _mm512_maskz_loadu_ps(m, a + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

}  // namespace

// w (n floats) . a (n floats)
float vec_dot_f32(int64_t n, const void* vw, const void* va) {
  const float* w = static_cast<const float*>(vw);
  return dot_float(n, static_cast<const float*>(va),
                   [w](int64_t i, __mmask16 m) { return _mm512_maskz_loadu_ps(m, w + i); });
}

// w (n binary16) . a (n floats)
float vec_dot_f16(int64_t n, const void* vw, const void* va) {
  const half_t* w = static_cast<const half_t*>(vw);
  return dot_float(n, static_cast<const float*>(va),
                   [w](int64_t i, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + i)); });
}

// w (n bfloat16) . a (n floats)
float vec_dot_bf16(int64_t n, const void* vw, const void* va) {
  const bf16_t* w = static_cast<const bf16_t*>(vw);
  return dot_float(n, static_cast<const float*>(va), [w](int64_t i, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + i)), 16));
  });
}

}  // namespace avx512
}  // namespace qc
