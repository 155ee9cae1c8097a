// Python binding of the C++ model: Python passes the config and zero-copy views of the GGUF
// tensors; the binding keeps those arrays alive as long as the model.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common.h"
#include "../model.h"

namespace qc {
namespace {

struct PyModel {
  py::list keep_alive;  // the numpy views the weights point into
  std::unique_ptr<Model> model;
};

// tensors: name -> (array, ggml type, rows, cols); the array must cover rows * row_bytes(type, cols) bytes.
Tensor tensor_from(const py::dict& tensors, const std::string& name, py::list& keep, bool optional) {
  if (!tensors.contains(name.c_str())) {
    if (optional) return Tensor{};
    throw std::invalid_argument("missing tensor " + name);
  }
  const py::tuple t = tensors[name.c_str()].cast<py::tuple>();
  require(t.size() == 4, name + ": expected (array, type, rows, cols)");
  const py::array arr = t[0].cast<py::array>();
  Tensor out;
  out.type = t[1].cast<int32_t>();
  out.rows = t[2].cast<int64_t>();
  out.cols = t[3].cast<int64_t>();
  require(out.rows > 0 && out.cols > 0, name + ": empty tensor");
  require(type_info(out.type).block_elems != 0, name + ": unknown tensor type " + std::to_string(out.type));
  require(out.cols % type_info(out.type).block_elems == 0,
          name + ": row length " + std::to_string(out.cols) + " is not a multiple of the block size");
  require(arr.flags() & py::array::c_style, name + ": array must be C-contiguous");
  const size_t need = row_bytes(out.type, out.cols) * (size_t)out.rows;
  require((size_t)arr.nbytes() >= need, name + ": array holds " + std::to_string(arr.nbytes()) + " bytes, the tensor needs " +
                                            std::to_string(need));
  out.data = arr.data();
  keep.append(arr);
  return out;
}

using i32_array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

// Runs fn(should_stop) with the GIL released. should_stop is polled between layers: every 20 ms it
// takes the GIL and lets Python run its signal handlers (Ctrl-C), so a long prefill stops within a
// bounded time; a handler that raised is raised here (KeyboardInterrupt).
void run_interruptible(const std::function<void(const std::function<bool()>&)>& fn) {
  bool interrupted = false;
  auto last_check = std::chrono::steady_clock::now();
  const std::function<bool()> should_stop = [&]() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_check < std::chrono::milliseconds(20)) return false;
    last_check = now;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) interrupted = true;
    return interrupted;
  };
  {
    py::gil_scoped_release nogil;
    fn(should_stop);
  }
  if (interrupted) throw py::error_already_set();
}

}  // namespace

void bind_model(py::module_& m) {
  py::class_<PyModel>(m, "Model")
      .def(py::init([](const py::dict& cfg, const py::dict& tensors, int n_threads) {
             auto pm = std::make_unique<PyModel>();
             ModelConfig c;
             c.n_layer = cfg["n_layer"].cast<int>();
             c.n_embd = cfg["n_embd"].cast<int>();
             c.n_ff = cfg["n_ff"].cast<int>();
             c.n_head = cfg["n_head"].cast<int>();
             c.n_kv_head = cfg["n_kv_head"].cast<int>();
             c.head_dim = cfg["head_dim"].cast<int>();
             c.n_vocab = cfg["n_vocab"].cast<int>();
             c.rms_eps = cfg["rms_eps"].cast<float>();
             c.n_ctx = cfg["n_ctx"].cast<int64_t>();
             c.n_batch = cfg["n_batch"].cast<int>();
             c.kv = KvTypes{cfg["kv_k"].cast<int32_t>(), cfg["kv_v"].cast<int32_t>()};  // ggml type ids
             if (cfg.contains("n_seq")) c.n_seq = cfg["n_seq"].cast<int>();
             if (cfg.contains("repack")) c.repack = cfg["repack"].cast<bool>();
             if (cfg.contains("release_repacked_source")) c.release_repacked_source = cfg["release_repacked_source"].cast<bool>();
             c.rope.head_dim = c.head_dim;
             c.rope.freq_base = cfg["rope_freq_base"].cast<float>();
             c.rope.neox = cfg["rope_neox"].cast<bool>();
             c.rope.freq_scale = cfg["rope_freq_scale"].cast<float>();
             c.rope.ext_factor = cfg["rope_ext_factor"].cast<float>();
             c.rope.attn_factor = cfg["rope_attn_factor"].cast<float>();
             c.rope.beta_fast = cfg["rope_beta_fast"].cast<float>();
             c.rope.beta_slow = cfg["rope_beta_slow"].cast<float>();
             c.rope.n_ctx_orig = cfg["rope_n_ctx_orig"].cast<int>();
             ModelWeights w;
             py::list& keep = pm->keep_alive;
             w.tok_embd = tensor_from(tensors, "token_embd.weight", keep, false);
             w.output_norm = tensor_from(tensors, "output_norm.weight", keep, false);
             w.output = tensors.contains("output.weight") ? tensor_from(tensors, "output.weight", keep, false) : w.tok_embd;
             for (int l = 0; l < c.n_layer; ++l) {
               const std::string p = "blk." + std::to_string(l) + ".";
               LayerWeights L;
               L.attn_norm = tensor_from(tensors, p + "attn_norm.weight", keep, false);
               L.wq = tensor_from(tensors, p + "attn_q.weight", keep, false);
               L.wk = tensor_from(tensors, p + "attn_k.weight", keep, false);
               L.wv = tensor_from(tensors, p + "attn_v.weight", keep, false);
               L.bq = tensor_from(tensors, p + "attn_q.bias", keep, true);
               L.bk = tensor_from(tensors, p + "attn_k.bias", keep, true);
               L.bv = tensor_from(tensors, p + "attn_v.bias", keep, true);
               L.wo = tensor_from(tensors, p + "attn_output.weight", keep, false);
               L.ffn_norm = tensor_from(tensors, p + "ffn_norm.weight", keep, false);
               L.w_gate = tensor_from(tensors, p + "ffn_gate.weight", keep, false);
               L.w_up = tensor_from(tensors, p + "ffn_up.weight", keep, false);
               L.w_down = tensor_from(tensors, p + "ffn_down.weight", keep, false);
               w.layers.push_back(L);
             }
             pm->model = std::make_unique<Model>(c, std::move(w), n_threads);
             return pm;
           }),
           py::arg("config"), py::arg("tensors"), py::arg("n_threads") = 0)
      .def("forward",
           [](PyModel& self, py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens, int64_t pos,
              bool all_logits, bool want_logits, bool want_hidden) {
             // Returns (logits (n|1, n_vocab) or None, hidden (n, n_embd) or None). Raises
             // KeyboardInterrupt if a signal handler raised while the step ran.
             require(tokens.ndim() == 1 && tokens.shape(0) > 0, "forward: tokens must be a non-empty 1-D array");
             const ModelConfig& c = self.model->config();
             const int64_t n = tokens.shape(0);
             py::object logits = py::none(), hidden = py::none();
             float* lp = nullptr;
             float* hp = nullptr;
             if (want_logits) {
               py::array_t<float> a({all_logits ? n : (int64_t)1, (int64_t)c.n_vocab});
               lp = a.mutable_data();
               logits = a;
             }
             if (want_hidden) {
               py::array_t<float> a({n, (int64_t)c.n_embd});
               hp = a.mutable_data();
               hidden = a;
             }
             const int32_t* tp = tokens.data();
             run_interruptible([&](const std::function<bool()>& should_stop) {
               self.model->forward(tp, n, pos, lp, all_logits, hp, should_stop);
             });
             return py::make_tuple(logits, hidden);
           },
           py::arg("tokens"), py::arg("pos"), py::arg("all_logits") = false, py::arg("want_logits") = true,
           py::arg("want_hidden") = false)
      .def("forward_batch",
           [](PyModel& self, i32_array tokens, i32_array pos, i32_array seq,
              py::array_t<int64_t, py::array::c_style | py::array::forcecast> logit_rows, bool want_hidden) {
             // Model::forward_batch. Returns (logits (len(logit_rows), n_vocab), hidden (n, n_embd) or None).
             require(tokens.ndim() == 1 && tokens.shape(0) > 0, "forward_batch: tokens must be a non-empty 1-D array");
             const int64_t n = tokens.shape(0);
             require(pos.ndim() == 1 && pos.shape(0) == n && seq.ndim() == 1 && seq.shape(0) == n,
                     "forward_batch: tokens, pos and seq must be 1-D arrays of the same length");
             require(logit_rows.ndim() == 1, "forward_batch: logit_rows must be a 1-D array");
             const ModelConfig& c = self.model->config();
             const int64_t n_logits = logit_rows.shape(0);
             py::array_t<float> logits({n_logits, (int64_t)c.n_vocab});
             py::object hidden = py::none();
             float* hp = nullptr;
             if (want_hidden) {
               py::array_t<float> a({n, (int64_t)c.n_embd});
               hp = a.mutable_data();
               hidden = a;
             }
             float* lp = logits.mutable_data();
             run_interruptible([&](const std::function<bool()>& should_stop) {
               self.model->forward_batch(tokens.data(), pos.data(), seq.data(), n, logit_rows.data(), n_logits, lp, hp,
                                         should_stop);
             });
             return py::make_tuple(logits, hidden);
           },
           py::arg("tokens"), py::arg("pos"), py::arg("seq"), py::arg("logit_rows"), py::arg("want_hidden") = false)
      .def("copy_slot",
           [](PyModel& self, int src, int dst, int64_t n_pos) {
             py::gil_scoped_release nogil;
             self.model->copy_slot(src, dst, n_pos);
           },
           py::arg("src"), py::arg("dst"), py::arg("n_pos"))
      .def("read_kv",
           [](PyModel& self, int slot, int64_t n_pos) {
             // Model::kv_rows: slot's keys and values of positions 0 .. n_pos-1, (kv_rows_bytes,) uint8.
             require(n_pos >= 0 && n_pos <= self.model->config().n_ctx, "read_kv: n_pos outside 0..n_ctx");
             py::array_t<uint8_t> out((py::ssize_t)self.model->kv_rows_bytes(n_pos));
             uint8_t* p = out.mutable_data();
             py::gil_scoped_release nogil;
             self.model->kv_rows(slot, n_pos, p, false);
             return out;
           },
           py::arg("slot"), py::arg("n_pos"))
      .def("write_kv",
           [](PyModel& self, int slot, int64_t n_pos, py::array_t<uint8_t, py::array::c_style> data) {
             // The inverse of read_kv: data must hold exactly kv_rows_bytes(n_pos) bytes.
             require(n_pos >= 0 && n_pos <= self.model->config().n_ctx, "write_kv: n_pos outside 0..n_ctx");
             require(data.ndim() == 1 && (size_t)data.shape(0) == self.model->kv_rows_bytes(n_pos),
                     "write_kv: data must be a 1-D uint8 array of " + std::to_string(self.model->kv_rows_bytes(n_pos)) + " bytes");
             const uint8_t* p = data.data();
             py::gil_scoped_release nogil;
             self.model->kv_rows(slot, n_pos, const_cast<uint8_t*>(p), true);
           },
           py::arg("slot"), py::arg("n_pos"), py::arg("data"))
      .def_property_readonly("n_seq", [](const PyModel& s) { return s.model->config().n_seq; })
      .def_property_readonly("kv_cache_bytes", [](const PyModel& s) { return s.model->kv_cache_bytes(); })
      .def_property_readonly("repacked_bytes", [](const PyModel& s) { return s.model->repacked_bytes(); })
      .def_property_readonly("n_threads", [](const PyModel& s) { return s.model->n_threads(); })
      .def_property_readonly("n_ctx", [](const PyModel& s) { return s.model->config().n_ctx; });
}

}  // namespace qc
