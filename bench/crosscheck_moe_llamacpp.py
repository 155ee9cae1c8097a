#!/usr/bin/env python3
"""Mixture-of-experts files written by our quantizer, run by llama.cpp and by us: the next-token
log-probabilities of both engines on the same token ids.

    PYTHONPATH=. python3 bench/crosscheck_moe_llamacpp.py [--server PATH] [--prompts 8]

The checkpoints are tests/data/golden_moe/{qwen2moe,qwen3moe}-tiny-hf (random weights, one matrix
per expert) with the test tokenizer (tests/_checkpoints.py), converted by `quantize_model` to F32 and
Q8_0. llama.cpp's `llama-server` (built from the vendored tree, `WITH_SERVER=1 bash
bench/build_llama_bench.sh`) loads each file; for each prompt of random ids it returns the top-10
log-probabilities of the next token
(`/completion`, n_predict 1, n_probs 10, greedy); ours are the log-softmax of our logits at the
prompt's last position. Printed per file: the largest |difference| of those log-probabilities, and
whether both engines rank the same token first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_top(server: Path, gguf: Path, prompts: list[list[int]]) -> list[dict[int, float]]:
    port = free_port()
    p = subprocess.Popen([str(server), "-m", str(gguf), "--port", str(port), "-t", "2", "-c", "256", "-np", "1",
                          "--no-warmup"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if json.load(urllib.request.urlopen(url + "/health", timeout=1)).get("status") == "ok":
                    break
            except OSError:
                time.sleep(0.1)
        out = []
        for ids in prompts:
            body = json.dumps({"prompt": ids, "n_predict": 1, "n_probs": 10, "temperature": 0, "cache_prompt": False,
                               "post_sampling_probs": False}).encode()
            req = urllib.request.Request(url + "/completion", body, {"Content-Type": "application/json"})
            r = json.load(urllib.request.urlopen(req, timeout=60))
            top = r["completion_probabilities"][0]["top_logprobs"]
            out.append({t["id"]: t["logprob"] for t in top})
        return out
    finally:
        p.terminate()
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", type=Path,
                    default=Path.home() / ".cache/qwen-cpu-bench/llama-cpp-python-src/build/bin/llama-server")
    ap.add_argument("--prompts", type=int, default=8)
    args = ap.parse_args()
    from _checkpoints import write_tokenizer

    from qwen_cpu import Model
    from qwen_cpu.quantize import quantize_model

    rng = np.random.default_rng(7)
    prompts = [rng.integers(0, 256, int(n)).tolist() for n in rng.integers(4, 40, args.prompts)]
    print("| file | largest abs. difference of top-10 log-probs | same top-1 |")
    print("|---|--:|--:|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("qwen2moe-tiny", "qwen3moe-tiny"):
            src = Path(tmp) / model
            shutil.copytree(ROOT / "tests" / "data" / "golden_moe" / f"{model}-hf", src)
            write_tokenizer(src)
            for qtype in ("f32", "q8_0"):
                out = Path(tmp) / f"{model}-{qtype}.gguf"
                quantize_model(src, out, qtype, progress=False)
                theirs = llama_top(args.server, out, prompts)
                worst, same = 0.0, 0
                with Model.load(out, n_ctx=64, kv_type="f32") as m:
                    for ids, top in zip(prompts, theirs):
                        m.reset()
                        lg = m.logits(ids)[-1].astype(np.float64)
                        lp = lg - lg.max() - np.log(np.exp(lg - lg.max()).sum())
                        worst = max(worst, max(abs(lp[i] - v) for i, v in top.items()))
                        same += int(np.argmax(lp)) == max(top, key=top.get)
                print(f"| {model}.{qtype} (ours) | {worst:.2e} | {same}/{len(prompts)} |", flush=True)


if __name__ == "__main__":
    main()
