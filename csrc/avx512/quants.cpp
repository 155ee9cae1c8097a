// The AVX-512 quantized kernels. dispatch.cpp builds this table only on CPUs with AVX-512
// F/BW/VL/DQ, as a copy of the AVX2 table; the kernels here use AVX512-VNNI as well (one
// instruction for the byte or word dot products and their accumulation), so they replace the
// AVX2 ones only when the CPU has it. Without VNNI the table keeps every AVX2 kernel. Types
// not covered here (F32/F16/BF16, Q5_0, Q5_1, Q2_K, Q3_K) and the activation quantizers keep
// their AVX2 kernels too.
#include <cpuid.h>

#include "simd512.h"

namespace qc {

static bool cpu_has_avx512_vnni() {
  unsigned a, b, c, d;
  // CPUID leaf 7, sub-leaf 0: ECX bit 11 = AVX512_VNNI. The OS support for the AVX-512 state was
  // checked by dispatch.cpp before this table was built.
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 11));
}

void register_quant_kernels_avx512(Kernels& k) {
  if (!cpu_has_avx512_vnni()) return;
  avx512::register_quants_32_vnni(k);
  avx512::register_quants_k_vnni(k);
}

}  // namespace qc
