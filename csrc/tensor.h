// A weight as the forward pass sees it: a view of its bytes in the file mapping (or in the
// Model's repacked copy), its type, shape and layout.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "blocks.h"
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

// Throws std::invalid_argument naming `name` unless t is present, (rows, cols), of a type this
// CPU's kernel table computes, with rows a whole number of its blocks.
inline void check_matrix(const Kernels& K, const Tensor& t, int64_t rows, int64_t cols, const std::string& name) {
  if (!t.data) throw std::invalid_argument("missing tensor " + name);
  if (t.rows != rows || t.cols != cols)
    throw std::invalid_argument(name + ": shape (" + std::to_string(t.rows) + ", " + std::to_string(t.cols) +
                                ") does not match the model's (" + std::to_string(rows) + ", " + std::to_string(cols) + ")");
  if (t.type < 0 || t.type >= GGML_TYPE_COUNT || !K.weight[t.type].vec_dot || !K.dequantize[t.type])
    throw std::invalid_argument(name + ": tensor type " + std::to_string(t.type) + " is not supported");
  if (cols % type_info(t.type).block_elems != 0)
    throw std::invalid_argument(name + ": row length " + std::to_string(cols) + " is not a multiple of the " +
                                type_info(t.type).name + " block size");
}

}  // namespace qc
