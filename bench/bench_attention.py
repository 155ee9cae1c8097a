"""Decode attention over a long KV cache, per cache type: the time of one token's attention at
depths 4K/16K/32K for the 0.5B shape (14 query heads, 2 KV heads, head_dim 64, 24 layers, each
layer its own cache so that it is read from memory), on 1 and 2 threads, against the K+V bytes it
reads (GB/s) and the machine's plain read bandwidth measured on the same buffers and threads, the
attention's GFLOP/s against one thread's FMA rate.

Runs the C++ program bench/attn_bench.cpp (CMake target attn_bench: the quantized caches have no
Python binding of their own), once per kernel path. Prints a Markdown table.
Run: cmake --build build/dev --target attn_bench && python bench/bench_attention.py [--build build/dev]
     [--isas avx512,avx2] [--types F16/F16,Q8_0/Q8_0,Q4_0/Q4_0] [--depths 4096,16384,32768] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from quant_quality import cpu_name  # bench/ is the script's directory, first on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build/dev", help="CMake build directory holding attn_bench")
    ap.add_argument("--isas", default="avx512,avx2")
    ap.add_argument("--types", default="F16/F16,Q8_0/Q8_0,Q4_0/Q4_0", help="K/V cache type pairs")
    ap.add_argument("--depths", default="4096,16384,32768")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    exe = Path(args.build) / "attn_bench"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: build it with cmake --build {args.build} --target attn_bench")
    print(f"CPU: {cpu_name()}; load average {os.getloadavg()[0]:.1f}")
    print("| path | K/V | depth | threads | us/token (24 layers) | us/layer | MB read/token | GB/s | "
          "CPU us/token | plain read GB/s | GFLOP/s | FMA GFLOP/s (1 thread) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for isa in args.isas.split(","):
        for pair in args.types.split(","):
            k, v = pair.split("/")
            for depth in args.depths.split(","):
                for th in args.threads.split(","):
                    out = subprocess.run([str(exe), th, depth, k, v, "24", "14", "2", "64", str(args.reps)],
                                         env={**os.environ, "QWEN_CPU_ISA": isa}, capture_output=True, text=True,
                                         check=True).stdout.split()
                    path, _, _, _, _, us, us_layer, nbytes, gbs, cpu_us, read_gbs, gflops, fma = out
                    print(f"| {path} | {k}/{v} | {int(depth) // 1024}K | {th} | {float(us):.0f} | {float(us_layer):.0f} | "
                          f"{float(nbytes) / 1e6:.0f} | {gbs} | {float(cpu_us):.0f} | {read_gbs} | {gflops} | {fma} |",
                          flush=True)


if __name__ == "__main__":
    main()
