// The NEON quantized kernels: dot products of every weight type we read against its activation
// format, and the activation quantizers (bytes identical to the scalar ones). Dequantization stays
// the inherited scalar one: it serves the embedding lookup and offline conversion, never a matrix
// product. The "neon_dotprod" table (dispatch.cpp) is this one with the integer dot products
// replaced by their SDOT versions.
#include "neon.h"

namespace qc {

void register_quant_kernels_neon(Kernels& k) {
  neon::register_quants_float(k);
  neon::register_quants_int(k);
}

void register_quant_kernels_neon_dotprod(Kernels& k) {
  register_quant_kernels_neon(k);
  neon::register_quants_int_dotprod(k);
}

}  // namespace qc
