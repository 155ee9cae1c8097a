// Block layouts of the GGUF tensor types we read, byte for byte as GGUF files store them
// (the layouts are ggml's; sizes are checked below). All helpers here are `static inline` so
// that each translation unit, whatever its instruction-set flags, gets its own copy: an inline
// function with external linkage compiled with -mavx2 could otherwise be picked by the linker
// for the scalar path too.
#pragma once
#include <cstdint>
#include <cstring>

namespace qc {

// GGUF tensor type ids (the numbering is fixed by the file format).
enum GgmlType : int32_t {
  GGML_F32 = 0,
  GGML_F16 = 1,
  GGML_Q4_0 = 2,
  GGML_Q4_1 = 3,
  GGML_Q5_0 = 6,
  GGML_Q5_1 = 7,
  GGML_Q8_0 = 8,
  GGML_Q8_1 = 9,
  GGML_Q2_K = 10,
  GGML_Q3_K = 11,
  GGML_Q4_K = 12,
  GGML_Q5_K = 13,
  GGML_Q6_K = 14,
  GGML_Q8_K = 15,
  GGML_BF16 = 30,
  GGML_TYPE_COUNT = 31,  // size of per-type tables; ids in between are types we do not read
};

typedef uint16_t half_t;  // IEEE binary16 bits
typedef uint16_t bf16_t;  // bfloat16 bits

constexpr int QK4_0 = 32, QK4_1 = 32, QK5_0 = 32, QK5_1 = 32, QK8_0 = 32, QK8_1 = 32;
constexpr int QK_K = 256;          // super-block size of the K-quants
constexpr int K_SCALE_SIZE = 12;   // packed 6-bit scales and mins of Q4_K/Q5_K

// x[i] = d * (q[i] - 8), q in 0..15; element j in the low nibble of qs[j], j+16 in the high one.
struct block_q4_0 { half_t d; uint8_t qs[QK4_0 / 2]; };
// x[i] = d * q[i] + m
struct block_q4_1 { half_t d; half_t m; uint8_t qs[QK4_1 / 2]; };
// x[i] = d * (q[i] - 16); the 5th bit of element j is bit j of qh (little-endian u32)
struct block_q5_0 { half_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; };
struct block_q5_1 { half_t d; half_t m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; };
// x[i] = d * q[i]
struct block_q8_0 { half_t d; int8_t qs[QK8_0]; };
// Q8_0 plus s = d * sum(q): the activation format for the weight types with a min (Q4_1, Q5_1)
struct block_q8_1 { half_t d; half_t s; int8_t qs[QK8_1]; };

// 16 sub-blocks of 16: x = d * (scales & 15) * q - dmin * (scales >> 4) * 1, q in 0..3
struct block_q2_K { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; half_t d; half_t dmin; };
// 16 sub-blocks of 16, 6-bit signed scales packed in 12 bytes; q = 2 low bits + high bit from hmask, minus 4 if that bit is clear
struct block_q3_K { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; half_t d; };
// 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes
struct block_q4_K { half_t d; half_t dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; };
struct block_q5_K { half_t d; half_t dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
// 16 sub-blocks of 16 with int8 scales; q = 4 low bits (ql) + 2 high bits (qh) - 32
struct block_q6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; half_t d; };
// The activation format for the K-quants: f32 scale, int8 values, sums of each 16 values.
struct block_q8_K { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; };

static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 size");
static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");
static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");
static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");

// Elements per block and bytes per block of each type we read; 0 for ids we do not read.
struct TypeInfo { const char* name; int block_elems; int block_bytes; };
static inline TypeInfo type_info(int32_t t) {
  switch (t) {
    case GGML_F32: return {"F32", 1, 4};
    case GGML_F16: return {"F16", 1, 2};
    case GGML_BF16: return {"BF16", 1, 2};
    case GGML_Q4_0: return {"Q4_0", QK4_0, sizeof(block_q4_0)};
    case GGML_Q4_1: return {"Q4_1", QK4_1, sizeof(block_q4_1)};
    case GGML_Q5_0: return {"Q5_0", QK5_0, sizeof(block_q5_0)};
    case GGML_Q5_1: return {"Q5_1", QK5_1, sizeof(block_q5_1)};
    case GGML_Q8_0: return {"Q8_0", QK8_0, sizeof(block_q8_0)};
    case GGML_Q8_1: return {"Q8_1", QK8_1, sizeof(block_q8_1)};
    case GGML_Q2_K: return {"Q2_K", QK_K, sizeof(block_q2_K)};
    case GGML_Q3_K: return {"Q3_K", QK_K, sizeof(block_q3_K)};
    case GGML_Q4_K: return {"Q4_K", QK_K, sizeof(block_q4_K)};
    case GGML_Q5_K: return {"Q5_K", QK_K, sizeof(block_q5_K)};
    case GGML_Q6_K: return {"Q6_K", QK_K, sizeof(block_q6_K)};
    case GGML_Q8_K: return {"Q8_K", QK_K, sizeof(block_q8_K)};
    default: return {nullptr, 0, 0};
  }
}

// Exact binary16 <-> binary32 conversions (subnormals, infinities and NaN included), in plain C++
// so that the scalar path needs no F16C.
static inline float fp32_from_bits(uint32_t w) { float f; std::memcpy(&f, &w, 4); return f; }
static inline uint32_t fp32_to_bits(float f) { uint32_t w; std::memcpy(&w, &f, 4); return w; }

static inline float fp16_to_fp32(half_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return fp32_from_bits(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return fp32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return fp32_from_bits(sign);
  // subnormal: normalise the mantissa
  int e = -1;
  do { mant <<= 1; ++e; } while ((mant & 0x400) == 0);
  return fp32_from_bits(sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ff) << 13));
}

// Round to nearest even, as numpy's astype(float16) and F16C's _cvtss_sh(x, 0) do.
static inline half_t fp32_to_fp16(float f) {
  const uint32_t x = fp32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (half_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));  // inf / nan
  if (ax >= 0x477ff000u) return (half_t)(sign | 0x7c00);  // rounds to >= 65520: overflow to inf
  if (ax < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (ax < 0x33000000u) return (half_t)sign;  // < 2^-25 rounds to zero
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14..24 bits dropped
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1))) ++r;
    return (half_t)(sign | r);
  }
  uint32_t r = ((ax >> 13) - (112u << 10));
  const uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return (half_t)(sign | r);
}

static inline float bf16_to_fp32(bf16_t h) { return fp32_from_bits((uint32_t)h << 16); }

}  // namespace qc
