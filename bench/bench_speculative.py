#!/usr/bin/env python3
"""Speculative decoding (qwen_cpu.speculative): decode tokens/s with and without a draft, and the
acceptance, greedy, the same answers (checked here: a run whose text differs is reported).

    flock /tmp/qwen-cpu-bench.lock env PYTHONPATH=. python3 bench/bench_speculative.py [-t 1] [-n 128] [--rounds 2]

Rows (models in ~/.cache/qwen-cpu-bench, made by bench/make_models.py and by `qwen-cpu quantize`
of the shipped SmolLM2 file; a missing one is made):
- SmolLM2-135M-Instruct: the shipped Q4_1 file and Q4_0 / Q8_0 requantizations of it, on tasks
  with something to copy (repeat a code snippet; rewrite a function with a renamed variable) and
  without (a story); modes: no draft, draft="lookup", lookup with every proposal checked (no
  adaptive length: what the gate saves), and for the Q8_0 file the Q4_0 file as draft model
  (the same weights, quantized further: high acceptance, a draft ~1.5x cheaper per token);
- SmolLM2 F16 (`qwen-cpu quantize --type f16` of the shipped file) with the same modes and the Q4_0
  file as draft model (the issue's pair: the same weights, the draft reading ~3x fewer bytes);
- the Qwen2.5-0.5B-shaped random-weight Q4_0 file (random weights: little to copy), with lookup
  and with a tiny random Qwen-vocabulary draft model (2 layers, hidden 64: acceptance ~0, so the
  figure shows what the adaptive length costs when drafts fail).
tokens/s: generated tokens after the first / their time (Response.generation_tps), the best of
`rounds` interleaved rounds; x: against no draft in the same rounds.

--row-costs: instead, what checking drafts costs per file (the --only labels): a decode step and
`ModelLease.verify` of 2, 3, 5, 9 and 11 rows after a context of 300 and of 2000 tokens, medians of
15 (each pass rolled back), and an extra row's cost as a fraction of the decode step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from quant_quality import cpu_name  # bench/ is the script's directory, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from qwen_cpu import Model, _kernels  # noqa: E402
from qwen_cpu.cli import demo_model_path  # noqa: E402
from qwen_cpu.generate import collect  # noqa: E402
from qwen_cpu.speculative import DraftLength  # noqa: E402
from qwen_cpu.tools import encode_messages  # noqa: E402

CACHE = Path.home() / ".cache" / "qwen-cpu-bench"

SNIPPET = '''def reusable_prefix(self, ids):
    """How many leading ids are already cached."""
    n = 0
    limit = min(len(self.tokens), len(ids) - 1)
    while n < limit and self.tokens[n] == ids[n]:
        n += 1
    return n
'''
PARAGRAPH = ("The lighthouse at the end of the harbour was built in 1874 by the town's fishermen. For sixty years "
             "its lamp burned paraffin, and the keeper climbed one hundred and twelve steps every evening to light "
             "it. In 1936 the lamp was replaced by an electric one, and the last keeper left in 1952. Today the "
             "tower is a small museum, open on weekends from May to September.")
TASKS = {
    "copy": "Repeat the following code exactly, without any change:\n\n" + SNIPPET,
    "rewrite": "Rewrite this function, renaming the variable `limit` to `bound`. Change nothing else:\n\n" + SNIPPET,
    "quote": PARAGRAPH + "\n\nQuote the sentence of the text above that says when the lamp became electric.",
    "edit": 'Rewrite this paragraph, replacing the word "harbour" with "harbor". Change nothing else:\n\n' + PARAGRAPH,
    "free": "Write a short story about a cat who learns to fly.",
}


def smollm2(qtype: str) -> Path:
    if qtype == "q4_1":
        return demo_model_path()
    out = CACHE / f"smollm2-135m-instruct-{qtype}.gguf"
    if not out.exists():
        subprocess.run([sys.executable, "-m", "qwen_cpu.cli", "quantize", str(demo_model_path()), "-o", str(out),
                        "--type", qtype], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out


def qwen_05b() -> Path:
    out = CACHE / "qwen2.5-0.5b-random-q4_0.gguf"
    if not out.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_models.py"), "--sizes", "0.5b", "--types", "q4_0"],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out


def tiny_qwen() -> Path:
    """A random Qwen2.5-vocabulary model, 2 layers of hidden 64 (the test suite's tiny model)."""
    import json
    import shutil

    from _checkpoints import make_checkpoint
    from _helpers import DATA

    from qwen_cpu.quantize import quantize_model

    out = CACHE / "tiny-qwen-random-q8_0.gguf"
    if not out.exists():
        folder = CACHE / "tiny-qwen-random"
        folder.mkdir(parents=True, exist_ok=True)
        make_checkpoint(folder, hidden=64, ffn=128, n_layer=2, n_head=4, n_kv=2, vocab=151936, bf16=True)
        shutil.copy(DATA / "qwen2.5-tokenizer.json", folder / "tokenizer.json")
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "chat_template": (DATA / "qwen2.5-chat-template.jinja").read_text(encoding="utf-8")}))
        quantize_model(folder, out, "q8_0", progress=False)
    return out


def run(m, ids, n_gen, draft, gated=True):
    chooser = DraftLength.choose
    if not gated:
        DraftLength.choose = lambda self, key, available: available
    try:
        m.reset()
        return collect(m.stream(ids, max_tokens=n_gen, temperature=0, draft=draft))
    finally:
        DraftLength.choose = chooser


def bench_model(label, path, tasks, modes, args):
    """modes: name -> (draft option, gated). Prints one table row per (task, mode)."""
    rows = []
    with Model.load(path, n_ctx=1024, n_threads=args.threads) as m:
        loaded = {}
        for name, (draft, _) in modes.items():
            if isinstance(draft, Path):
                loaded[name] = Model.load(draft, n_ctx=1024, n_threads=args.threads)
        try:
            for task in tasks:
                ids = encode_messages(m.tokenizer, [{"role": "user", "content": TASKS[task]}], None, "bench")
                best, texts = {}, {}
                run(m, ids, 8, None)  # warm: the repacked weights
                for _ in range(args.rounds):
                    for name, (draft, gated) in modes.items():
                        r = run(m, ids, args.n_gen, loaded.get(name, draft), gated)
                        if name not in best or r.generation_tps > best[name].generation_tps:
                            best[name] = r
                        texts.setdefault(name, r.text)
                base = best["none"].generation_tps
                for name, r in best.items():
                    same = "" if texts[name] == texts["none"] else " (text differs!)"
                    acc = f"{r.draft_accepted}/{r.draft_tokens}" if r.draft_tokens else "-"
                    rows.append(f"| {label} | {task} | {name} | {r.generation_tps:.1f} | **{r.generation_tps / base:.2f}** "
                                f"| {acc} |{same}")
                    print(rows[-1], flush=True)
        finally:
            for d in loaded.values():
                d.close()
    return rows


def row_costs(label, path, threads):
    """One table row per depth: ms of a decode step and of verify(k rows), the extra row / step."""
    import statistics

    with Model.load(path, n_ctx=2048 + 16, n_threads=threads) as m, m.hold() as lease:
        for depth in (300, 2000):
            lease.prefill([(i * 7919) % 40000 + 100 for i in range(depth)])
            ms = []
            for k in (1, 2, 3, 5, 9, 11):
                ts = []
                for _ in range(15):
                    t0 = time.perf_counter()
                    lease.decode_step(500) if k == 1 else lease.verify([500 + i for i in range(k)])
                    ts.append(time.perf_counter() - t0)
                    lease.rollback(depth)
                ms.append(1e3 * statistics.median(ts))
            extra = (ms[-1] - ms[0]) / 10 / ms[0]
            print(f"| {label} | {depth} | " + " | ".join(f"{t:.1f}" for t in ms) + f" | **{extra:.2f}** |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--row-costs", action="store_true", help="time decode steps and verification passes instead")
    ap.add_argument("--only", default=None, help="comma-separated labels to run (smol-q4_1, smol-q4_0, smol-q8_0, smol-f16, qwen-0.5b-q4_0)")
    args = ap.parse_args()
    lookup = {"none": (None, True), "lookup": ("lookup", True), "lookup, no gate": ("lookup", False)}
    plan = [
        ("smol-q4_1", lambda: smollm2("q4_1"), list(TASKS), lookup),
        ("smol-q4_0", lambda: smollm2("q4_0"), list(TASKS), lookup),
        ("smol-q8_0", lambda: smollm2("q8_0"), list(TASKS),
         {**lookup, "draft smol-q4_0": (smollm2("q4_0"), True), "draft smol-q4_0, no gate": (smollm2("q4_0"), False)}),
        # The pair: an F16 target (requantized from the shipped Q4_1 file, so the same
        # weights) drafted by its Q4_0 requantization, ~3x fewer bytes per decode step.
        ("smol-f16", lambda: smollm2("f16"), list(TASKS),
         {**lookup, "draft smol-q4_0": (smollm2("q4_0"), True), "draft smol-q4_0, no gate": (smollm2("q4_0"), False)}),
        ("qwen-0.5b-q4_0 (random)", qwen_05b, ["copy", "free"],
         {**lookup, "draft tiny random": (tiny_qwen(), True), "draft tiny random, no gate": (tiny_qwen(), False)}),
    ]
    load0 = os.getloadavg()[0]
    print(f"CPU {cpu_name()} ({os.cpu_count()} logical CPUs), kernel path "
          f"{_kernels.get_isa()}, {args.threads} thread(s), greedy, {args.n_gen} tokens, best of {args.rounds}")
    if args.row_costs:
        print("| model | depth | decode ms | 2 rows | 3 | 5 | 9 | 11 | extra row / decode |\n"
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    else:
        print("| model | task | draft | tok/s | x none | accepted/checked |\n|---|---|---|--:|--:|--:|")
    for label, path, tasks, modes in plan:
        if args.only and label.split(" ")[0] not in args.only.split(","):
            continue
        if args.row_costs:
            row_costs(label, path(), args.threads)
        else:
            bench_model(label, path(), tasks, modes, args)
    print(f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
