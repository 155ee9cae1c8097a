#include "../kernels.h"
namespace qc {
void register_op_kernels_avx2(Kernels& k) { (void)k; }  // PLACEHOLDER
}
