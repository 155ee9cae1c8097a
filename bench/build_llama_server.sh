#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (for bench/bench_server.py) from the llama.cpp tree vendored in
# the llama-cpp-python source distribution, outside the repository. Nothing of llama.cpp is committed.
#
#   bash bench/build_llama_server.sh [DIR]      (default /work/peers; result DIR/build-server/bin/llama-server)
#
# Native ISA like our build; static libraries; no network client, no web UI needed. About an hour at
# low priority on 2 shared cores. Skips the download and unpacking when already done.
set -euo pipefail
DIR="${1:-/work/peers}"
mkdir -p "${DIR}"
cd "${DIR}"
sdist=$(ls llama_cpp_python-*.tar.gz 2>/dev/null | head -n1 || true)
if [ -z "${sdist}" ]; then
    pip download --no-deps --no-binary :all: --no-build-isolation llama-cpp-python -d .
    sdist=$(ls llama_cpp_python-*.tar.gz | head -n1)
fi
tree="${sdist%.tar.gz}"
[ -d "${tree}" ] || tar -xzf "${sdist}"
nice -n 15 cmake -S "${tree}/vendor/llama.cpp" -B build-server -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DGGML_OPENMP=ON
nice -n 15 cmake --build build-server --target llama-server -j2
echo "built: ${DIR}/build-server/bin/llama-server"
