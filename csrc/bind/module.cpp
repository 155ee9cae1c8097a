// The _kernels extension module: kernel-path selection, the thread pool and matmul here;
// the other groups of bindings live beside this file.
#include <memory>

#include "common.h"
#include "../kernels.h"
#include "../matmul.h"
#include "../threadpool.h"

namespace qc {

static void bind_dispatch(py::module_& m) {
  m.def("available_isas", [] {
    int n = 0;
    const char* const* names = available_isas(&n);
    py::list out;
    for (int i = 0; i < n; ++i) out.append(names[i]);
    return out;
  }, "Kernel paths this build has and this CPU can run, best last.");
  m.def("get_isa", [] { return std::string(kernels().isa); }, "The kernel path in use.");
  m.def("set_isa", [](const std::string& name) {
    require(set_isa(name.c_str()), "kernel path '" + name + "' is not available on this CPU/build");
  }, "Select a kernel path by name (process-wide).");
  m.def("cpu_features", [] { return std::string(cpu_features()); });
  m.def("default_thread_count", &default_thread_count);
}

static void bind_pool_and_matmul(py::module_& m) {
  py::class_<ThreadPool, std::shared_ptr<ThreadPool>>(m, "ThreadPool")
      .def(py::init<int>(), py::arg("n_threads"))
      .def_property_readonly("size", &ThreadPool::size);

  m.def("matmul", [](ThreadPool& pool, u8_array w, int32_t wtype, int64_t n_in, f32_array x) {
    // w: (n_out, row_bytes) raw rows; x: (n_tok, n_in); returns (n_tok, n_out) float32
    require(w.ndim() == 2, "matmul: weight must be a 2-D uint8 array (n_out, row_bytes)");
    require(x.ndim() == 2 && x.shape(1) == n_in, "matmul: x must be (n_tok, n_in)");
    const Kernels& K = kernels();
    const size_t rb = row_bytes(wtype, n_in);
    require(rb != 0 && (size_t)w.shape(1) == rb, "matmul: weight rows have " + std::to_string(w.shape(1)) +
                                                     " bytes, expected " + std::to_string(rb));
    const int64_t n_out = w.shape(0), n_tok = x.shape(0);
    std::vector<uint8_t> scratch(matmul_scratch_bytes(K, wtype, n_in, n_tok));
    f32_array y({n_tok, n_out});
    const void* wp = w.data();
    const float* xp = x.data();
    float* yp = y.mutable_data();
    {
      py::gil_scoped_release nogil;
      matmul(pool, K, wp, wtype, n_out, n_in, xp, n_tok, yp, scratch.data());
    }
    return y;
  }, py::arg("pool"), py::arg("w"), py::arg("wtype"), py::arg("n_in"), py::arg("x"),
     "y (n_tok, n_out) = x (n_tok, n_in) @ W^T with W's rows in their stored type.");
}

}  // namespace qc

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "qwen-cpu SIMD kernels";
  qc::bind_dispatch(m);
  qc::bind_pool_and_matmul(m);
  qc::bind_quants(m);
  qc::bind_ops(m);
  qc::bind_model(m);
  qc::bind_quantize(m);
}
