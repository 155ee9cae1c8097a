#!/usr/bin/env python3
"""`qwen-cpu serve` against llama.cpp's `llama-server` under the same load, on the same files and
threads: aggregate decode tokens/s and inter-token latency at 1, 2, 4 and 8 concurrent streams,
time to first token (TTFT) under a steady arrival rate, and TTFT of a request arriving while 3
others stream against the same request on an idle server.

    PYTHONPATH=. python3 bench/bench_server.py [--llama-server PATH] [--models a.gguf,b.gguf]
        [--threads 2] [--concurrency 1,2,4,8] [--tokens 64] [--rounds 3] [--no-readme]

Both servers are driven by this one load script over their OpenAI-compatible /v1/completions
endpoint (streamed, greedy, end-of-text tokens banned by logit_bias so every stream is exactly
--tokens long). For each concurrency N each server is started with N slots (ours `--parallel N`,
llama-server `-np N`, each slot 1024 positions) and N streams start together; the two servers take
turns at every measurement, and the whole set of concurrencies is measured --rounds times (a fresh
server each time): the table shows each figure's median round (a shared machine's bandwidth moves
by tens of percent between minutes; one round per figure let a 4-stream/1-stream ratio swing from
1.8 to 2.8 between two runs).

Aggregate decode tokens/s, in the steady state where every stream decodes (as bench_batch.py's
scheduler column): the tokens that arrive after the last stream's first token and up to the first
stream's last, over that time; the N prompts read one after another and the streams ending at
different times stay out of it. Inter-token latency: the gaps between consecutive streamed chunks
of every stream (p50, p99). Steady arrivals: 4 slots, one request (64-token prompt, 32 tokens) every
1/--rate s for --duration s. The table goes into bench/README.md between marker comments.

llama-server: `WITH_SERVER=1 bash bench/build_llama_bench.sh` builds it from the llama.cpp tree
vendored in the llama-cpp-python sdist, outside the repository (default
~/.cache/qwen-cpu-bench/llama-cpp-python-src/build/bin/llama-server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- bench_server:begin -->", "<!-- bench_server:end -->"
CACHE = Path.home() / ".cache" / "qwen-cpu-bench"
SLOT_CTX = 1024
# a new connection per request: llama-server closes a streamed response's connection, and reusing
# one it is closing fails; both servers get the same treatment
FRESH = httpx.Limits(max_keepalive_connections=0)
PROMPT = ("The history of the city begins with a small settlement by the river, where traders met to "
          "exchange salt, wool and grain. Over the centuries it grew into")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process (ours or llama-server) with n slots; `url` once healthy."""

    def __init__(self, engine: str, model: Path, n_slots: int, threads: int, llama_server: Path | None,
                 omp_active: bool = False):
        self.engine, self.model = engine, model
        port = free_port()
        if engine == "qwen-cpu":
            cmd = [sys.executable, "-m", "qwen_cpu.cli", "serve", str(model), "--port", str(port),
                   "--parallel", str(n_slots), "-t", str(threads), "-c", str(SLOT_CTX), "--log-level", "error"]
        else:
            cmd = [str(llama_server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                   "-np", str(n_slots), "-c", str(SLOT_CTX * n_slots), "-t", str(threads), "-tb", str(threads),
                   "--no-webui"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if engine == "llama-server" and not omp_active:
            # OpenMP's default spin-waiting collapses when the cores are shared (a loaded machine:
            # 2.7 tokens/s instead of 47 on SmolLM2); passive waiting is llama-server's best here
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        self.log = open(f"/tmp/bench_server_{engine}.log", "w")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{engine} did not become healthy")
        self.name = httpx.get(self.url + "/v1/models").json()["data"][0]["id"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def one_stream(client: httpx.AsyncClient, srv: Server, prompt: str, n_tokens: int, ban: dict) -> dict:
    """Send one streamed completion; returns the send time and the arrival time of every chunk."""
    body = {"model": srv.name, "prompt": prompt, "max_tokens": n_tokens, "temperature": 0, "stream": True,
            "logit_bias": ban}
    t0 = time.perf_counter()
    times = []
    async with client.stream("POST", srv.url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("choices") and event["choices"][0].get("text"):
                times.append(time.perf_counter())
    return {"t0": t0, "times": times}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def concurrent(srv: Server, n: int, n_tokens: int, ban: dict) -> dict:
    async with httpx.AsyncClient(timeout=600, limits=FRESH) as client:
        await one_stream(client, srv, PROMPT, 4, ban)  # a first request: its one-time costs stay out
        runs = await asyncio.gather(*[one_stream(client, srv, f"{i}. {PROMPT}", n_tokens, ban) for i in range(n)])
    start = max(r["times"][0] for r in runs)  # every stream has its first token
    end = min(r["times"][-1] for r in runs)   # and none has ended
    decoded = sum(sum(1 for t in r["times"] if start < t <= end) for r in runs)
    gaps = [b - a for r in runs for a, b in zip(r["times"], r["times"][1:])]
    return {"agg_tps": decoded / (end - start) if end > start else 0.0, "itl_p50": percentile(gaps, 0.5) * 1e3,
            "itl_p99": percentile(gaps, 0.99) * 1e3}


async def steady(srv: Server, rate: float, duration: float, ban: dict) -> dict:
    """TTFT of requests arriving every 1/rate s (prompt ~64 tokens, 32 generated)."""
    async with httpx.AsyncClient(timeout=600, limits=FRESH) as client:
        tasks, start = [], time.perf_counter()
        i = 0
        while time.perf_counter() - start < duration:
            tasks.append(asyncio.create_task(one_stream(client, srv, f"Request {i}: {PROMPT}", 32, ban)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        runs = await asyncio.gather(*tasks)
    ttft = [(r["times"][0] - r["t0"]) * 1e3 for r in runs]
    return {"ttft_p50": percentile(ttft, 0.5), "ttft_p99": percentile(ttft, 0.99), "n_requests": len(runs)}


async def busy_ttft(srv: Server, ban: dict) -> dict:
    """TTFT of one request on the idle server, then while 3 long streams run (medians of 3)."""
    async with httpx.AsyncClient(timeout=600, limits=FRESH) as client:
        idle = []
        for i in range(3):
            r = await one_stream(client, srv, f"Idle {i}: {PROMPT}", 2, ban)
            idle.append(r["times"][0] - r["t0"])
        background = [asyncio.create_task(one_stream(client, srv, f"Background {i}: {PROMPT}", 400, ban))
                      for i in range(3)]
        await asyncio.sleep(1.0)  # the three are decoding
        busy = []
        for i in range(3):
            r = await one_stream(client, srv, f"Busy {i}: {PROMPT}", 2, ban)
            busy.append(r["times"][0] - r["t0"])
        for t in background:
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    return {"ttft_idle": statistics.median(idle) * 1e3, "ttft_busy": statistics.median(busy) * 1e3}


def eos_ban(model: Path) -> dict:
    from qwen_cpu.gguf import GGUFFile
    from qwen_cpu.tokenizer import Tokenizer

    f = GGUFFile(model)
    try:
        tok = Tokenizer.from_gguf_metadata(f.metadata)
        return {str(t): -100 for t in sorted(tok.eos_ids)}
    finally:
        f.close()


def machine_facts() -> dict:
    from qwen_cpu import _kernels

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "commit": commit,
            "cores": os.cpu_count(), "isa": _kernels.get_isa()}


def default_models() -> list[Path]:
    from qwen_cpu.cli import demo_model_path

    out = [CACHE / "qwen2.5-0.5b-random-q4_0.gguf", CACHE / "qwen2.5-0.5b-random-q4_k_m.gguf"]
    smol = demo_model_path()
    return [p for p in out if p.exists()] + ([smol] if smol else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-server", type=Path,
                    default=Path.home() / ".cache/qwen-cpu-bench/llama-cpp-python-src/build/bin/llama-server")
    ap.add_argument("--models", default=None, help="comma-separated GGUF paths [0.5B Q4_0, Q4_K_M, SmolLM2]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    ap.add_argument("--rounds", type=int, default=3, help="measurements of each concurrency; the median is shown")
    ap.add_argument("--rate", type=float, default=0.5, help="requests per second for the TTFT run")
    ap.add_argument("--duration", type=float, default=16.0, help="seconds of steady arrivals")
    ap.add_argument("--engines", default="qwen-cpu,llama-server")
    ap.add_argument("--llama-omp-active", action="store_true", help="llama-server with OpenMP's default spin-waiting")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    models = [Path(p) for p in args.models.split(",")] if args.models else default_models()
    engines = args.engines.split(",")
    if "llama-server" in engines and not args.llama_server.exists():
        sys.exit(f"llama-server not found at {args.llama_server} (--llama-server PATH)")
    levels = [int(x) for x in args.concurrency.split(",")]
    facts = machine_facts()
    loads = [os.getloadavg()[0]]
    rows = []
    for model in models:
        ban = eos_ban(model)
        # the engines alternate at every measurement, so that a change in the machine's load
        # falls on both alike
        row = {engine: {"model": model.name, "engine": engine} for engine in engines}
        runs: dict = {(engine, n): [] for engine in engines for n in levels}
        for _ in range(args.rounds):
            for n in levels:
                for engine in engines:
                    srv = Server(engine, model, n, args.threads, args.llama_server, args.llama_omp_active)
                    try:
                        runs[engine, n].append(asyncio.run(concurrent(srv, n, args.tokens, ban)))
                    finally:
                        srv.close()
                    loads.append(os.getloadavg()[0])
                    print(model.name, engine, n, runs[engine, n][-1], flush=True)
        for (engine, n), got in runs.items():  # the median round by aggregate tokens/s
            row[engine][n] = sorted(got, key=lambda r: r["agg_tps"])[(len(got) - 1) // 2]
        for engine in engines:
            srv = Server(engine, model, 4, args.threads, args.llama_server, args.llama_omp_active)
            try:
                row[engine]["steady"] = asyncio.run(steady(srv, args.rate, args.duration, ban))
                row[engine]["busy"] = asyncio.run(busy_ttft(srv, ban))
            finally:
                srv.close()
            loads.append(os.getloadavg()[0])
            print(model.name, engine, row[engine]["steady"], row[engine]["busy"], flush=True)
        rows += [row[engine] for engine in engines]
    text = table(rows, levels, facts, loads, args)
    print(text)
    if not args.no_readme:
        write_readme(text)


def table(rows: list[dict], levels: list[int], facts: dict, loads: list[float], args) -> str:
    head = (f"Measured {facts['date']} on {facts['cpu']} ({facts['cores']} logical CPUs), kernel path "
            f"`{facts['isa']}`, commit {facts['commit']}; {args.threads} threads per server, {args.tokens} tokens "
            f"per stream, greedy, median of {args.rounds} rounds; llama-server with OMP_WAIT_POLICY={'ACTIVE' if args.llama_omp_active else 'PASSIVE'}; "
            f"load average during the run {min(loads):.2f}-{max(loads):.2f} (shared machine).\n\n")
    cols = " | ".join(f"{n} stream{'s' if n > 1 else ''}" for n in levels)
    lines = ["Aggregate decode tokens/s (inter-token latency p50 / p99, ms):\n",
             f"| model | server | {cols} | x at 4 vs 1 |", "|---|---|" + "--:|" * (len(levels) + 1)]
    for r in rows:
        cells = [f"{r[n]['agg_tps']:.1f} ({r[n]['itl_p50']:.0f} / {r[n]['itl_p99']:.0f})" for n in levels]
        scale = f"{r[4]['agg_tps'] / r[1]['agg_tps']:.2f}" if 4 in r and 1 in r else "–"
        lines.append(f"| {r['model']} | {r['engine']} | " + " | ".join(cells) + f" | {scale} |")
    lines += ["", f"Time to first token, ms: steady arrivals ({args.rate:g} requests/s for {args.duration:g} s, "
                  "4 slots, 32 tokens each) p50 / p99; one request on an idle server and while 3 others stream "
                  "(medians of 3):\n",
              "| model | server | steady p50 | steady p99 | idle | 3 streaming | ratio |", "|---|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        s, b = r["steady"], r["busy"]
        lines.append(f"| {r['model']} | {r['engine']} | {s['ttft_p50']:.0f} | {s['ttft_p99']:.0f} | "
                     f"{b['ttft_idle']:.0f} | {b['ttft_busy']:.0f} | {b['ttft_busy'] / b['ttft_idle']:.2f} |")
    return head + "\n".join(lines)


def write_readme(text: str) -> None:
    old = README.read_text(encoding="utf-8")
    if BEGIN not in old or END not in old:
        old = old.rstrip("\n") + f"\n\n## Serving several streams (`bench_server.py`)\n\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    README.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1], encoding="utf-8")
    print(f"written to {README}")


if __name__ == "__main__":
    main()
