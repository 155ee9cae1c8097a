#!/usr/bin/env python3
"""Mixture-of-experts speed: ours next to llama.cpp's `llama-bench` on the same files (written by our
quantizer, so this also checks that llama.cpp loads and runs them), and decode speed against the
bytes a token actually reads.

    PYTHONPATH=. python3 bench/make_moe_model.py          # once: the random Qwen3-MoE files
    PYTHONPATH=. python3 bench/bench_moe.py [--files A.gguf,B.gguf] [--threads 2] [--reps 3]

  pp512  prompt of 512 tokens, tokens/s (llama-bench -p 512)
  tg64   64 decode steps after a 16-token prompt (llama-bench -n 64 after an empty context), tokens/s
Bytes per decoded token: the attention, norms, router and output matrix, the k/n_expert share of the
3-D expert tensors (a token reads k experts of each layer), all from the file's tensor sizes, plus
the f16 KV cache at the mean decode position. Runs alternate ours / llama-bench per repetition;
medians are printed as a markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PP, TG, SHORT = 512, 64, 16


def bytes_per_token(path: Path, used: int | None = None) -> tuple[float, float, int]:
    """(bytes read per decoded token at the mean tg64 position, file bytes, active parameters), with
    `used` experts per token instead of the file's."""
    from qwen_cpu.config import config_from_gguf
    from qwen_cpu.gguf import GGUFFile

    g = GGUFFile(path)
    try:
        cfg = config_from_gguf(g.metadata, g.tensors["token_embd.weight"].shape[0])
        total = sum(t.n_bytes for t in g.tensors.values())
        exps = sum(t.n_bytes for n, t in g.tensors.items() if n.endswith("_exps.weight"))
        embd = g.tensors["token_embd.weight"].n_bytes  # one row per token: not counted
        share = (used or cfg.n_expert_used) / cfg.n_expert if cfg.n_expert else 1.0
        weights = total - embd - exps * (1 - share)
        kv = cfg.kv_cache_bytes(SHORT + TG // 2)
        n_exps = sum(t.n_elements for n, t in g.tensors.items() if n.endswith("_exps.weight"))
        n_all = sum(t.n_elements for t in g.tensors.values()) - g.tensors["token_embd.weight"].n_elements
        return weights + kv, total, int(n_all - n_exps * (1 - share))
    finally:
        g.close()


def run_ours(path: str, n_threads: int, used: int | None = None) -> dict:
    import dataclasses

    import numpy as np

    from qwen_cpu import Model, model

    if used:  # the file's experts, `used` of them per token (the --sweep of decode speed against bytes read)
        from_gguf = model.config_from_gguf
        model.config_from_gguf = lambda *a, **k: dataclasses.replace(from_gguf(*a, **k), n_expert_used=used)

    ids = np.random.default_rng(0).integers(100, 20000, PP).tolist()
    with Model.load(path, n_ctx=PP + TG, n_threads=n_threads) as m:
        m.prefill(ids[:SHORT])
        m.decode_step(ids[SHORT])  # the first decode step repacks (csrc/repack.h): not timed, as llama-bench's warm-up
        m.reset()
        t0 = time.perf_counter()
        m.prefill(ids[:PP])
        pp = PP / (time.perf_counter() - t0)
        m.reset()
        m.prefill(ids[:SHORT])
        t0 = time.perf_counter()
        for tok in ids[SHORT:SHORT + TG]:
            m.decode_step(tok)
        tg = TG / (time.perf_counter() - t0)
    return {"pp": pp, "tg": tg}


def run_llama_bench(exe: Path, path: str, n_threads: int) -> dict:
    cmd = [str(exe), "-m", path, "-t", str(n_threads), "-r", "1", "-o", "json", "-p", str(PP), "-n", str(TG)]
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        if p.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read()[-3000:]}")
    out = {}
    for t in json.loads(p.stdout):
        out["pp" if t["n_gen"] == 0 else "tg"] = t["avg_ts"]
    return out


def sweep(args) -> None:
    """Our decode speed with k experts per token for each k of --sweep: tokens/s against bytes read."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    f = args.files.split(",")[0]
    print(f"{Path(f).name}, {args.threads} threads, medians of {args.reps}, load average {os.getloadavg()[0]:.2f}")
    print("| experts per token | bytes/token MiB | tg64 tokens/s | tokens/s x bytes/token GB/s |")
    print("|--:|--:|--:|--:|")
    for k in (int(x) for x in args.sweep.split(",")):
        per_tok = bytes_per_token(Path(f), k)[0]
        tg = statistics.median(json.loads(subprocess.run(
            [sys.executable, __file__, "--worker", f, "--threads", str(args.threads), "--used", str(k)],
            capture_output=True, text=True, env=env, check=True).stdout.strip().splitlines()[-1])["tg"]
            for _ in range(args.reps))
        print(f"| {k} | {per_tok / 2**20:.0f} | {tg:.2f} | {tg * per_tok / 1e9:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path.home() / ".cache" / "qwen-cpu-bench"
    ap.add_argument("--files", default=",".join(str(cache / f"qwen3moe-8l32e-random-{t}.gguf") for t in ("q4_0", "q4_k_m")))
    ap.add_argument("--llama-bench", type=Path, default=Path("/work/peers/llama-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sweep", default=None, help="experts per token to run the first file with, e.g. 2,8,32 (ours only)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--used", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # one measurement of ours in a fresh process
        print(json.dumps(run_ours(args.worker, args.threads, args.used)))
        return
    if args.sweep:
        sweep(args)
        return
    from qwen_cpu import _kernels

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    loads = []
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}, kernel path {_kernels.get_isa()}, "
          f"{args.threads} threads, medians of {args.reps}")
    print("| file | MiB | active params | bytes/token MiB | pp512 ours | llama.cpp | ratio | tg64 ours | llama.cpp "
          "| ratio | tg64 ours x bytes/token GB/s |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for f in args.files.split(","):
        per_tok, size, active = bytes_per_token(Path(f))
        ours, theirs = [], []
        for _ in range(args.reps):
            loads.append(os.getloadavg()[0])
            r = subprocess.run([sys.executable, __file__, "--worker", f, "--threads", str(args.threads)],
                               capture_output=True, text=True, env=env, check=True)
            ours.append(json.loads(r.stdout.strip().splitlines()[-1]))
            if args.llama_bench.exists():
                theirs.append(run_llama_bench(args.llama_bench, f, args.threads))
        med = lambda rs, k: statistics.median(r[k] for r in rs) if rs else float("nan")  # noqa: E731
        op, ot, lp, lt = med(ours, "pp"), med(ours, "tg"), med(theirs, "pp"), med(theirs, "tg")
        print(f"| {Path(f).name} | {size / 2**20:.0f} | {active / 1e6:.0f} M | {per_tok / 2**20:.0f} | {op:.1f} | "
              f"{lp:.1f} | {op / lp:.2f} | {ot:.2f} | {lt:.2f} | {ot / lt:.2f} | {ot * per_tok / 1e9:.1f} |", flush=True)
    print(f"load average during the run: {min(loads):.2f}-{max(loads):.2f}")


if __name__ == "__main__":
    main()
