#include "../kernels.h"
namespace qc {
void register_quant_kernels_scalar(Kernels& k) { (void)k; }  // PLACEHOLDER
}
