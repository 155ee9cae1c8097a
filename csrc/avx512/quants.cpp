// The AVX-512 quantized kernels. dispatch.cpp builds this table only on CPUs with AVX-512
// F/BW/VL/DQ, as a copy of the AVX2 table. The float-weight kernels need nothing more; the
// quantized ones use AVX512-VNNI as well (one instruction for the byte or word dot products
// and their accumulation), so they replace the AVX2 ones only when the CPU has it -- without
// VNNI the table keeps the AVX2 kernels for those types. The activation quantizers and the
// dequantizers stay the inherited ones.
#include "simd512.h"

#include "../gemm.h"

namespace qc {

void register_quant_kernels_avx512(Kernels& k, const CpuFeatures& cpu) {
  avx512::register_quants_float(k);
  if (cpu.avx512vnni) {
    avx512::register_quants_32_vnni(k);
    avx512::register_quants_k_vnni(k);
    avx512::register_gemv_vnni(k);
    avx512::register_gemv_k_vnni(k);
    avx512::register_gemv_q8_0_vnni(k);
    avx512::register_gemv_r4_vnni(k);
    register_gemm_kernels_avx512(k);
  }
}

}  // namespace qc
