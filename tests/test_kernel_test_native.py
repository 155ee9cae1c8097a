"""The C++ kernel test (csrc/tests/kernel_test.cpp: every table's kernels against the scalar
reference, the layouts' decode kernels bit for bit the stored ones, the dispatch rules) built with
the project's CMakeLists.txt and run on this machine's CPU, expecting every kernel path the
extension reports for it. The NEON tables run it under qemu (.ci/test-neon-qemu); this is the
x86 (or native aarch64) run, which the Python tests do not replace: it checks the layout and
several-row kernels those do not reach."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pybind11

from qwen_cpu import _kernels

ROOT = Path(__file__).resolve().parents[1]


def test_the_kernel_test_passes_on_every_path_this_cpu_runs(tmp_path):
    assert shutil.which("cmake"), "cmake is needed to build csrc/tests/kernel_test.cpp"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
                   check=True, capture_output=True, text=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "kernel_test", "-j", str(os.cpu_count() or 2)],
                   check=True, capture_output=True, text=True)
    isas = ",".join(_kernels.available_isas())
    run = subprocess.run([str(build / "kernel_test"), "--expect-isas", isas], capture_output=True, text=True,
                         timeout=600)
    failures = [line for line in run.stdout.splitlines() + run.stderr.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not failures, "\n".join(failures[:20]) or run.stderr[-2000:]
    for isa in _kernels.available_isas():
        assert f"[{isa}]" in run.stdout, isa
