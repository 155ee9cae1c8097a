// Python binding of the C++ model: Python passes the config and zero-copy views of the GGUF
// tensors; the binding keeps those arrays alive as long as the model.
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>

#include "common.h"
#include "../model.h"

namespace qc {
namespace {

struct PyModel {
  py::list keep_alive;  // the numpy views the weights point into
  std::unique_ptr<Model> model;
};

// tensors: name -> (array, ggml type, rows, cols); the array must cover rows * row_bytes(type, cols) bytes.
Tensor tensor_from(const py::dict& tensors, const std::string& name, py::list& keep) {
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
  // The typed config (no dynamic attributes: a misspelt name raises AttributeError where it is set).
  // The file's hyper-parameters are named as in qwen_cpu/config.py's ModelConfig, which sets them
  // by name; the rest are the engine's run settings.
  py::class_<ModelConfig> cfg(m, "ModelConfig");
  cfg.def(py::init<>())
      .def_readwrite("n_layer", &ModelConfig::n_layer)
      .def_readwrite("n_embd", &ModelConfig::n_embd)
      .def_readwrite("n_ff", &ModelConfig::n_ff)
      .def_readwrite("n_head", &ModelConfig::n_head)
      .def_readwrite("n_kv_head", &ModelConfig::n_kv_head)
      .def_readwrite("head_dim", &ModelConfig::head_dim)
      .def_readwrite("n_vocab", &ModelConfig::n_vocab)
      .def_readwrite("rms_eps", &ModelConfig::rms_eps)
      .def_readwrite("n_ctx", &ModelConfig::n_ctx)
      .def_readwrite("n_seq", &ModelConfig::n_seq)
      .def_readwrite("n_batch", &ModelConfig::n_batch)
      .def_readwrite("repack", &ModelConfig::repack)
      .def_readwrite("release_repacked_source", &ModelConfig::release_repacked_source)
      .def_readwrite("huge_pages", &ModelConfig::huge_pages);
  // the KV cache's element types (ggml type ids; ops.h KvTypes)
  cfg.def_property("kv_k", [](const ModelConfig& c) { return c.kv.k; }, [](ModelConfig& c, int32_t t) { c.kv.k = t; });
  cfg.def_property("kv_v", [](const ModelConfig& c) { return c.kv.v; }, [](ModelConfig& c, int32_t t) { c.kv.v = t; });
  // the mixture of experts (moe.h MoeConfig), under config.py's names
#define QC_MOE_FIELD(py_name, field) \
  cfg.def_property(py_name, [](const ModelConfig& c) { return c.moe.field; }, \
                   [](ModelConfig& c, decltype(MoeConfig::field) v) { c.moe.field = v; })
  QC_MOE_FIELD("n_expert", n_expert);
  QC_MOE_FIELD("n_expert_used", n_expert_used);
  QC_MOE_FIELD("n_ff_exp", n_ff_exp);
  QC_MOE_FIELD("n_ff_shexp", n_ff_shexp);
  QC_MOE_FIELD("expert_weights_norm", norm_topk);
#undef QC_MOE_FIELD
  // RoPE's fields under their GGUF-derived names (rope_*), as config.py's ModelConfig has them
#define QC_ROPE_FIELD(py_name, field) \
  cfg.def_property(py_name, [](const ModelConfig& c) { return c.rope.field; }, \
                   [](ModelConfig& c, decltype(RopeParams::field) v) { c.rope.field = v; })
  QC_ROPE_FIELD("rope_freq_base", freq_base);
  QC_ROPE_FIELD("rope_neox", neox);
  QC_ROPE_FIELD("rope_freq_scale", freq_scale);
  QC_ROPE_FIELD("rope_ext_factor", ext_factor);
  QC_ROPE_FIELD("rope_attn_factor", attn_factor);
  QC_ROPE_FIELD("rope_beta_fast", beta_fast);
  QC_ROPE_FIELD("rope_beta_slow", beta_slow);
  QC_ROPE_FIELD("rope_n_ctx_orig", n_ctx_orig);
#undef QC_ROPE_FIELD

  // The tensors the forward pass knows (model.h kTensorSlots): [(gguf name, per_layer, shape, optional)],
  // shape in dimension names (numpy order), for qwen_cpu/arch.py's tests.
  m.def("huge_pages_available", &huge_pages_available,
        "Whether the model's copies can be in transparent huge pages here (Linux, THP not 'never').");
  m.def("tensor_slots", [] {
    py::list out;
    for (int s = 0; s < kNumTensorSlots; ++s) {
      const TensorSlot& t = kTensorSlots[s];
      py::list shape;
      shape.append(dim_name(t.rows));
      if (t.experts) shape.insert(0, "n_expert");
      if (t.cols != Dim::none) shape.append(dim_name(t.cols));
      out.append(py::make_tuple(t.name, t.layer != nullptr, py::tuple(shape), t.optional));
    }
    return out;
  });

  py::class_<PyModel>(m, "Model")
      .def(py::init([](const ModelConfig& c, const py::dict& tensors, int n_threads) {
             auto pm = std::make_unique<PyModel>();
             require(c.n_layer > 0, "model config: n_layer must be positive");
             ModelWeights w;
             w.layers.resize(c.n_layer);
             py::list& keep = pm->keep_alive;
             std::unordered_set<std::string> used;  // any other name is one the forward pass does not know
             for (int s = 0; s < kNumTensorSlots; ++s) {
               const TensorSlot& slot = kTensorSlots[s];
               for (int l = 0; l < (slot.global ? 1 : c.n_layer); ++l) {
                 const std::string name = slot.global ? slot.name : "blk." + std::to_string(l) + "." + slot.name;
                 if (!tensors.contains(name.c_str())) continue;  // Model checks what must be present
                 (slot.global ? w.*slot.global : w.layers[l].*slot.layer) = tensor_from(tensors, name, keep);
                 used.insert(name);
               }
             }
             for (const auto& item : tensors) {
               const std::string name = py::str(item.first);
               require(used.count(name), "tensor " + name + " is not one the forward pass of " +
                                             std::to_string(c.n_layer) + " blocks uses");
             }
             if (!w.output.data) w.output = w.tok_embd;  // tied embeddings
             pm->model = std::make_unique<Model>(c, std::move(w), n_threads);
             return pm;
           }),
           py::arg("config"), py::arg("tensors"), py::arg("n_threads") = 0)
      .def("forward",
           [](PyModel& self, py::array_t<int32_t, py::array::c_style | py::array::forcecast> tokens, int64_t pos,
              bool all_logits, bool want_logits, bool want_hidden, bool alone) {
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
               self.model->forward(tp, n, pos, lp, all_logits, hp, should_stop, alone);
             });
             return py::make_tuple(logits, hidden);
           },
           py::arg("tokens"), py::arg("pos"), py::arg("all_logits") = false, py::arg("want_logits") = true,
           py::arg("want_hidden") = false, py::arg("alone") = false)
      .def("forward_batch",
           [](PyModel& self, i32_array tokens, i32_array pos, i32_array seq,
              py::array_t<int64_t, py::array::c_style | py::array::forcecast> logit_rows, bool want_hidden,
              py::object alone) {
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
             // alone: None or (n) flags (Model::forward_batch)
             py::array_t<uint8_t, py::array::c_style | py::array::forcecast> flags;
             if (!alone.is_none()) {
               flags = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(alone);
               require(flags && flags.ndim() == 1 && flags.shape(0) == n, "forward_batch: alone must be None or n flags");
             }
             const uint8_t* ap = alone.is_none() ? nullptr : flags.data();
             float* lp = logits.mutable_data();
             run_interruptible([&](const std::function<bool()>& should_stop) {
               self.model->forward_batch(tokens.data(), pos.data(), seq.data(), n, logit_rows.data(), n_logits, lp, hp,
                                         should_stop, ap);
             });
             return py::make_tuple(logits, hidden);
           },
           py::arg("tokens"), py::arg("pos"), py::arg("seq"), py::arg("logit_rows"), py::arg("want_hidden") = false,
           py::arg("alone") = py::none())
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
      .def_property_readonly("kv_rotation", [](const PyModel& s) {
        return std::make_pair(s.model->k_rotation(), s.model->v_rotation());
      }, "(K, V) widths of the Hadamard rotation the cache holds its rows in (0: none; hadamard.h).")
      .def_property_readonly("repacked_bytes", [](const PyModel& s) { return s.model->repacked_bytes(); })
      .def_property_readonly("repacks_pending", [](const PyModel& s) { return s.model->repacks_pending(); },
                             "Matrices whose repacked copy the first decode step will make (0 once made).")
      .def_property_readonly("n_threads", [](const PyModel& s) { return s.model->n_threads(); })
      .def_property_readonly("n_ctx", [](const PyModel& s) { return s.model->config().n_ctx; });
}

}  // namespace qc
