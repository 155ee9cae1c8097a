#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` (the fairest llama.cpp figure: no Python in the loop) from the
# llama.cpp tree vendored in the llama-cpp-python source distribution. Nothing of llama.cpp is committed.
#
#   [WITH_SERVER=1] bash bench/build_llama_bench.sh [CACHE_DIR]      (default ~/.cache/qwen-cpu-bench)
#
# Result: CACHE_DIR/llama-bench (statically linked against ggml/llama), and beside it in
# CACHE_DIR/llama-cpp-python-src/build/bin the llama-batched-bench and llama-perplexity that
# bench_kvcache.py and kv_quality.py run; with WITH_SERVER=1 also llama-server there (for
# bench_server.py and crosscheck_moe_llamacpp.py: the same ggml build, no second copy). Takes ~5-30
# min on 2 cores, the server ~10 more.
# Skips work already done (download, unpack, configure); safe to re-run.
# NO_AMX=1: for a VM that lists AMX among the CPU's flags but faults on its tile instructions
# (llama-bench and llama-server die with SIGSEGV in ggml_backend_amx_mul_mat, as on the Intel Xeon
# VM of 2026-12-06): the CPU's other x86 extensions named one by one instead of -march=native.
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${1:-${HOME}/.cache/qwen-cpu-bench}"
SRC="${CACHE}/llama-cpp-python-src"
mkdir -p "${CACHE}" "${SRC}"

bin="${SRC}/build/bin"
targets="llama-bench llama-batched-bench llama-perplexity"
[ "${WITH_SERVER:-0}" = 1 ] && targets="${targets} llama-server"
flavour="native"; [ "${NO_AMX:-0}" = 1 ] && flavour="no-amx"
if [ -x "${CACHE}/llama-bench" ] && [ -x "${bin}/llama-batched-bench" ] && [ -x "${bin}/llama-perplexity" ] \
    && { [ "${WITH_SERVER:-0}" != 1 ] || [ -x "${bin}/llama-server" ]; } \
    && [ "$(cat "${SRC}/build/flavour" 2>/dev/null || echo native)" = "${flavour}" ]; then
    echo "already built: ${CACHE}/llama-bench"; exit 0
fi

sdist=$(ls "${SRC}"/llama_cpp_python-"${VERSION}".tar.gz 2>/dev/null || true)
if [ -z "${sdist}" ]; then
    # --no-binary for this package only: ":all:" would also build its build tools (cmake, ...) from source
    python3 -m pip download --no-binary llama-cpp-python --no-deps "llama-cpp-python==${VERSION}" -d "${SRC}"
    sdist=$(ls "${SRC}"/llama_cpp_python-"${VERSION}".tar.gz)
fi
tree="${SRC}/llama_cpp_python-${VERSION}"
[ -d "${tree}" ] || tar -xzf "${sdist}" -C "${SRC}"

# Native ISA like our build (-march=native); static libs so the binary runs from anywhere; no network, no GPU.
arch="-DGGML_NATIVE=ON"
if [ "${flavour}" = no-amx ]; then
    has() { grep -m1 '^flags' /proc/cpuinfo | grep -qw "$1" && echo ON || echo OFF; }
    arch="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma)
      -DGGML_F16C=$(has f16c) -DGGML_BMI2=$(has bmi2) -DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AVX512=$(has avx512f)
      -DGGML_AVX512_VBMI=$(has avx512vbmi) -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16)
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
# shellcheck disable=SC2086
cmake -S "${tree}/vendor/llama.cpp" -B "${SRC}/build" -DCMAKE_BUILD_TYPE=Release \
    ${arch} -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DGGML_OPENMP=ON
cmake --build "${SRC}/build" --target ${targets} -j2
cp "$(find "${SRC}/build" -name llama-bench -type f -perm -u+x | head -n1)" "${CACHE}/llama-bench"
echo "${flavour}" > "${SRC}/build/flavour"
echo "built: ${CACHE}/llama-bench"
