// Bindings of the per-row quantized kernels (dequantize, activation quantizers, dot products)
// and of the block-size table. They use the currently selected kernel table, so the same Python
// call exercises the scalar or a SIMD path (see _kernels.set_isa). Every size is checked here:
// a bad argument is a ValueError, never an out-of-bounds read.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"
#include "../kernels.h"

namespace qc {
namespace {

// Inputs at least this many elements are processed without holding the GIL.
constexpr int64_t kReleaseGilElems = 1 << 15;

std::string type_name(int32_t type) {
  const char* name = type_info(type).name;
  return name ? std::string(name) : "type " + std::to_string(type);
}

// Checks n >= 0 and n a multiple of the type's block size (the type must be known).
void require_block_multiple(const char* fn, int32_t type, int64_t n) {
  const TypeInfo ti = type_info(type);
  require(n >= 0, std::string(fn) + ": n must be >= 0, got " + std::to_string(n));
  require(n % ti.block_elems == 0, std::string(fn) + ": n=" + std::to_string(n) + " is not a multiple of the " +
                                       ti.name + " block size (" + std::to_string(ti.block_elems) + ")");
}

// Checks that a 1-D uint8 array holds exactly the bytes of n elements of the type.
void require_row_bytes(const char* fn, const char* what, const u8_array& data, int32_t type, int64_t n) {
  require(data.ndim() == 1, std::string(fn) + ": " + what + " must be a 1-D uint8 array");
  const size_t expected = row_bytes(type, n);
  require((size_t)data.size() == expected, std::string(fn) + ": " + what + " has " + std::to_string(data.size()) +
                                                " bytes, expected " + std::to_string(expected) + " for n=" +
                                                std::to_string(n) + " " + type_name(type) + " values");
}

// The block structs hold half and float fields, so the kernels need their rows aligned; a numpy
// view may start anywhere (np.frombuffer(buf, offset=1)), in which case the bytes are copied.
const void* aligned_bytes(const u8_array& data, std::vector<uint8_t>& copy) {
  const uint8_t* p = data.data();
  if (reinterpret_cast<uintptr_t>(p) % alignof(float) == 0) return p;
  copy.assign(p, p + data.size());  // operator new memory is aligned for any fundamental type
  return copy.data();
}

}  // namespace

void bind_quants(py::module_& m) {
  m.def("type_info", [](int32_t type) -> py::object {
    const TypeInfo ti = type_info(type);
    if (!ti.name) return py::none();
    return py::make_tuple(std::string(ti.name), ti.block_elems, ti.block_bytes);
  }, py::arg("type"), "(name, block_elems, block_bytes) of a GGUF tensor type id, or None if we do not read it.");

  m.def("weight_act_type", [](int32_t type) -> py::object {
    if (type < 0 || type >= GGML_TYPE_COUNT || !kernels().weight[type].vec_dot) return py::none();
    return py::int_(kernels().weight[type].act_type);
  }, py::arg("type"),
     "The activation format (a type id: Q8_0, Q8_1, Q8_K or F32) that vec_dot pairs with weights of this type "
     "on the current kernel path, or None if the type cannot be multiplied.");

  m.def("dequantize", [](int32_t type, u8_array data, int64_t n) {
    const Kernels& K = kernels();
    require(type >= 0 && type < GGML_TYPE_COUNT && K.dequantize[type],
            "dequantize: unsupported tensor type " + type_name(type));
    require_block_multiple("dequantize", type, n);
    require_row_bytes("dequantize", "data", data, type, n);
    std::vector<uint8_t> copy;
    const void* src = aligned_bytes(data, copy);
    f32_array y(n);
    float* yp = y.mutable_data();
    const dequantize_row_fn fn = K.dequantize[type];
    if (n >= kReleaseGilElems) {
      py::gil_scoped_release nogil;
      fn(src, yp, n);
    } else {
      fn(src, yp, n);
    }
    return y;
  }, py::arg("type"), py::arg("data"), py::arg("n"),
     "y (n,) float32 = the n values of type `type` stored in data (1-D uint8, exactly their bytes).");

  m.def("quantize_act", [](int32_t type, f32_array x) {
    const Kernels& K = kernels();
    require(type >= 0 && type < GGML_TYPE_COUNT && K.quantize_act[type],
            "quantize_act: " + type_name(type) + " is not an activation format (use F32, Q8_0, Q8_1 or Q8_K)");
    require(x.ndim() == 1, "quantize_act: x must be a 1-D float32 array");
    const int64_t n = x.size();
    require_block_multiple("quantize_act", type, n);
    u8_array y((py::ssize_t)row_bytes(type, n));
    // f32_array is forcecast and c-contiguous; numpy's buffers are aligned for float
    const float* xp = x.data();
    uint8_t* yp = y.mutable_data();
    const quantize_row_fn fn = K.quantize_act[type];
    if (n >= kReleaseGilElems) {
      py::gil_scoped_release nogil;
      fn(xp, yp, n);
    } else {
      fn(xp, yp, n);
    }
    return y;
  }, py::arg("type"), py::arg("x"),
     "The bytes (1-D uint8) of x (n,) float32 in activation format `type`; n a multiple of its block size.");

  m.def("vec_dot", [](int32_t type, u8_array w, u8_array a, int64_t n) {
    const Kernels& K = kernels();
    require(type >= 0 && type < GGML_TYPE_COUNT && K.weight[type].vec_dot,
            "vec_dot: no dot-product kernel for tensor type " + type_name(type));
    const WeightKernels& wk = K.weight[type];
    require_block_multiple("vec_dot", type, n);
    require_block_multiple("vec_dot", wk.act_type, n);
    require_row_bytes("vec_dot", "w", w, type, n);
    require_row_bytes("vec_dot", "a", a, wk.act_type, n);
    std::vector<uint8_t> w_copy, a_copy;
    const void* wp = aligned_bytes(w, w_copy);
    const void* ap = aligned_bytes(a, a_copy);
    float result;
    if (n >= kReleaseGilElems) {
      py::gil_scoped_release nogil;
      result = wk.vec_dot(n, wp, ap);
    } else {
      result = wk.vec_dot(n, wp, ap);
    }
    return result;
  }, py::arg("type"), py::arg("w"), py::arg("a"), py::arg("n"),
     "dot(w, a) over n elements: w one weight row of type `type` (1-D uint8), a the activation row already in "
     "weight_act_type(type) (1-D uint8, e.g. from quantize_act).");
}

}  // namespace qc
