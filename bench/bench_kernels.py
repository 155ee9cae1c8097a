"""Microbenchmark of the quantized matrix products, per weight type.

For a 4096x4096 matrix-vector product (decode's shape) and a 512-row matrix-matrix product
(prefill's shape), prints: GB/s of weight bytes streamed, GFLOP/s, the fraction of this machine's
read bandwidth (measured here, with the same threads) and the speed relative to numpy's float32
BLAS on the same shapes. Run: python bench/bench_kernels.py [--threads N] [--types q4_0,q8_0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qwen_cpu import _kernels

# ggml type ids, and byte offsets of each block's f16 scale fields (set to sane values so that
# random blocks hold finite numbers).
TYPES = {
    "f32": (0, []), "f16": (1, []), "bf16": (30, []),
    "q4_0": (2, [0]), "q4_1": (3, [0, 2]), "q5_0": (6, [0]), "q5_1": (7, [0, 2]), "q8_0": (8, [0]),
    "q2_k": (10, [80, 82]), "q3_k": (11, [108]), "q4_k": (12, [0, 2]), "q5_k": (13, [0, 2]), "q6_k": (14, [208]),
}


def random_weights(name: str, n_out: int, n_in: int, rng: np.random.Generator) -> np.ndarray:
    """(n_out, row_bytes) raw rows of the type with random contents and small finite scales."""
    t, scale_offsets = TYPES[name]
    _, block_elems, block_bytes = _kernels.type_info(t)
    if name == "f32":
        return rng.standard_normal((n_out, n_in), dtype=np.float32).view(np.uint8)
    if name == "f16":
        return rng.standard_normal((n_out, n_in)).astype(np.float16).view(np.uint8)
    if name == "bf16":
        return (rng.standard_normal((n_out, n_in), dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    blocks = rng.integers(0, 256, size=(n_out, n_in // block_elems, block_bytes), dtype=np.uint8)
    for off in scale_offsets:
        blocks[:, :, off : off + 2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    return blocks.reshape(n_out, -1)


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=_kernels.default_thread_count())
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--n", type=int, default=4096, help="matrix size (n x n)")
    ap.add_argument("--batch", type=int, default=512, help="rows of the matrix-matrix product")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stream-bytes", type=int, default=256 << 20,
                    help="weight bytes cycled through in the matrix-vector test (beyond the caches)")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    pool = _kernels.ThreadPool(args.threads)
    n = args.n
    bw = _kernels.measure_read_bandwidth(pool, 1 << 30, 5)
    x1 = rng.standard_normal((1, n), dtype=np.float32)
    xb = rng.standard_normal((args.batch, n), dtype=np.float32)
    wf = rng.standard_normal((n, n), dtype=np.float32)
    np_mv = best_time(lambda: wf @ x1[0], args.repeats)
    np_mm = best_time(lambda: xb @ wf.T, max(2, args.repeats // 2))
    print(f"isa={_kernels.get_isa()} threads={args.threads} n={n} batch={args.batch}")
    print(f"read bandwidth: {bw / 1e9:.1f} GB/s; numpy f32: matvec {2 * n * n / np_mv / 1e9:.1f} GFLOP/s, "
          f"matmul {2 * n * n * args.batch / np_mm / 1e9:.1f} GFLOP/s")
    print(f"{'type':6} {'bytes/w':>7} {'mv GB/s':>8} {'mv GFLOP/s':>10} {'of bw':>6} {'vs numpy':>8} "
          f"{'mm GFLOP/s':>10} {'vs numpy':>8}")
    for name in args.types.split(","):
        t = TYPES[name][0]
        w = random_weights(name, n, n, rng)
        # Decode streams weights from memory: cycle through copies that together exceed the
        # last-level cache, so that the matrix-vector figure is not a cache figure.
        copies = [w] + [w.copy() for _ in range(max(0, -(-args.stream_bytes // w.nbytes) - 1))]
        mv = best_time(lambda: [_kernels.matmul(pool, c, t, n, x1) for c in copies], args.repeats) / len(copies)
        mm = best_time(lambda: _kernels.matmul(pool, w, t, n, xb), max(2, args.repeats // 2))
        print(f"{name:6} {w.nbytes / (n * n):7.3f} {w.nbytes / mv / 1e9:8.1f} {2 * n * n / mv / 1e9:10.1f} "
              f"{w.nbytes / mv / bw:6.0%} {np_mv / mv:8.2f} {2 * n * n * args.batch / mm / 1e9:10.1f} {np_mm / mm:8.2f}")


if __name__ == "__main__":
    main()
