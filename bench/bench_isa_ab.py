"""Two kernel paths against each other on the same quantized matrix products, interleaved.

For each weight type: a 512-token matrix-matrix product (prefill, the gemm kernels) and a
matrix-vector product (decode, vec_dot) at Qwen2.5-1.5B widths (1536: a multiple of the
K-quants' 256, which 0.5B's 896 is not), timed on path A and path B
alternately in one process (--rounds rounds, each path once per round), so that a shared
machine's load hits both alike. Prints per path the best time as GFLOP/s and the ratio B / A
of speeds from the best times and the median of the per-round ratios.
The matrix-vector weights (1536 x 1536) stay in cache: this compares the kernels' arithmetic,
not the memory bandwidth that bounds decode with several threads. Times are the process's CPU
time by default (--clock cpu: time spent descheduled on a loaded machine does not count; with
more than one thread it adds up the threads, spinning included), or wall time (--clock wall).
Run: PYTHONPATH=. python3 bench/bench_isa_ab.py --a avx2 --b avxvnni_evex [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from qwen_cpu import _kernels

from bench_kernels import TYPES, random_weights  # noqa: E402  (bench/ is the script folder)


def ab(fn, a: str, b: str, rounds: int, clock) -> tuple[float, float, float]:
    """Best time on a, best time on b, median over rounds of time_a / time_b."""
    times = {a: [], b: []}
    for isa in (a, b):  # warm up both
        _kernels.set_isa(isa)
        fn()
    for _ in range(rounds):
        for isa in (a, b):
            _kernels.set_isa(isa)
            t0 = clock()
            fn()
            times[isa].append(clock() - t0)
    return min(times[a]), min(times[b]), statistics.median(ta / tb for ta, tb in zip(times[a], times[b]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default="avx2")
    ap.add_argument("--b", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--types", default="q4_0,q8_0,q4_k,q6_k")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=100, help="matrix-vector products per timing")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for isa in (args.a, args.b):
        if isa not in _kernels.available_isas():
            raise SystemExit(f"{isa} is not available here: {_kernels.available_isas()}")
    pool = _kernels.ThreadPool(args.threads)
    rng = np.random.default_rng(0)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"{args.a} vs {args.b}, {args.threads} thread(s), {args.rounds} interleaved rounds, {args.clock} time; "
          f"load average {load}")
    print(f"| type | product | {args.a} GFLOP/s | {args.b} GFLOP/s | {args.b} / {args.a} (best) | (median of rounds) |")
    print("|---|---|--:|--:|--:|--:|")
    for name in args.types.split(","):
        t = TYPES[name][0]
        cases = [
            (f"gemm 2048x1536, {args.tokens} tokens", 2048, 1536, args.tokens, 1),
            (f"matvec 1536x1536 (x{args.calls})", 1536, 1536, 1, args.calls),
        ]
        for label, n_out, n_in, n_tok, calls in cases:
            w = random_weights(name, n_out, n_in, rng)
            x = rng.standard_normal((n_tok, n_in), dtype=np.float32)

            def fn(w=w, x=x, n_in=n_in, calls=calls):
                for _ in range(calls):
                    _kernels.matmul(pool, w, t, n_in, x)

            ta, tb, med = ab(fn, args.a, args.b, args.rounds, clock)
            flop = 2.0 * n_out * n_in * n_tok * calls
            print(f"| {name} | {label} | {flop / ta / 1e9:.1f} | {flop / tb / 1e9:.1f} | {ta / tb:.2f} | {med:.2f} |",
                  flush=True)
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
