"""Quantization error of our quantizers next to llama.cpp's, on the same data.

llama.cpp's side is ggml_quantize_chunk() from the libggml-base that llama-cpp-python ships (the
function llama_model_quantize calls for every tensor; no importance matrix, as in a plain
`llama-quantize`). Both outputs are dequantized with gguf-py, and the script prints, per type,
the RMSE relative to the data's RMS for ours and llama.cpp's and whether our bytes are identical.

    PYTHONPATH=. python3 bench/quant_error_vs_llamacpp.py [--rows 512] [--cols 4096]
"""

from __future__ import annotations

import argparse
import ctypes
import pathlib
import sys
import time

import gguf
import numpy as np

from qwen_cpu import _kernels

TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def load_ggml():
    import llama_cpp  # noqa: F401  (imported for its bundled libraries)

    lib_dir = pathlib.Path(llama_cpp.__file__).parent / "lib"
    lib = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def llamacpp_quantize(lib, qtype: gguf.GGMLQuantizationType, x: np.ndarray) -> np.ndarray:
    """x: (rows, cols) float32 -> (rows, row_bytes) uint8 from llama.cpp's quantizer."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    lib.ggml_quantize_init(int(qtype))
    n = lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None)
    assert n == out.nbytes
    return out


def data_sets(rows: int, cols: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    gauss = rng.standard_normal((rows, cols)).astype(np.float32)
    # heavy-tailed rows with per-row scales, like trained weight matrices with outlier channels
    student = (rng.standard_t(4, (rows, cols)) * rng.lognormal(-3, 0.5, (rows, 1))).astype(np.float32)
    uniform = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
    return {"gauss": gauss, "student-t4": student, "uniform": uniform}


def rel_rmse(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2)) / np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=4096)
    args = ap.parse_args()
    lib = load_ggml()
    print(f"{'data':<11} {'type':<5} {'ours':>9} {'llama.cpp':>10} {'ours/ref':>9} {'identical':>9} {'ours Melem/s':>12}")
    worse = []
    for dname, x in data_sets(args.rows, args.cols).items():
        for tname in TYPES:
            qt = gguf.GGMLQuantizationType[tname]
            t0 = time.perf_counter()
            ours = _kernels.quantize(int(qt), x)
            dt = time.perf_counter() - t0
            ref = llamacpp_quantize(lib, qt, x)
            e_ours = rel_rmse(gguf.quants.dequantize(ours, qt), x)
            e_ref = rel_rmse(gguf.quants.dequantize(ref, qt), x)
            same = bool(np.array_equal(ours, ref))
            print(f"{dname:<11} {tname:<5} {e_ours:9.5f} {e_ref:10.5f} {e_ours / e_ref:9.4f} {str(same):>9} "
                  f"{x.size / dt / 1e6:12.1f}")
            if e_ours > e_ref * (1 + 1e-6):
                worse.append((dname, tname))
    if worse:
        print("worse than llama.cpp:", worse)
        return 1
    print("ours <= llama.cpp everywhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
