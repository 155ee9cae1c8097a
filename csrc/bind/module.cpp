// The _kernels extension module: kernel-path selection, the thread pool and matmul here;
// the other groups of bindings live beside this file.
#include <chrono>
#include <memory>
#include <vector>

#include "common.h"
#include "../kernels.h"
#include "../matmul.h"
#include "../repack.h"
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
  m.def("kernel_table", [] {
    const Kernels& K = kernels();
    auto entry = [&](const char* name, int32_t act) {
      return py::make_tuple(name ? name : "", name ? act_format_name(act) : "");
    };
    const char* layout_names[QC_LAYOUT_COUNT] = {"stored", "Q4_0_R4", "Q8_0_R4", "Q4_K_R4", "Q5_0_R4T", "Q4_0_R4T",
                                                 "Q4_1_R4T", "Q5_1_R4T", "Q8_0_R4T", "Q4_0_R16", "Q5_K_R4"};
    py::list out;
    for (int32_t t = 0; t < GGML_TYPE_COUNT; ++t) {
      const WeightKernels& w = K.weight[t];
      if (!w.vec_dot) continue;
      py::dict d;
      d["type"] = type_info(t).name;
      d["vec_dot"] = entry(w.vec_dot_name, w.act_type);
      d["gemm"] = entry(w.gemm_name, w.gemm_act >= 0 ? w.gemm_act : w.act_type);
      d["gemv"] = entry(w.gemv_name, w.gemv_act);
      const int32_t layout = w.layout;
      const bool repacks = layout != QC_LAYOUT_STORED;
      d["layout"] = repacks ? layout_names[layout] : "stored";
      d["layout_gemv"] = repacks ? entry(K.layout[layout].gemv_name, K.layout[layout].gemv_act) : entry(nullptr, 0);
      d["layout_gemm"] = repacks ? entry(K.layout[layout].gemm_name, w.gemm_act >= 0 ? w.gemm_act : w.act_type)
                                 : entry(nullptr, 0);
      out.append(d);
    }
    return out;
  }, "The selected path's kernels per weight type: a list of dicts with 'type', 'layout' (the one "
     "decode repacks into, or 'stored') and (name, activation format) pairs 'vec_dot', 'gemm', "
     "'gemv', 'layout_gemv', 'layout_gemm' ('' where the path has none).");
  m.def("attention_table", [] {
    const Kernels& K = kernels();
    const int32_t types[QC_KV_COUNT] = {GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q4_0};  // kv_index order
    py::list out;
    for (int32_t kt : types)
      for (int32_t vt : types) {
        const AttnKernel& a = K.attn[kv_index(kt)][kv_index(vt)];
        out.append(py::make_tuple(type_info(kt).name, type_info(vt).name, a.name ? a.name : ""));
      }
    return out;
  }, "The selected path's attention kernel per KV cache type pair: (K type, V type, name) tuples.");
  m.def("default_thread_count", &default_thread_count);
}

static void bind_pool_and_matmul(py::module_& m) {
  py::class_<ThreadPool, std::shared_ptr<ThreadPool>>(m, "ThreadPool")
      .def(py::init<int>(), py::arg("n_threads"))
      .def_property_readonly("size", &ThreadPool::size);

  m.def("matmul", [](ThreadPool& pool, u8_array w, int32_t wtype, int64_t n_in, f32_array x, bool alone) {
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
      matmul(pool, K, wp, wtype, n_out, n_in, xp, n_tok, yp, scratch.data(), QC_LAYOUT_STORED, alone);
    }
    return y;
  }, py::arg("pool"), py::arg("w"), py::arg("wtype"), py::arg("n_in"), py::arg("x"), py::arg("alone") = false,
     "y (n_tok, n_out) = x (n_tok, n_in) @ W^T with W's rows in their stored type (alone: each row as a "
     "one-row product computes it, matmul.h).");
}

// Streams a buffer of n_bytes with every thread of the pool, `repeats` times, and returns the best
// read bandwidth in bytes/s: the machine's limit for decode, which reads every weight once per token.
static double measure_read_bandwidth(ThreadPool& pool, size_t n_bytes, int repeats) {
  const size_t n = n_bytes / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  pool.run([&](int ith, int nth) {  // first touch by the thread that will read it
    int64_t b, e;
    split_range((int64_t)n, ith, nth, &b, &e);
    for (int64_t i = b; i < e; ++i) buf[i] = (uint64_t)i;
  });
  std::vector<uint64_t> sums(pool.size(), 0);
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.run([&](int ith, int nth) {
      int64_t b, e;
      split_range((int64_t)n, ith, nth, &b, &e);
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = b;
      for (; i + 4 <= e; i += 4) { s0 += buf[i]; s1 += buf[i + 1]; s2 += buf[i + 2]; s3 += buf[i + 3]; }
      for (; i < e; ++i) s0 += buf[i];
      sums[ith] += s0 + s1 + s2 + s3;
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt > 0 && n_bytes / dt > best) best = n_bytes / dt;
  }
  volatile uint64_t sink = 0;
  for (uint64_t s : sums) sink = sink + s;  // keep the reads
  return best;
}

}  // namespace qc

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "qwen-cpu SIMD kernels";
  qc::bind_dispatch(m);
  qc::bind_pool_and_matmul(m);
  m.def("measure_read_bandwidth", [](qc::ThreadPool& pool, size_t n_bytes, int repeats) {
    py::gil_scoped_release nogil;
    return qc::measure_read_bandwidth(pool, n_bytes, repeats);
  }, py::arg("pool"), py::arg("n_bytes") = size_t(1) << 30, py::arg("repeats") = 5,
     "Best read bandwidth (bytes/s) streaming n_bytes with all the pool's threads.");
  qc::bind_quants(m);
  qc::bind_ops(m);
  qc::bind_model(m);
  qc::bind_quantize(m);
}
