// The AVX-512 table's K-quant prefill tiles (WeightKernels::gemm of Q4_K, Q5_K, Q6_K): the
// 8-interleaved-rows kernels of csrc/x86/gemm_impl.h with vpdpbusd, 4 tokens per pass, compiled
// with the AVX2 flags only and vpdpbusd written in its EVEX encoding (csrc/x86/simd256.h).
// Why not in csrc/avx512 (AVX-512 flags): the tiles are 256-bit in both builds, and this
// compilation ran faster on Zen 4 at Qwen2.5 shapes (bench/README.md, "avx512 K-quant prefill
// tiles"; bench/bench_isa_ab.py compares builds). Registered by dispatch.cpp only on CPUs with
// AVX512-VNNI; the Q4_0/Q8_0 tiles stay those of csrc/avx512/gemm.cpp (8 tokens per pass).
#define QC_GEMM_ATTR
#include "../x86/gemm_impl.h"
#include "../kernels.h"

#undef QC_KERNEL_PREFIX  // (avx2/simd.h, through min_dot.h, defines its own)
#define QC_KERNEL_PREFIX "avx512_ymm::"  // kernel names (kernels.h, QC_FN)

namespace qc {
namespace avx512_ymm {
namespace {

struct EvexDot {
  static constexpr int kTokens = 4;  // the VEX code around it names only 16 ymm registers
  static inline __m256i dot2(__m256i acc, __m256i u0, __m256i s0, __m256i u1, __m256i s1) {
    return x86::dpbusd_evex(x86::dpbusd_evex(acc, u0, s0), u1, s1);
  }
};

}  // namespace
}  // namespace avx512_ymm

void register_gemm_k_avx512_ymm(Kernels& k) {
  using avx512_ymm::EvexDot;
  using namespace gemm;
  set_gemm(k, GGML_Q4_K, QC_FN(gemm_kx8<Q4_KW, EvexDot>));
  set_gemm(k, GGML_Q5_K, QC_FN(gemm_kx8<Q5_KW, EvexDot>));
  set_gemm(k, GGML_Q6_K, QC_FN(gemm_kx8<Q6_KW, EvexDot>));
}

}  // namespace qc
