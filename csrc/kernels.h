// The kernel table: the one interface between the instruction-set specific kernels and the
// rest of the C++ (matmul driver, attention driver, model). One table per instruction set;
// dispatch.cpp builds them once and selects one from the CPU's features (or QWEN_CPU_ISA).
//
// Conventions for every kernel:
//   - row-major float32 buffers unless a comment says otherwise; n counts elements;
//   - quantized rows are arrays of blocks (blocks.h), n a multiple of the block size;
//   - kernels never allocate and never start threads: the drivers split work across threads.
#pragma once
#include <cstddef>
#include <cstdint>

#include "act_q8_0x4.h"
#include "act_q8_x8.h"
#include "blocks.h"
#include "repack.h"

namespace qc {

// dot(w, a) over n elements: w one weight row in its stored type, a the activation row in the
// weight type's activation format (WeightKernels::act_type), quantized once per matmul.
typedef float (*vec_dot_fn)(int64_t n, const void* w, const void* a);
// Matrix-matrix form of vec_dot for prefill: y[i * y_stride + j] = dot(w row j, a row i) for
// j < n_w, i < n_a, with w (n_w rows of w_row_bytes) and a (n_a rows of a_row_bytes) as for
// vec_dot. Any n_w, n_a >= 1: the kernel tiles them itself (unpacking each weight block once per
// tile of activation rows); the caller picks n_a so that the activation rows stay in cache.
typedef void (*gemm_fn)(int64_t n, const void* w, size_t w_row_bytes, int n_w, const void* a, size_t a_row_bytes,
                        int n_a, float* y, size_t y_stride);
// The decode form of vec_dot: y[r] = dot(w row r, a) for r < n_rows, w rows w_row_bytes apart,
// a one activation row in the layout WeightKernels::gemv_act (several rows share its loads).
typedef void (*gemv_fn)(int64_t n, const void* w, size_t w_row_bytes, int n_rows, const void* a, float* y);
// gemv over n_a activation rows (a_row_bytes apart) at once, y[i * y_stride + r] for row i, each
// row's values bit for bit the gemv's of that row alone: the weights are read once for all rows.
typedef void (*gemv_rows_fn)(int64_t n, const void* w, size_t w_row_bytes, int n_rows, const void* a,
                             size_t a_row_bytes, int n_a, float* y, size_t y_stride);
// y (n) = dequantized x (n elements of the type)
typedef void (*dequantize_row_fn)(const void* x, float* y, int64_t n);
// y = x (n floats) quantized to an activation format (Q8_0, Q8_1, Q8_K) or copied (F32)
typedef void (*quantize_row_fn)(const float* x, void* y, int64_t n);

// Activation layouts private to some SIMD kernels (not GGUF types), numbered after them.
enum : int32_t {
  QC_ACT_Q8_0X4 = GGML_TYPE_COUNT,  // act_q8_0x4.h: Q8_0 regrouped for the Q4_0 gemv
  QC_ACT_Q8_X8,                     // act_q8_x8.h: Q8_1 with a + 128 and float scales, for gemm_x8
  QC_ACT_Q8_0F,                     // act_q8_x8.h: Q8_0 in int16 with float scales, for the AVX2 Q8_0 gemm
  QC_ACT_COUNT,
};

// What a path multiplies one weight type with. Each kernel carries the name it was registered
// under (QC_FN), which `qwen-cpu info --kernels` prints.
// WeightKernels::gemm_min_tokens unless the kernel sets its own (bench/README.md, "Prefill token chunks")
constexpr int kGemmMinTokens = 64;
// WeightKernels::gemm_rows unless the kernel sets its own (the x86 tiles of csrc/x86/gemm_impl.h)
constexpr int kGemmRows = 8;

struct WeightKernels {
  vec_dot_fn vec_dot = nullptr;   // nullptr: the type cannot be multiplied on this path
  const char* vec_dot_name = nullptr;
  int32_t act_type = -1;          // GGML_Q8_0, GGML_Q8_1, GGML_Q8_K or GGML_F32
  // gemm: the matrix-matrix form (nullptr: the driver loops over vec_dot), over activations in
  // the layout gemm_act (a QC_ACT_* id) where that is set, else in act_type.
  gemm_fn gemm = nullptr;
  const char* gemm_name = nullptr;
  int32_t gemm_act = -1;
  // tokens per gemm call at least (matmul.cpp cuts the tokens into chunks whose activations stay
  // in L2): the tile kernels repack each tile of weights once per call
  int gemm_min_tokens = kGemmMinTokens;
  // weight rows per tile of the gemm (a multiple of 4): matmul.cpp splits the rows between
  // threads, and unpacks repacked ones, in multiples of it, so that no tile runs part empty
  int gemm_rows = kGemmRows;
  // gemv: the decode form, vec_dot's values over one activation row stored in the layout gemv_act
  // (a QC_ACT_* id); the driver uses it for single-token products whose row length is a multiple
  // of that layout's block (act_block_elems).
  gemv_fn gemv = nullptr;
  const char* gemv_name = nullptr;
  int32_t gemv_act = -1;
  // optional: gemv for several activation rows (batched decode), each row's values the gemv's;
  // set_gemv sets it with the gemv, so a table that replaces a gemv never keeps another's.
  gemv_rows_fn gemv_rows = nullptr;
  // gemv_rows over every activation row at once also reads the weights from memory faster than
  // the gemv of the first row followed by gemv_rows over the rest from L2 (matmul.cpp; measured
  // per path with bench/gemv_rows_bench.cpp)
  bool gemv_rows_streams = false;
  // the repacked layout decode reads this type in (repack.h; QC_LAYOUT_STORED: none), set by
  // set_layout_gemv with that layout's kernels: a path may prefer its own form of the same blocks
  int32_t layout = QC_LAYOUT_STORED;
};

// The decode form over a repacked layout (repack.h): y[r] = dot(row r, a) for r < n_rows, n_rows a
// multiple of repack_rows_of(layout), w the repacked rows from a tile's first row (w_row_bytes: the
// stored row's).
struct LayoutKernels {
  gemv_fn gemv = nullptr;  // nullptr: this path does not repack into the layout
  const char* gemv_name = nullptr;
  int32_t gemv_act = -1;
  gemv_rows_fn gemv_rows = nullptr;  // optional: gemv for several activation rows (batched decode)
  // activation rows of the pass that reads the weights from memory, the others following from L2
  // (matmul.cpp); 0: every row in that pass (measured per path with bench/gemv_rows_bench.cpp)
  int gemv_rows_first = 0;
  // optional: the prefill form over the layout, n_w a multiple of repack_rows_of(layout) from a
  // slab's first row, over the stored type's gemm activations and equal to its gemm bit for bit;
  // without it prefill unpacks the rows to the stored layout a block at a time (matmul.cpp)
  gemm_fn gemm = nullptr;
  const char* gemm_name = nullptr;
};

// The KV cache types attention reads, numbered for the table: F32, F16, Q8_0, Q4_0 (kv_index).
enum : int { QC_KV_F32, QC_KV_F16, QC_KV_Q8_0, QC_KV_Q4_0, QC_KV_COUNT };
static inline int kv_index(int32_t type) {
  return type == GGML_F32 ? QC_KV_F32 : type == GGML_F16 ? QC_KV_F16 : type == GGML_Q8_0 ? QC_KV_Q8_0
       : type == GGML_Q4_0 ? QC_KV_Q4_0 : -1;
}

// Keys per block of the attention kernels: the unit of their online softmax and of the split
// of one query's keys across threads (a block of K and of V rows as floats stays in L1/L2).
constexpr int kAttnBlock = 64;

// Attention of n_q query heads that share one KV head over n_keys cached positions, folded into a
// running (online) softmax state so that a query's keys can be taken in several calls:
//   q (n_q, head_dim); key i's row at k + i * k_row_bytes, value i's at v + i * v_row_bytes, in the
//   kernel's K and V types (rows as kv_row_bytes in ops.h gives: f32, f16, or head_dim/32 blocks);
//   state per query j: m[j] the largest score so far (-inf before any key), l[j] the sum of
//   exp(score - m[j]), acc (n_q, head_dim) row j the sum of exp(score - m[j]) * value; score =
//   scale * q_j . k_i. The caller divides acc by l at the end. Causality is the caller's job.
//   scratch: attn_kernel_scratch_floats(n_q, head_dim) floats, 8-byte aligned (the scalar kernel keeps
//   doubles there).
typedef void (*attn_fn)(const float* q, int n_q, const void* k, size_t k_row_bytes, const void* v,
                        size_t v_row_bytes, int64_t n_keys, int head_dim, float scale, float* m, float* l,
                        float* acc, float* scratch);
struct AttnKernel {
  attn_fn fn = nullptr;
  const char* name = nullptr;
  bool q8_query = false;  // scores against the queries quantized to int8 (QueryQ8; a q8_0/q4_0 K cache's kernels)
};
// K and V blocks as floats (kAttnBlock, head_dim) each, scores (n_q, kAttnBlock), one block's
// values (n_q, head_dim) and rescale factors (n_q), rounded up to 64 bytes; then the queries
// quantized for a q8_0/q4_0 K cache (QueryQ8 in attn_groups.h: 3 bytes per element, 64-byte rounded).
static inline size_t attn_kernel_scratch_floats(int n_q, int head_dim) {
  const size_t n = (size_t)2 * kAttnBlock * head_dim + (size_t)n_q * (kAttnBlock + head_dim + 1);
  return ((n + 15) & ~(size_t)15) + (((size_t)n_q * head_dim * 3 / 4 + 16 + 15) & ~(size_t)15);
}

struct Kernels {
  const char* isa = "none";
  WeightKernels weight[GGML_TYPE_COUNT];
  LayoutKernels layout[QC_LAYOUT_COUNT];
  dequantize_row_fn dequantize[GGML_TYPE_COUNT] = {};
  quantize_row_fn quantize_act[QC_ACT_COUNT] = {};  // indexed by the activation type or QC_ACT_* id

  // y (n) = x / sqrt(mean(x^2) + eps) * w
  void (*rmsnorm)(float* y, const float* x, const float* w, int64_t n, float eps) = nullptr;
  // x (n) = softmax(x), max-subtracted
  void (*softmax)(float* x, int64_t n) = nullptr;
  // y (n) = silu(gate) * up
  void (*swiglu)(float* y, const float* gate, const float* up, int64_t n) = nullptr;
  // y (n) = a + b (y may alias a or b)
  void (*add)(float* y, const float* a, const float* b, int64_t n) = nullptr;
  // In place rotation of one token's heads: x (n_head, head_dim); cos, sin (head_dim / 2) are
  // this position's factors (YaRN already applied). neox: pair i with i + head_dim/2 (qwen2);
  // otherwise pair 2i with 2i+1 (llama GGUF files, whose Q/K rows the converter permuted).
  void (*rope)(float* x, int n_head, int head_dim, const float* cos, const float* sin, bool neox) = nullptr;
  // Online-softmax attention of n_q query heads sharing one KV head, one kernel per (K type, V type):
  // attn[kv_index(K type)][kv_index(V type)] (attn_fn above).
  AttnKernel attn[QC_KV_COUNT][QC_KV_COUNT];
  // y (n) = x rounded to binary16 (round to nearest even)
  void (*fp32_to_fp16_row)(const float* x, half_t* y, int64_t n) = nullptr;
};

// A kernel function and its name as written, for the setters below: set_gemm(k, t, QC_FN(f<A, B>), ...).
// The name is prefixed by QC_KERNEL_PREFIX, which every registering file defines ("avx2::", ...).
#define QC_FN(...) __VA_ARGS__, QC_KERNEL_PREFIX #__VA_ARGS__

// The setters the registration functions fill a table with. Each changes only the fields it names,
// so the order of registration matters only where two set the same entry (the later one wins).
// A new vec_dot drops the gemv, the gemm and the repacked layout a table inherited with the old one
// (set_gemv, set_gemm, set_layout_gemv after it to keep one):
// a decode or prefill kernel of another path, summing in another order, would break the prefill ==
// decode exactness of the types whose gemv and gemm are their vec_dot row by row (the float types;
// the avx512 table replaces their vec_dots on some CPUs and keeps the avx2 table otherwise).
static inline void set_vec_dot(Kernels& k, int32_t type, vec_dot_fn f, const char* name, int32_t act_type) {
  k.weight[type].vec_dot = f;
  k.weight[type].vec_dot_name = name;
  k.weight[type].act_type = act_type;
  k.weight[type].gemm = nullptr;
  k.weight[type].gemm_name = nullptr;
  k.weight[type].gemm_act = -1;
  k.weight[type].gemm_min_tokens = kGemmMinTokens;
  k.weight[type].gemm_rows = kGemmRows;
  k.weight[type].gemv = nullptr;
  k.weight[type].gemv_name = nullptr;
  k.weight[type].gemv_act = -1;
  k.weight[type].gemv_rows = nullptr;
  k.weight[type].gemv_rows_streams = false;
  k.weight[type].layout = QC_LAYOUT_STORED;
}
// gemm_act: the activation layout of the gemm (QC_ACT_*), or -1 for the type's act_type.
static inline void set_gemm(Kernels& k, int32_t type, gemm_fn f, const char* name, int32_t gemm_act = -1,
                            int min_tokens = kGemmMinTokens, int rows = kGemmRows) {
  k.weight[type].gemm = f;
  k.weight[type].gemm_name = name;
  k.weight[type].gemm_act = gemm_act;
  k.weight[type].gemm_min_tokens = min_tokens;
  k.weight[type].gemm_rows = rows;
  // a layout's prefill form gives the gemm's bits over its activations: a new gemm drops the old one's
  for (int32_t layout = 0; layout < QC_LAYOUT_COUNT; ++layout)
    if (repack_base_type(layout) == type) k.layout[layout].gemm = nullptr, k.layout[layout].gemm_name = nullptr;
}
static inline void set_gemv(Kernels& k, int32_t type, gemv_fn f, const char* name, int32_t gemv_act,
                            gemv_rows_fn rows = nullptr, bool rows_stream = false) {
  k.weight[type].gemv = f;
  k.weight[type].gemv_name = name;
  k.weight[type].gemv_act = gemv_act;
  k.weight[type].gemv_rows = rows;
  k.weight[type].gemv_rows_streams = rows_stream;
}
static inline void set_layout_gemv(Kernels& k, int32_t layout, gemv_fn f, const char* name, int32_t gemv_act,
                                   gemv_rows_fn rows = nullptr, int rows_first = 0) {
  k.layout[layout].gemv = f;
  k.layout[layout].gemv_name = name;
  k.layout[layout].gemv_act = gemv_act;
  k.layout[layout].gemv_rows = rows;
  k.layout[layout].gemv_rows_first = rows_first;
  k.weight[repack_base_type(layout)].layout = layout;
}

// The prefill form over a layout (LayoutKernels::gemm), after its set_layout_gemv
static inline void set_layout_gemm(Kernels& k, int32_t layout, gemm_fn f, const char* name) {
  k.layout[layout].gemm = f;
  k.layout[layout].gemm_name = name;
}

// The several-row form alone of a layout whose one-row gemv a table keeps from another path
static inline void set_layout_gemv_rows(Kernels& k, int32_t layout, gemv_rows_fn rows, int rows_first = 0) {
  k.layout[layout].gemv_rows = rows;
  k.layout[layout].gemv_rows_first = rows_first;
}

static inline void set_attn(Kernels& k, int32_t k_type, int32_t v_type, attn_fn f, const char* name) {
  k.attn[kv_index(k_type)][kv_index(v_type)] = AttnKernel{f, name};
}

// The CPU's features, probed once by dispatch.cpp and passed to the registrations that depend on
// more than their own table's requirements.
struct CpuFeatures {
  bool sse42 = false, popcnt = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
  bool avxvnni = false;
  // AMD family 19h (Zen 4, the only one of the family with AVX-512): 512-bit operations issued as
  // two 256-bit halves, which makes a few 512-bit kernels slower there than their avx2 form
  bool avx512_halves = false;
  bool neon = false, dotprod = false;
};

// Each instruction set registers what it implements on top of the table it is given; the tables
// and their order are in dispatch.cpp (Tables), the one place that says which path runs what.
void register_quant_kernels_scalar(Kernels& k);
void register_op_kernels_scalar(Kernels& k);
#ifdef QWEN_HAVE_SSE42
// SSE4.2 + POPCNT, 128-bit: Nehalem .. Ivy Bridge (csrc/sse42/simd.h says why AVX1 adds nothing)
void register_quant_kernels_sse42(Kernels& k);
void register_op_kernels_sse42(Kernels& k);
#endif
#ifdef QWEN_HAVE_AVX2
void register_quant_kernels_avx2(Kernels& k, const CpuFeatures& cpu);
void register_op_kernels_avx2(Kernels& k);
#endif
#ifdef QWEN_HAVE_AVXVNNI
// The AVX2 quantized kernels compiled with VEX vpdpbusd/vpdpwssd (csrc/avx2/simd.h); the table is
// the avx2 one with these registered on top.
void register_quant_kernels_avxvnni(Kernels& k, const CpuFeatures& cpu);
#endif
#ifdef QWEN_HAVE_AVXVNNI_EVEX
// Test twin of avxvnni: the same code with the EVEX (AVX512-VNNI + VL) encoding of those instructions.
void register_quant_kernels_avxvnni_evex(Kernels& k, const CpuFeatures& cpu);
#endif
#ifdef QWEN_HAVE_AVX512
// The quantized kernels need AVX512-VNNI, which the table does not require: cpu says whether it is there.
void register_quant_kernels_avx512(Kernels& k, const CpuFeatures& cpu);
void register_decode_avx512(Kernels& k, const CpuFeatures& cpu);
void register_op_kernels_avx512(Kernels& k, const CpuFeatures& cpu);
#endif
#ifdef QWEN_HAVE_NEON
void register_quant_kernels_neon(Kernels& k);
void register_op_kernels_neon(Kernels& k);
// The neon table's integer dot products with SDOT (ARMv8.2 dotprod): only where the CPU has it.
void register_quant_kernels_neon_dotprod(Kernels& k);
#endif

// The selected table (chosen on first use from the CPU and QWEN_CPU_ISA).
const Kernels& kernels();
// Select a table by name ("scalar", "avx2", ...); false if this CPU or build lacks it.
bool set_isa(const char* name);
// Names of the tables this build has and this CPU can run, best last -- except "avxvnni_evex", a
// test twin of "avxvnni" (csrc/avx2/simd.h), which is listed but never the default.
const char* const* available_isas(int* count);
// CPU features found, as "avx2 fma f16c ..." (for bug reports).
const char* cpu_features();

// Bytes of one row of n elements of a type (n a multiple of its block size).
static inline size_t row_bytes(int32_t type, int64_t n) {
  const TypeInfo ti = type_info(type);
  return ti.block_elems ? (size_t)(n / ti.block_elems) * (size_t)ti.block_bytes : 0;
}

// Elements per block and bytes of a row of an activation format: a GGUF type or a QC_ACT_* id.
static inline int act_block_elems(int32_t fmt) {
  return fmt == QC_ACT_Q8_0X4 ? QK8_0X4 : fmt == QC_ACT_Q8_X8 ? QK8_X8 : fmt == QC_ACT_Q8_0F ? QK8_0F : type_info(fmt).block_elems;
}
static inline size_t act_row_bytes(int32_t fmt, int64_t n) {
  // Q8_0x4: a last group of fewer blocks (64-column tiles, Q8_0_R4T) padded with zero blocks
  if (fmt == QC_ACT_Q8_0X4) return (size_t)((n + QK8_0X4 - 1) / QK8_0X4) * sizeof(block_q8_0x4);
  if (fmt == QC_ACT_Q8_X8) return (size_t)(n / QK8_X8) * sizeof(block_q8_x8);
  if (fmt == QC_ACT_Q8_0F) return (size_t)(n / QK8_0F) * sizeof(block_q8_0f);
  return row_bytes(fmt, n);
}
// Its name (kernel_test, `qwen-cpu info --kernels`)
static inline const char* act_format_name(int32_t fmt) {
  return fmt == QC_ACT_Q8_0X4 ? "Q8_0x4" : fmt == QC_ACT_Q8_X8 ? "Q8_X8" : fmt == QC_ACT_Q8_0F ? "Q8_0F" : type_info(fmt).name;
}

}  // namespace qc
