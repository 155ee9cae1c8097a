// A weight as the forward pass sees it: a view of its bytes in the file mapping (or in the
// Model's repacked copy), its type, shape and layout.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace qc {

// A weight matrix (rows, cols) in its stored type: rows of row_bytes(type, cols) bytes; or a
// 1-D float32 vector (rows = 1) for norms and biases. data == nullptr: absent (e.g. no bias).
struct Tensor {
  const void* data = nullptr;
  int32_t type = GGML_F32;
  int64_t rows = 0, cols = 0;
  int32_t layout = QC_LAYOUT_STORED;  // or the one the Model has repacked it into (repack_pending)
};

}  // namespace qc
