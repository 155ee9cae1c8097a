// AVX2 dot products of the K-quants (Q2_K .. Q6_K, 256-element super-blocks) against Q8_K
// activations, and the Q8_K activation quantizer (bytes identical to the scalar one).
//
// Per super-block the whole weighted integer sum  sum_j scale_j * dot(q_j, a_j)  is built in
// int32 lanes (maddubs for the byte products, madd against the broadcast sub-block scale for
// the weighting, then an add; with VNNI vpdpwssd does the weighting and the add in one
// instruction), then converted to float once and accumulated with FMA. The byte products stay
// vpmaddubsw with VNNI too: vpdpbusd would sum 4 of them into int32, and weighting those by
// their 16-value scale would take a vpmulld (2 operations, 10 cycles of latency) instead. Offsets that do not
// depend on the weight values (the -32 of Q6_K, the -4 of Q3_K, the mins of Q2_K/Q4_K/Q5_K) are
// taken out of the byte products and applied through the activation's per-16 sums (bsums).
#include "simd.h"

namespace qc {
namespace QC_AVX2_NS {

// ---- Q8_K activations ------------------------------------------------------------------------

// y (n / 256 blocks of block_q8_K) = Q8_K(x (n))
void quantize_row_q8_K(const float* x, void* vy, int64_t n) {
  block_q8_K* y = static_cast<block_q8_K*>(vy);
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < QK_K; i += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + i)));
    const float amax = hmax_ps(m);
    if (amax == 0.0f) {
      std::memset(&y[b], 0, sizeof(block_q8_K));
      continue;
    }
    const float iscale = 127.0f / amax;
    y[b].d = 1.0f / iscale;
    const __m256 s = _mm256_set1_ps(iscale);
    const __m256i top = _mm256_set1_epi32(127);
    __m256i t[8];  // chunk c: pairwise sums of its values, 0..15 and 16..31 in alternate pairs
    for (int c = 0; c < 8; ++c) {
      const float* xc = x + 32 * c;
      __m256i v[4];
      for (int j = 0; j < 4; ++j)
        v[j] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xc + 8 * j), s)), top);
      t[c] = _mm256_hadd_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
      // packs works per 128-bit lane: the dwords come out as (0,4,1,5,2,6,3,7) groups of 4 values
      const __m256i b8 = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs + 32 * c),
                          _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    // a second hadd of chunks 2p, 2p+1 and the sum of the two lanes give bsums 4p .. 4p+3
    __m128i b4[4];
    for (int p = 0; p < 4; ++p) {
      const __m256i u = _mm256_hadd_epi32(t[2 * p], t[2 * p + 1]);
      b4[p] = _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].bsums), _mm_packs_epi32(b4[0], b4[1]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].bsums + 8), _mm_packs_epi32(b4[2], b4[3]));
  }
}

// ---- shared pieces ---------------------------------------------------------------------------

namespace {

// Shuffle masks for a 128-bit-duplicated vector of 8 int16 scales: mask k puts scale 2k in the
// 8 words of the low lane and scale 2k + 1 in the 8 words of the high lane, i.e. the scales
// of the two 16-element sub-blocks covered by a 32-byte chunk after maddubs.
struct PairMasks {
  __m256i m[4];
  PairMasks() {
    for (int k = 0; k < 4; ++k)
      m[k] = _mm256_setr_epi8(4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k,
                              4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k + 2,
                              4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,
                              4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2,
                              4 * k + 3);
  }
};

// Shuffle masks for a 128-bit-duplicated vector of 8 int16 words: mask j spreads word j over
// all 16 words.
struct WordMasks {
  __m256i m[8];
  WordMasks() {
    for (int j = 0; j < 8; ++j) m[j] = _mm256_set1_epi16((short)(2 * j | (2 * j + 1) << 8));
  }
};

}  // namespace

// 8 int16 scales (one 128-bit vector) duplicated into both lanes.
static inline __m256i dup128(__m128i s16) { return _mm256_broadcastsi128_si256(s16); }

// acc + 32 bytes of unsigned values q (<= 63: the int16 pair sums cannot saturate) times 32 int8
// activations a, each pair of products weighted by its int16 scale word in sc -> 8 int32 lanes.
static inline __m256i scaled_dot(__m256i acc, __m256i q, const int8_t* a, __m256i sc) {
  const __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
#ifdef QC_DOT_VNNI
  return dpwssd(acc, p, sc);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc));
#endif
}

static inline __m256i load256(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
static inline __m256i load_bsums(const block_q8_K& y) { return load256(y.bsums); }

// ---- Q2_K ------------------------------------------------------------------------------------

// w (n / 256 blocks of block_q2_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q2_K(int64_t n, const void* vw, const void* va) {
  const block_q2_K* x = static_cast<const block_q2_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const PairMasks pm;
  const __m256i three = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = h2f(x[i].d) * y[i].d, dmin = h2f(x[i].dmin) * y[i].d;
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m128i sc8 = _mm_and_si128(raw, _mm_set1_epi8(0x0f));
    const __m128i mn8 = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0f));
    // min term: sum over the 16 sub-blocks of min_j * bsum_j
    const __m256i mins = _mm256_madd_epi16(load_bsums(y[i]), _mm256_cvtepu8_epi16(mn8));
    acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(mins), acc_min);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {  // two halves of 128 values, 32 bytes of qs each
      const __m256i qs = load256(x[i].qs + 32 * h);
      const __m256i sc = dup128(_mm_cvtepu8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
      const int8_t* a = y[i].qs + 128 * h;
      s0 = scaled_dot(s0, _mm256_and_si256(qs, three), a, _mm256_shuffle_epi8(sc, pm.m[0]));
      s1 = scaled_dot(s1, _mm256_and_si256(_mm256_srli_epi16(qs, 2), three), a + 32, _mm256_shuffle_epi8(sc, pm.m[1]));
      s0 = scaled_dot(s0, _mm256_and_si256(_mm256_srli_epi16(qs, 4), three), a + 64, _mm256_shuffle_epi8(sc, pm.m[2]));
      s1 = scaled_dot(s1, _mm256_and_si256(_mm256_srli_epi16(qs, 6), three), a + 96, _mm256_shuffle_epi8(sc, pm.m[3]));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), acc);
  }
  return hsum_ps(acc) - hsum_ps(acc_min);
}

// ---- Q3_K ------------------------------------------------------------------------------------

// w (n / 256 blocks of block_q3_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q3_K(int64_t n, const void* vw, const void* va) {
  const block_q3_K* x = static_cast<const block_q3_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const PairMasks pm;
  const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = h2f(x[i].d) * y[i].d;
    const __m128i sc8 = q3_K_scales(x[i].scales);
    // the values are u - 4 with u = 2 low bits + 4 * high bit in 0..7: take 4 * sum_j scale_j bsum_j out
    const __m256i offs = _mm256_madd_epi16(load_bsums(y[i]), _mm256_cvtepi8_epi16(sc8));
    const __m256i hm = load256(x[i].hmask);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = load256(x[i].qs + 32 * h);
      const __m256i sc = dup128(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
      const int8_t* a = y[i].qs + 128 * h;
      // chunk k of half h: low bits at 2k of qs, high bit at bit 4h + k of hmask, moved to bit 2
      const __m256i hm_h = _mm256_srli_epi16(hm, 4 * h);
      const __m256i u0 = _mm256_or_si256(_mm256_and_si256(qs, three), _mm256_and_si256(_mm256_slli_epi16(hm_h, 2), four));
      const __m256i u1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qs, 2), three),
                                         _mm256_and_si256(_mm256_slli_epi16(hm_h, 1), four));
      const __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qs, 4), three), _mm256_and_si256(hm_h, four));
      const __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qs, 6), three),
                                         _mm256_and_si256(_mm256_srli_epi16(hm_h, 1), four));
      s0 = scaled_dot(s0, u0, a, _mm256_shuffle_epi8(sc, pm.m[0]));
      s1 = scaled_dot(s1, u1, a + 32, _mm256_shuffle_epi8(sc, pm.m[1]));
      s0 = scaled_dot(s0, u2, a + 64, _mm256_shuffle_epi8(sc, pm.m[2]));
      s1 = scaled_dot(s1, u3, a + 96, _mm256_shuffle_epi8(sc, pm.m[3]));
    }
    const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(s0, s1), _mm256_slli_epi32(offs, 2));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum_ps(acc);
}

// ---- Q4_K / Q5_K -----------------------------------------------------------------------------

// The shared Q4_K/Q5_K super-block loop. high_bits(i, k, &lo, &hi) ORs the 5th bits of chunk k
// into the low- and high-nibble values (nothing for Q4_K).
template <typename HighBits>
static inline float dot_k4(int64_t nb, const uint8_t* scales0, const uint8_t* qs0, size_t wstride,
                           const half_t* d0, const half_t* dmin0, const block_q8_K* y, HighBits high_bits) {
  const WordMasks wm;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  // mins duplicated per 16-value half of each 32-value sub-block, to pair them with bsums
  const __m128i dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const half_t* dp = reinterpret_cast<const half_t*>(reinterpret_cast<const uint8_t*>(d0) + i * wstride);
    const half_t* dmp = reinterpret_cast<const half_t*>(reinterpret_cast<const uint8_t*>(dmin0) + i * wstride);
    const float d = h2f(*dp) * y[i].d, dmin = h2f(*dmp) * y[i].d;
    const __m128i sm = k4_scales_mins(scales0 + i * wstride);
    const __m256i mins = _mm256_madd_epi16(load_bsums(y[i]), _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, dup_mins)));
    acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(mins), acc_min);
    // the 8 scales as int16 words in both lanes; word j spread over a vector by a byte shuffle
    const __m256i sc = dup128(_mm_cvtepu8_epi16(sm));
    const uint8_t* qs = qs0 + i * wstride;
    const int8_t* a = y[i].qs;
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k) {  // 64 values: 32 low nibbles (sub-block 2k), 32 high (2k + 1)
      const __m256i q = load256(qs + 32 * k);
      __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      high_bits(i, k, &lo, &hi);
      s0 = scaled_dot(s0, lo, a + 64 * k, _mm256_shuffle_epi8(sc, wm.m[2 * k]));
      s1 = scaled_dot(s1, hi, a + 64 * k + 32, _mm256_shuffle_epi8(sc, wm.m[2 * k + 1]));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), acc);
  }
  return hsum_ps(acc) - hsum_ps(acc_min);
}

// w (n / 256 blocks of block_q4_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q4_K(int64_t n, const void* vw, const void* va) {
  const block_q4_K* x = static_cast<const block_q4_K*>(vw);
  return dot_k4(n / QK_K, x->scales, x->qs, sizeof(block_q4_K), &x->d, &x->dmin,
                static_cast<const block_q8_K*>(va), [](int64_t, int, __m256i*, __m256i*) {});
}

// w (n / 256 blocks of block_q5_K) . a (n / 256 blocks of block_q8_K)
float vec_dot_q5_K(int64_t n, const void* vw, const void* va) {
  const block_q5_K* x = static_cast<const block_q5_K*>(vw);
  const __m256i one = _mm256_set1_epi8(1), two = _mm256_set1_epi8(2);
  // chunk k: the low-nibble values take bit 2k of qh[l], the high-nibble ones bit 2k + 1
  return dot_k4(n / QK_K, x->scales, x->qs, sizeof(block_q5_K), &x->d, &x->dmin,
                static_cast<const block_q8_K*>(va), [x, one, two](int64_t i, int k, __m256i* lo, __m256i* hi) {
                  const __m256i hb = _mm256_srli_epi16(load256(x[i].qh), 2 * k);
                  *lo = _mm256_or_si256(*lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                  *hi = _mm256_or_si256(*hi, _mm256_slli_epi16(_mm256_and_si256(hb, two), 3));
                });
}

// ---- Q6_K ------------------------------------------------------------------------------------

// w (n / 256 blocks of block_q6_K) . a (n / 256 blocks of block_q8_K). The decode gemv
// (gemv_k.cpp) keeps these int32 lanes and float steps: its values are bit for bit these.
float vec_dot_q6_K(int64_t n, const void* vw, const void* va) {
  const block_q6_K* x = static_cast<const block_q6_K*>(vw);
  const block_q8_K* y = static_cast<const block_q8_K*>(va);
  const PairMasks pm;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0c);
  const __m256i m30 = _mm256_set1_epi8(0x30), mc0 = _mm256_set1_epi8((char)0xc0);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float dx = h2f(x[i].d);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      // 128 values: ql bytes 0..31 give values 0..31 (low nibble) and 64..95 (high), bytes 32..63
      // give 32..63 and 96..127; qh byte l holds the 2 high bits of l, l+32, l+64, l+96
      const __m256i ql0 = load256(x[i].ql + 64 * h), ql1 = load256(x[i].ql + 64 * h + 32);
      const __m256i qh = load256(x[i].qh + 32 * h);
      const __m256i sc = dup128(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
      const __m256i u0 = _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, m03), 4));
      const __m256i u1 = _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_slli_epi16(_mm256_and_si256(qh, m0c), 2));
      const __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), _mm256_and_si256(qh, m30));
      const __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                                         _mm256_srli_epi16(_mm256_and_si256(qh, mc0), 2));
      const int8_t* a = y[i].qs + 128 * h;
      s0 = scaled_dot(s0, u0, a, _mm256_shuffle_epi8(sc, pm.m[0]));
      s1 = scaled_dot(s1, u1, a + 32, _mm256_shuffle_epi8(sc, pm.m[1]));
      s0 = scaled_dot(s0, u2, a + 64, _mm256_shuffle_epi8(sc, pm.m[2]));
      s1 = scaled_dot(s1, u3, a + 96, _mm256_shuffle_epi8(sc, pm.m[3]));
    }
    // the values are u - 32 with u = 4 low bits + 16 * 2 high bits in 0..63: take 32 * sum_j scale_j bsum_j out
    const __m256i offs = _mm256_madd_epi16(load_bsums(y[i]), _mm256_cvtepi8_epi16(sc8));
    const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(s0, s1), _mm256_slli_epi32(offs, 5));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[i].d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum_ps(acc);
}

}  // namespace QC_AVX2_NS
}  // namespace qc
