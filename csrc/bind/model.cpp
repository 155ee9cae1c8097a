#include "common.h"

namespace qc {

void bind_model(py::module_& m) { (void)m; }  // PLACEHOLDER: filled in by its owner

}  // namespace qc
