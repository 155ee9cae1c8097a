#!/usr/bin/env python3
"""Time one sampling step on a Qwen2.5-sized vocabulary (151,936 logits, float32).

    PYTHONPATH=. python3 bench/bench_sampler.py [--vocab 151936] [--steps 2000]

Two logit shapes, seeded: "peaked" (normal(0, 2) noise plus 8 tokens 12..20 above it: most of the
probability on a handful of tokens, like a language model's typical step) and "flat" (normal(0, 2)
plus 8 tokens 6..14 above: the top-p=0.9 set holds ~32,000 tokens, a worst case for top-p without
top-k). History: 64 recent ids for the penalties. Besides the sampling filters, greedy with a
logit_bias of 2 banned ids (bench_server.py's end-of-text ban) and of every third id of the
vocabulary (a large bias: its conversion, once per request or once per token, is serial work a
batched step waits for). Prints the median and 99th-percentile time per token for each
configuration and shape (one thread, numpy only).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qwen_cpu.sampler import Sampler, SamplingParams

CONFIGS = {
    "greedy": SamplingParams(temperature=0),
    "temperature only": SamplingParams(temperature=0.8),
    "top_k=40": SamplingParams(temperature=0.8, top_k=40),
    "top_k=40 top_p=0.95": SamplingParams(temperature=0.7, top_k=40, top_p=0.95),
    "top_p=0.9": SamplingParams(temperature=0.7, top_p=0.9),
    "min_p=0.05": SamplingParams(temperature=0.7, min_p=0.05),
    "qwen defaults + penalties": SamplingParams(temperature=0.7, top_k=20, top_p=0.8,
                                                repetition_penalty=1.05, presence_penalty=0.1),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shapes = {}
    for shape, (lo, hi) in {"peaked": (12, 20), "flat": (6, 14)}.items():
        shapes[shape] = []
        for _ in range(16):
            x = rng.normal(0.0, 2.0, args.vocab).astype(np.float32)
            x[rng.integers(0, args.vocab, 8)] += rng.uniform(lo, hi, 8).astype(np.float32)
            shapes[shape].append(x)
    history = rng.integers(0, args.vocab, 64).tolist()
    print(f"vocabulary {args.vocab}, {args.steps} steps per configuration and shape")
    print(f"  {'configuration':28s} {'peaked: median':>15s} {'p99':>9s}   "
          f"{'flat: median':>13s} {'p99':>9s}")
    configs = {**CONFIGS,
               "greedy + bias 2 ids": SamplingParams(temperature=0, logit_bias={0: -np.inf, 1: -np.inf}),
               "greedy + bias 1/3 of ids": SamplingParams(temperature=0,
                                                          logit_bias=dict.fromkeys(range(0, args.vocab, 3), -5.0))}
    for name, params in configs.items():
        row = []
        for logits_set in shapes.values():
            sampler = Sampler(params, seed=1)
            for x in logits_set:                   # warm up
                sampler(x, history)
            times = np.empty(args.steps)
            for i in range(args.steps):
                x = logits_set[i % len(logits_set)]
                t0 = time.perf_counter()
                sampler(x, history)
                times[i] = time.perf_counter() - t0
            row += [np.median(times) * 1e6, np.percentile(times, 99) * 1e6]
        print(f"  {name:28s} {row[0]:12.1f} us {row[1]:6.0f} us   "
              f"{row[2]:10.1f} us {row[3]:6.0f} us")


if __name__ == "__main__":
    main()
