#include "../kernels.h"
namespace qc {
void register_quant_kernels_avx2(Kernels& k) { (void)k; }  // PLACEHOLDER
}
