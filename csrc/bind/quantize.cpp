// Binding of the weight quantizers (csrc/quantize.h): float32 rows in, raw GGUF rows out.
#include <string>

#include "common.h"
#include "../blocks.h"
#include "../quantize.h"

namespace qc {

void bind_quantize(py::module_& m) {
  m.def("can_quantize", &can_quantize_to, py::arg("type"),
        "True if quantize() can produce GGUF type id `type`.");
  m.def("quantized_row_bytes", [](int32_t type, int64_t n_per_row) {
    return quantized_row_bytes(type, n_per_row);
  }, py::arg("type"), py::arg("n_per_row"),
     "Bytes of one row of n_per_row elements in `type`; 0 if not producible or not a multiple of the block.");
  m.def("quantize", [](int32_t type, py::array x_in, int n_threads) {
    // x: (n_rows, n_per_row) float32 -> (n_rows, row_bytes) uint8
    require(can_quantize_to(type), "quantize: cannot produce GGUF type " + std::to_string(type));
    require(x_in.ndim() == 2, "quantize: x must be a 2-D array (n_rows, n_per_row)");
    require(py::isinstance<py::array_t<float>>(x_in) || x_in.dtype().kind() == 'f',
            "quantize: x must be a floating-point array");
    f32_array x = f32_array::ensure(x_in);
    require(bool(x), "quantize: x cannot be converted to float32");
    const int64_t n_rows = x.shape(0), n_per_row = x.shape(1);
    const size_t rb = quantized_row_bytes(type, n_per_row);
    const TypeInfo ti = type_info(type);
    require(rb != 0, std::string("quantize: rows of ") + std::to_string(n_per_row) + " elements are not a multiple of " +
                         ti.name + "'s block of " + std::to_string(ti.block_elems));
    u8_array out({(py::ssize_t)n_rows, (py::ssize_t)rb});
    const float* xp = x.data();
    uint8_t* op = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      quantize_rows(type, xp, op, n_rows, n_per_row, n_threads);
    }
    return out;
  }, py::arg("type"), py::arg("x"), py::arg("n_threads") = 0,
     "Quantize float rows x (n_rows, n_per_row) to GGUF type `type`: uint8 (n_rows, row_bytes).\n"
     "F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 are byte-identical to gguf.quants.quantize.");
}

}  // namespace qc
