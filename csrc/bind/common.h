// Helpers shared by the pybind11 binding files (csrc/bind/*.cpp). The bindings stay thin:
// they check shapes and dtypes, release the GIL around compute, and call into the C++ API.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace qc {

using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using u8_array = py::array_t<uint8_t, py::array::c_style>;

// Raise ValueError (pybind11 maps std::invalid_argument to it) unless cond holds.
inline void require(bool cond, const std::string& what) {
  if (!cond) throw std::invalid_argument(what);
}

void bind_quants(py::module_& m);
void bind_ops(py::module_& m);
void bind_model(py::module_& m);
void bind_quantize(py::module_& m);

}  // namespace qc
