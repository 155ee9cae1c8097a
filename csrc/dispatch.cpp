// CPU probe and kernel-table selection: the CPU is probed once (probe), every table this CPU runs
// is built once from the registrations of its instruction set (Tables, the one place that says
// which table builds on which), and one is selected (the best, or QWEN_CPU_ISA). What a table runs
// per weight type: `qwen-cpu info --kernels`. Compiled without any instruction-set flags: nothing
// here may execute an instruction the running CPU lacks.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define QC_X86 1
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace qc {

namespace {

// The features (kernels.h) and their names, for bug reports.
struct Probe {
  CpuFeatures f;
  std::string text;
};

#ifdef QC_X86
uint64_t read_xcr0() {
  uint32_t eax, edx;
  // xgetbv by opcode, so this file needs no -mxsave; only called when OSXSAVE is set.
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
}
#endif

Probe probe() {
  Probe p;
  CpuFeatures& f = p.f;
#ifdef QC_X86
  bool os_avx = false, os_avx512 = false;
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    f.sse42 = c & (1u << 20);
    f.popcnt = c & (1u << 23);
    f.fma = c & (1u << 12);
    f.f16c = c & (1u << 29);
    f.avx = c & (1u << 28);
    const bool osxsave = c & (1u << 27);
    if (osxsave) {
      const uint64_t xcr0 = read_xcr0();
      os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM state saved by the OS
      os_avx512 = (xcr0 & 0xe6) == 0xe6;        // plus opmask and ZMM state
    }
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512vnni = c & (1u << 11);
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avxvnni = a & (1u << 4);
  if (__get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163 &&  // "AuthenticAMD"
      __get_cpuid(1, &a, &b, &c, &d))
    f.avx512_halves = ((a >> 8) & 0xf) + ((a >> 20) & 0xff) == 0x19;
  if (!os_avx) f.avx = f.avx2 = f.fma = f.f16c = f.avxvnni = false;
  if (!os_avx512) f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512vnni = false;
  f.avx512_halves = f.avx512_halves && f.avx512f;
  const std::pair<const char*, bool> names[] = {
      {"sse4.2", f.sse42}, {"popcnt", f.popcnt}, {"avx", f.avx}, {"avx2", f.avx2}, {"fma", f.fma},
      {"f16c", f.f16c},
      {"avx512f", f.avx512f}, {"avx512bw", f.avx512bw}, {"avx512vl", f.avx512vl},
      {"avx512dq", f.avx512dq}, {"avx512vnni", f.avx512vnni}, {"avxvnni", f.avxvnni},
      {"avx512-halves", f.avx512_halves}};
  for (auto& n : names)
    if (n.second) p.text += std::string(p.text.empty() ? "" : " ") + n.first;
#endif
#if defined(__aarch64__)
  f.neon = true;  // Advanced SIMD is part of the ARMv8-A baseline
#if defined(__linux__)
  f.dotprod = getauxval(AT_HWCAP) & (1ul << 20);  // HWCAP_ASIMDDP
#elif defined(__APPLE__)
  f.dotprod = true;  // every Apple silicon core has FEAT_DotProd
#endif
  p.text = f.dotprod ? "neon dotprod" : "neon";
#endif
  return p;
}

const Probe& features() {
  static const Probe p = probe();
  return p;
}

// The test twin of avxvnni (csrc/avx2/simd.h): tested wherever it runs, never selected by default.
constexpr const char* kTestTwin = "avxvnni_evex";

// A SIMD table starts as a copy of the table below it for whatever it does not implement itself
// (the dequantizers of every path are the scalar ones). From the scalar table it takes the
// vec_dots but not the gemms or gemvs: those wrap the scalar vec_dot, and a SIMD path that has no
// gemm or gemv of its own for a type runs the driver's loop over its own vec_dot instead.
Kernels start_from(const Kernels& below, const char* isa) {
  Kernels t = below;
  t.isa = isa;
  if (std::strcmp(below.isa, "scalar") == 0)
    for (WeightKernels& w : t.weight) {
      w.gemm = nullptr;
      w.gemm_name = nullptr;
      w.gemm_act = -1;
      w.gemv = nullptr;
      w.gemv_name = nullptr;
      w.gemv_act = -1;
      w.gemv_rows = nullptr;
      w.gemv_rows_streams = false;
    }
  return t;
}

#ifdef QWEN_HAVE_AVX512
// The decode kernels of `from` (gemv, gemv_rows, repacked layout) for these types, in place of t's.
void keep_decode(Kernels& t, const Kernels& from, std::initializer_list<int32_t> types) {
  for (int32_t type : types) {
    const WeightKernels& w = from.weight[type];
    WeightKernels& d = t.weight[type];
    d.gemv = w.gemv, d.gemv_name = w.gemv_name, d.gemv_act = w.gemv_act;
    d.gemv_rows = w.gemv_rows, d.gemv_rows_streams = w.gemv_rows_streams, d.layout = w.layout;
    if (w.layout != QC_LAYOUT_STORED) {  // the layout's decode; its prefill form follows t's gemm (set_gemm)
      const LayoutKernels& f = from.layout[w.layout];
      LayoutKernels& l = t.layout[w.layout];
      l.gemv = f.gemv, l.gemv_name = f.gemv_name, l.gemv_act = f.gemv_act;
      l.gemv_rows = f.gemv_rows, l.gemv_rows_first = f.gemv_rows_first;
    }
  }
}
#endif

// Every table this build has and this CPU runs, in the order they build on each other.
struct Tables {
  std::vector<Kernels> list;  // runnable on this CPU, best last (but for the test twin)
  size_t best = 0;            // the default: the last one that is not the test twin
  Tables() {
    const CpuFeatures& f = features().f;
    (void)f;
    Kernels scalar;
    scalar.isa = "scalar";
    register_quant_kernels_scalar(scalar);
    register_op_kernels_scalar(scalar);
    list.push_back(scalar);
#ifdef QWEN_HAVE_SSE42
    // 128-bit integer dot products: every x86-64 CPU since Nehalem (2008). Sandy/Ivy Bridge (AVX1,
    // no AVX2/FMA) stay here too: AVX1 has no 256-bit integer operations, so the int8 kernels
    // would gain nothing from it, and one 128-bit tier serves both generations.
    if (f.sse42 && f.popcnt) {
      Kernels t = start_from(scalar, "sse42");
      register_quant_kernels_sse42(t);
      register_op_kernels_sse42(t);
      list.push_back(t);
    }
#endif
#ifdef QWEN_HAVE_AVX2
    Kernels avx2 = start_from(scalar, "avx2");
    if (f.avx2 && f.fma && f.f16c) {
      register_quant_kernels_avx2(avx2, f);
      register_op_kernels_avx2(avx2);
      list.push_back(avx2);
      // AVX-VNNI (VEX vpdpbusd on ymm; Alder Lake and later Intel client cores, Zen 5): the avx2
      // table with its integer dot products compiled again with those instructions.
#ifdef QWEN_HAVE_AVXVNNI
      if (f.avxvnni) {
        Kernels t = start_from(avx2, "avxvnni");
        register_quant_kernels_avxvnni(t, f);
        list.push_back(t);
      }
#endif
      // Its twin with the EVEX encoding of the same instructions, so that the avxvnni code runs
      // and is tested on AVX512-VNNI machines (which need not have AVX-VNNI). Both before avx512,
      // which stays the default on CPUs with AVX-VNNI and AVX-512 (Zen 5, Sapphire Rapids): its
      // per-row dot products are 512-bit, and its Q4_0/Q8_0 prefill passes 8 tokens per repacked
      // block (32 registers) instead of 4 (bench/README.md compares the two on Zen 4).
#ifdef QWEN_HAVE_AVXVNNI_EVEX
      if (f.avx512f && f.avx512vl && f.avx512vnni) {
        Kernels t = start_from(avx2, kTestTwin);
        register_quant_kernels_avxvnni_evex(t, f);
        list.push_back(t);
      }
#endif
    }
#endif
#ifdef QWEN_HAVE_AVX512
    // The avx2 table with the 512-bit kernels on top; the quantized ones only with AVX512-VNNI.
    if (f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) {
      Kernels t = start_from(avx2, "avx512");
      register_quant_kernels_avx512(t, f);
      register_op_kernels_avx512(t, f);
      // decode: the avx2 table's tile kernels (the Quad form) read these types faster than the
      // 512-bit gemvs and vec_dots on Zen 4 (bench/README.md, "The avx512 path against ik_llama.cpp");
      // then the Quad form's own 512-bit kernels for the repacked layouts (same values)
      keep_decode(t, avx2, {GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0});
      register_decode_avx512(t, f);
      list.push_back(t);
    }
#endif
#ifdef QWEN_HAVE_NEON
    if (f.neon) {
      Kernels t = start_from(scalar, "neon");
      register_quant_kernels_neon(t);
      register_op_kernels_neon(t);
      list.push_back(t);
      // ARMv8.2 dot-product extension: the neon table with the SDOT integer dot products
      // (csrc/neon/quants_dotprod.cpp, the only code compiled for it).
      if (f.dotprod) {
        t.isa = "neon_dotprod";
        register_quant_kernels_neon_dotprod(t);
        list.push_back(t);
      }
    }
#endif
    for (size_t i = 0; i < list.size(); ++i)
      if (std::strcmp(list[i].isa, kTestTwin) != 0) best = i;
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

const Kernels* find(const char* name) {
  for (const Kernels& k : tables().list)
    if (std::strcmp(k.isa, name) == 0) return &k;
  return nullptr;
}

const Kernels* initial() {
  const char* env = std::getenv("QWEN_CPU_ISA");
  if (env && *env) {
    if (const Kernels* k = find(env)) return k;
    // An unknown or unavailable name is reported by the Python package at import time;
    // here we fall back to the best path rather than abort inside a library.
  }
  return &tables().list[tables().best];
}

std::atomic<const Kernels*> g_current{nullptr};

}  // namespace

const Kernels& kernels() {
  const Kernels* k = g_current.load(std::memory_order_acquire);
  if (!k) {
    k = initial();
    g_current.store(k, std::memory_order_release);
  }
  return *k;
}

bool set_isa(const char* name) {
  const Kernels* k = find(name);
  if (!k) return false;
  g_current.store(k, std::memory_order_release);
  return true;
}

const char* const* available_isas(int* count) {
  static std::vector<const char*> names = [] {
    std::vector<const char*> v;
    for (const Kernels& k : tables().list) v.push_back(k.isa);
    return v;
  }();
  *count = (int)names.size();
  return names.data();
}

const char* cpu_features() { return features().text.c_str(); }

}  // namespace qc
