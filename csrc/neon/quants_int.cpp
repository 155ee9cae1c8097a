// The NEON integer dot products for ARMv8.0 (every AArch64 CPU): int_kernels.h over DotBase
// (widening multiplies and pairwise widening adds).
#include "int_kernels.h"

namespace qc {
namespace neon {

QC_NEON_INT_DEFINE(DotBase)

}  // namespace neon
}  // namespace qc
