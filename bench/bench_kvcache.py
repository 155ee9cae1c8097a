#!/usr/bin/env python3
"""Long-context speed and memory per KV cache type (issue #17), ours next to llama.cpp's llama-bench
on the same 0.5B-shape Qwen2.5 Q4_0 file (bench/make_models.py), with the same threads.

    PYTHONPATH=. python3 bench/bench_kvcache.py [--depths 4096,16384,32768] [--types f16,q8_0,q4_0]
        [--reps 3] [--threads 2] [--model FILE] [--llama-bench PATH]

Per depth D and cache type T:
  pp   prefill of a D-token prompt from an empty cache, tokens/s (llama-bench -p D -n 0)
  tg   32 decode steps after a D-token context, tokens/s (llama-bench -d D -p 0 -n 32); ours after
       one untimed step (a model's first decode step repacks its weights, repack.h: a one-time
       cost, printed as first_step_ms), so ours decodes from D + 1
  RSS  ours: the worker process's resident memory after the decode steps (VmRSS), and the bytes
       of the KV cache itself (n_ctx = D + 32 positions)
With --fill (ours only; for depths whose prefill takes too long on a small machine), the cache is
filled instead of computed: a 512-token prefill's rows repeated to D positions (read_slot,
write_slot), then the same 32 decode steps: decode reads as many cache bytes as after a real
prefill (its speed does not depend on the values), and RSS counts the same committed pages.
Ours runs one fresh process per (D, T, repetition): the prefill is timed, then the decode steps
from where it ended. llama.cpp runs as llama-batched-bench -fa on -ctk T -ctv T -npp D -ntg 32 where that is built
(one timed prefill, then the decode steps: as ours), else llama-bench -fa 1 -r 1 (its depth
prefill is not timed). Engines and types interleave inside each repetition; medians are
printed. Every row also goes to bench_kvcache.jsonl in the cache folder. Wrap the run in
`flock /tmp/qwen-cpu-bench.lock` (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from make_models import package_root  # the qwen_cpu this process would import: the workers use it too

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "qwen-cpu-bench"
MODEL = CACHE / "qwen2.5-0.5b-random-q4_0.gguf"
LLAMA_BENCH = CACHE / "llama-bench"  # bench/build_llama_bench.sh puts them there
LLAMA_BATCHED = CACHE / "llama-cpp-python-src" / "build" / "bin" / "llama-batched-bench"
TG = 32


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


FILL = 512  # tokens computed for --fill


def worker(path: str, depth: int, kv_type: str, threads: int, fill: bool) -> dict:
    """Our figures for one (depth, type), in this (fresh) process."""
    import numpy as np

    from qwen_cpu import Model

    ids = np.random.default_rng(0).integers(100, 20000, depth + 1 + TG).tolist()
    m = Model.load(path, n_ctx=depth + 1 + TG, n_threads=threads, kv_type=kv_type)
    pp = None
    if fill:
        with m.hold() as lease:
            lease.prefill(ids[:FILL])
            tokens, rows = lease.read_slot(0)
            c = m.config
            rows = rows.reshape(c.n_layer, 2, c.n_kv_head, FILL, -1)  # (K and V of one type: one row size)
            reps = -(-depth // FILL)
            lease.write_slot(0, (tokens * reps)[:depth], np.tile(rows, (1, 1, 1, reps, 1))[:, :, :, :depth].ravel())
    else:
        t0 = time.perf_counter()
        m.prefill(ids[:depth])
        pp = depth / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    m.decode_step(ids[depth])  # the model's first decode step also repacks its weights: timed apart
    first_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    for tok in ids[depth + 1:depth + 1 + TG]:
        m.decode_step(tok)
    tg = TG / (time.perf_counter() - t0)
    return {"pp": pp, "tg": tg, "first_step_ms": first_ms, "rss_mib": _status_kib("VmRSS") / 1024,
            "kv_mib": m.config.kv_cache_bytes(depth + 1 + TG, m.kv_type) / 2**20}


def run_ours(path: Path, depth: int, kv_type: str, threads: int, fill: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": package_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, __file__, "--worker", str(path), str(depth), kv_type, str(threads), str(int(fill))],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"worker {depth} {kv_type} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_llama(exe: Path, path: Path, depth: int, kv_type: str, threads: int) -> dict:
    out = {}
    common = [str(exe), "-m", str(path), "-t", str(threads), "-fa", "1", "-ctk", kv_type, "-ctv", kv_type,
              "-r", "1", "-o", "json"]
    for key, extra in (("pp", ["-p", str(depth), "-n", "0"]), ("tg", ["-d", str(depth), "-p", "0", "-n", str(TG)])):
        r = subprocess.run(common + extra, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"llama-bench {' '.join(extra)} failed:\n{r.stderr[-3000:]}")
        out[key] = json.loads(r.stdout)[0]["avg_ts"]
    return out


def run_llama_batched(exe: Path, path: Path, depth: int, kv_type: str, threads: int) -> dict:
    """pp and tg from one llama-batched-bench run: the D-token prefill timed, then TG decode steps
    after it (half the work of llama-bench's two runs, whose -d prefill is not timed)."""
    r = subprocess.run([str(exe), "-m", str(path), "-t", str(threads), "-fa", "on", "-ctk", kv_type, "-ctv", kv_type,
                        "-c", str(depth + TG), "-b", "2048", "-ub", "512", "-npp", str(depth), "-ntg", str(TG),
                        "-npl", "1", "--output-format", "jsonl"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"llama-batched-bench {depth} {kv_type} failed:\n{r.stderr[-3000:]}")
    row = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))
    return {"pp": row["speed_pp"], "tg": row["speed_tg"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", nargs=5, metavar=("MODEL", "DEPTH", "TYPE", "THREADS", "FILL"))
    ap.add_argument("--depths", default="4096,16384,32768")
    ap.add_argument("--types", default="f16,q8_0,q4_0")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--llama-bench", type=Path, default=LLAMA_BENCH)
    ap.add_argument("--llama-batched", type=Path, default=LLAMA_BATCHED,
                    help="llama-batched-bench: used instead of llama-bench where it exists (one prefill per row)")
    ap.add_argument("--no-llama", action="store_true", help="our figures only")
    ap.add_argument("--fill", action="store_true", help="ours only, cache filled instead of computed (no pp)")
    args = ap.parse_args()
    if args.worker:
        path, depth, kv_type, threads, fill = args.worker
        print(json.dumps(worker(path, int(depth), kv_type, int(threads), fill == "1")))
        return
    from qwen_cpu import _kernels

    llama = not args.no_llama and not args.fill
    if llama and not (args.llama_bench.is_file() or args.llama_batched.is_file()):
        sys.exit(f"llama.cpp's llama-bench not found at {args.llama_bench} nor llama-batched-bench at "
                 f"{args.llama_batched}: build them with bench/build_llama_bench.sh, or pass --no-llama")
    types = args.types.split(",")
    log = CACHE / "bench_kvcache.jsonl"
    print(f"{args.model.name}, {args.threads} threads, kernel path {_kernels.get_isa()}, "
          f"commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}",
          flush=True)
    for depth in map(int, args.depths.split(",")):
        rows = {(e, t): [] for e in ("ours", "llama") for t in types}
        loads = []
        for rep in range(args.reps):
            for i, t in enumerate(types):
                order = ["ours", "llama"] if (rep + i) % 2 == 0 else ["llama", "ours"]
                for engine in order:
                    if engine == "llama" and not llama:
                        continue
                    loads.append(os.getloadavg()[0])
                    if engine == "ours":
                        r = run_ours(args.model, depth, t, args.threads, args.fill)
                    elif args.llama_batched.is_file():
                        r = run_llama_batched(args.llama_batched, args.model, depth, t, args.threads)
                    else:
                        r = run_llama(args.llama_bench, args.model, depth, t, args.threads)
                    rows[(engine, t)].append(r)
                    with open(log, "a") as f:
                        f.write(json.dumps({"fill": args.fill, "depth": depth, "type": t, "engine": engine, "rep": rep, **r,
                                            "load": loads[-1], "time": time.time()}) + "\n")
                    print(f"  depth {depth} {t} {engine} rep {rep}: {json.dumps(r)} (load {loads[-1]:.1f})", flush=True)
        print(f"\ndepth {depth}{' (cache filled, not computed)' if args.fill else ''}, {args.reps} repetitions, load {min(loads):.1f}-{max(loads):.1f}")
        print("| KV type | pp ours | pp llama.cpp | ratio | tg ours | tg llama.cpp | ratio | KV cache MiB | RSS ours MiB |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for t in types:
            o, l = rows[("ours", t)], rows[("llama", t)]
            pp, tg = (median(r["pp"] for r in o) if o[0]["pp"] else 0.0), median(r["tg"] for r in o)
            lpp = median(r["pp"] for r in l) if l else None
            ltg = median(r["tg"] for r in l) if l else None
            ratio = (lambda a, b: f"**{a / b:.2f}**" if b else "-")
            print(f"| {t} | {pp:.1f} | {lpp or 0:.1f} | {ratio(pp, lpp)} | {tg:.1f} | {ltg or 0:.1f} | {ratio(tg, ltg)} | "
                  f"{o[0]['kv_mib']:.0f} | {median(r['rss_mib'] for r in o):.0f} |", flush=True)


if __name__ == "__main__":
    main()
