// Bindings of the non-matmul kernels and drivers (kernels.h, ops.h) with the selected kernel
// table. Each returns a new float32 array (float16 for fp32_to_fp16) and leaves its inputs alone;
// shape mismatches raise ValueError.
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "../hadamard.h"
#include "../kernels.h"
#include "../ops.h"
#include "../threadpool.h"

namespace qc {
namespace {

std::vector<py::ssize_t> shape_of(const py::array& a) { return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()); }

bool same_shape(const py::array& a, const py::array& b) { return shape_of(a) == shape_of(b); }

// The last axis of a (the row length) and the number of rows before it.
void rows_of(const py::array& a, const char* what, int64_t* rows, int64_t* n) {
  require(a.ndim() >= 1, std::string(what) + ": expected an array of at least one dimension");
  *n = a.shape(a.ndim() - 1);
  *rows = *n ? (int64_t)a.size() / *n : 0;
}

bool is_float16(const py::array& a) { return a.dtype().kind() == 'f' && a.dtype().itemsize() == 2; }

RopeParams rope_params(int head_dim, float freq_base, bool neox, float freq_scale, float ext_factor, float attn_factor,
                       float beta_fast, float beta_slow, int n_ctx_orig) {
  RopeParams p{head_dim, freq_base, neox};
  p.freq_scale = freq_scale;
  p.ext_factor = ext_factor;
  p.attn_factor = attn_factor;
  p.beta_fast = beta_fast;
  p.beta_slow = beta_slow;
  p.n_ctx_orig = n_ctx_orig;
  return p;
}

// The keyword arguments shared by rope() and rope_tables(), after freq_base and neox.
#define QC_ROPE_KWARGS                                                                            \
  py::arg("freq_scale") = 1.0f, py::arg("ext_factor") = 0.0f, py::arg("attn_factor") = 1.0f,      \
      py::arg("beta_fast") = 32.0f, py::arg("beta_slow") = 1.0f, py::arg("n_ctx_orig") = 0

}  // namespace

void bind_ops(py::module_& m) {
  m.def("rmsnorm", [](f32_array x, f32_array w, float eps) {
    int64_t rows, n;
    rows_of(x, "rmsnorm", &rows, &n);
    require(n >= 1, "rmsnorm: rows must not be empty");
    require(w.ndim() == 1 && w.shape(0) == n, "rmsnorm: w must be 1-D with " + std::to_string(n) + " elements");
    f32_array y(shape_of(x));
    const float *xp = x.data(), *wp = w.data();
    float* yp = y.mutable_data();
    const Kernels& K = kernels();
    {
      py::gil_scoped_release nogil;
      for (int64_t r = 0; r < rows; ++r) K.rmsnorm(yp + r * n, xp + r * n, wp, n, eps);
    }
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("eps") = 1e-6f,
     "x / sqrt(mean(x^2) + eps) * w along the last axis of x (n,) or (..., n); w (n,).");

  m.def("softmax", [](f32_array x) {
    int64_t rows, n;
    rows_of(x, "softmax", &rows, &n);
    f32_array y(shape_of(x));
    float* yp = y.mutable_data();
    std::copy(x.data(), x.data() + x.size(), yp);
    const Kernels& K = kernels();
    {
      py::gil_scoped_release nogil;
      for (int64_t r = 0; r < rows; ++r) K.softmax(yp + r * n, n);
    }
    return y;
  }, py::arg("x"), "Softmax along the last axis.");

  m.def("swiglu", [](f32_array gate, f32_array up) {
    require(same_shape(gate, up), "swiglu: gate and up must have the same shape");
    f32_array y(shape_of(gate));
    const float *gp = gate.data(), *up_ = up.data();
    float* yp = y.mutable_data();
    const int64_t n = gate.size();
    const Kernels& K = kernels();
    {
      py::gil_scoped_release nogil;
      K.swiglu(yp, gp, up_, n);
    }
    return y;
  }, py::arg("gate"), py::arg("up"), "silu(gate) * up, elementwise.");

  m.def("add", [](f32_array a, f32_array b) {
    require(same_shape(a, b), "add: a and b must have the same shape");
    f32_array y(shape_of(a));
    const float *ap = a.data(), *bp = b.data();
    float* yp = y.mutable_data();
    const int64_t n = a.size();
    const Kernels& K = kernels();
    {
      py::gil_scoped_release nogil;
      K.add(yp, ap, bp, n);
    }
    return y;
  }, py::arg("a"), py::arg("b"), "a + b, elementwise.");

  m.def("rope_tables", [](int head_dim, int64_t pos0, int64_t n_pos, float freq_base, float freq_scale, float ext_factor,
                          float attn_factor, float beta_fast, float beta_slow, int n_ctx_orig,
                          const py::object& freq_factors_arg) {
    require(head_dim > 0 && head_dim % 2 == 0, "rope_tables: head_dim must be positive and even");
    require(pos0 >= 0 && n_pos >= 0, "rope_tables: pos0 and n_pos must be non-negative");
    RopeParams p = rope_params(head_dim, freq_base, true, freq_scale, ext_factor, attn_factor, beta_fast,
                               beta_slow, n_ctx_orig);
    f32_array freq_factors;  // kept alive for rope_tables
    if (!freq_factors_arg.is_none()) {
      freq_factors = freq_factors_arg.cast<f32_array>();
      require(freq_factors.ndim() == 1 && freq_factors.shape(0) == head_dim / 2,
              "rope_tables: freq_factors must be 1-D with head_dim/2 elements");
      p.freq_factors = freq_factors.data();
    }
    f32_array c({n_pos, (int64_t)head_dim / 2}), s({n_pos, (int64_t)head_dim / 2});
    rope_tables(p, pos0, n_pos, c.mutable_data(), s.mutable_data());
    return py::make_tuple(c, s);
  }, py::arg("head_dim"), py::arg("pos0"), py::arg("n_pos"), py::kw_only(), py::arg("freq_base"), QC_ROPE_KWARGS,
     py::arg("freq_factors") = py::none(),
     "(cos, sin), each (n_pos, head_dim/2), for positions pos0 .. pos0+n_pos-1, YaRN and attn_factor applied;\n"
     "freq_factors (head_dim/2) divide each pair's frequency (llama3 rope_freqs).");

  m.def("rope", [](f32_array x, int64_t pos0, float freq_base, bool neox, float freq_scale, float ext_factor,
                   float attn_factor, float beta_fast, float beta_slow, int n_ctx_orig, std::shared_ptr<ThreadPool> pool) {
    require(x.ndim() == 3, "rope: x must be (n_tok, n_head, head_dim)");
    const int64_t n_tok = x.shape(0);
    const int n_head = (int)x.shape(1), head_dim = (int)x.shape(2);
    require(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be positive and even");
    require(pos0 >= 0, "rope: pos0 must be non-negative");
    const RopeParams p = rope_params(head_dim, freq_base, neox, freq_scale, ext_factor, attn_factor, beta_fast,
                                     beta_slow, n_ctx_orig);
    std::vector<float> cos((size_t)n_tok * (head_dim / 2)), sin(cos.size());
    rope_tables(p, pos0, n_tok, cos.data(), sin.data());
    f32_array y(shape_of(x));
    float* yp = y.mutable_data();
    std::copy(x.data(), x.data() + x.size(), yp);
    if (n_head == 0) return y;
    const Kernels& K = kernels();
    ThreadPool single(1);
    ThreadPool& tp = pool ? *pool : single;
    {
      py::gil_scoped_release nogil;
      rope_apply(tp, K, yp, n_tok, n_head, head_dim, cos.data(), sin.data(), neox);
    }
    return y;
  }, py::arg("x"), py::arg("pos0"), py::kw_only(), py::arg("freq_base"), py::arg("neox"), QC_ROPE_KWARGS,
     py::arg("pool") = nullptr,
     "x (n_tok, n_head, head_dim) rotated for positions pos0 .. pos0+n_tok-1 (a new array).");

  m.def("attention", [](ThreadPool& pool, f32_array q, py::array k_cache, py::array v_cache, int64_t pos0, int n_head,
                        int n_kv_head) {
    require(q.ndim() == 3, "attention: q must be (n_tok, n_head, head_dim)");
    require(k_cache.ndim() == 3 && same_shape(k_cache, v_cache),
            "attention: k_cache and v_cache must both be (n_kv_head, n_ctx, head_dim)");
    const bool f16 = is_float16(k_cache);
    require(f16 == is_float16(v_cache), "attention: k_cache and v_cache must have the same dtype");
    const int64_t n_tok = q.shape(0), n_ctx = k_cache.shape(1);
    const int head_dim = (int)q.shape(2);
    require(q.shape(1) == n_head, "attention: q has " + std::to_string(q.shape(1)) + " heads, n_head is " +
                                      std::to_string(n_head));
    require(n_kv_head > 0 && n_head > 0 && n_head % n_kv_head == 0,
            "attention: n_head must be a positive multiple of n_kv_head");
    require(k_cache.shape(0) == n_kv_head && k_cache.shape(2) == head_dim,
            "attention: caches must be (n_kv_head, n_ctx, head_dim) = (" + std::to_string(n_kv_head) + ", n_ctx, " +
                std::to_string(head_dim) + ")");
    require(head_dim > 0, "attention: head_dim must be positive");
    require(pos0 >= 0 && pos0 + n_tok <= n_ctx, "attention: positions pos0 .. pos0+n_tok-1 exceed the cache");
    py::array kc, vc;
    if (f16) {
      const py::object contiguous = py::module_::import("numpy").attr("ascontiguousarray");
      const py::dtype half("float16");  // native byte order, whatever the input's
      kc = contiguous(k_cache, half);
      vc = contiguous(v_cache, half);
    } else {
      kc = f32_array::ensure(k_cache);
      vc = f32_array::ensure(v_cache);
      require(kc && vc, "attention: caches must be float16 or convertible to float32");
    }
    f32_array out({n_tok, (int64_t)n_head, (int64_t)head_dim});
    std::vector<float> scratch(attention_scratch_floats(pool.size(), n_head, n_kv_head, head_dim, pos0 + n_tok));
    const float* qp = q.data();
    const void *kp = kc.data(), *vp = vc.data();
    float* op = out.mutable_data();
    const Kernels& K = kernels();
    {
      py::gil_scoped_release nogil;
      const int32_t type = f16 ? GGML_F16 : GGML_F32;
      attention(pool, K, op, qp, kp, vp, KvTypes{type, type}, n_tok, pos0, n_head, n_kv_head, head_dim, n_ctx, scratch.data());
    }
    return out;
  }, py::arg("pool"), py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("pos0"), py::arg("n_head"),
     py::arg("n_kv_head"),
     "Causal GQA attention (n_tok, n_head, head_dim) of q at positions pos0.. over caches (n_kv_head, n_ctx, "
     "head_dim), float16 or float32, holding positions [0, pos0+n_tok).");

  m.def("fp32_to_fp16", [](f32_array x) {
    py::array y(py::dtype("float16"), shape_of(x));
    const float* xp = x.data();
    half_t* yp = static_cast<half_t*>(y.mutable_data());
    const int64_t n = x.size();
    const Kernels& K = kernels();
    {
      py::gil_scoped_release nogil;
      K.fp32_to_fp16_row(xp, yp, n);
    }
    return y;
  }, py::arg("x"), "x rounded to float16 (round to nearest even), as a numpy float16 array.");

  m.def("hadamard", [](f32_array x, std::shared_ptr<ThreadPool> pool) {
    int64_t rows, n;
    rows_of(x, "hadamard", &rows, &n);
    require(n >= 4 && (n & (n - 1)) == 0, "hadamard: the last axis must be a power of two >= 4");
    f32_array y(shape_of(x));
    float* yp = y.mutable_data();
    std::copy(x.data(), x.data() + x.size(), yp);
    {
      py::gil_scoped_release nogil;
      if (pool) hadamard_chunks(*pool, yp, rows, (int)n);
      else hadamard_chunks(yp, rows, (int)n);
    }
    return y;
  }, py::arg("x"), py::arg("pool") = nullptr,
     "Each row of x (..., n), n a power of two, times the orthonormal Walsh-Hadamard matrix (a new array).");
  m.def("kv_rotation", &kv_rotation, py::arg("type"), py::arg("head_dim"), py::arg("v"),
        "Width of the Hadamard rotation of a K (v false) or V cache of the GGML type with head_dim (0: none).");
}

}  // namespace qc
