#!/usr/bin/env python3
"""What a quantized KV cache costs in accuracy (issue #17): KL divergence of the next-token
distribution with q8_0 and q4_0 caches against the f16 cache, over one 4096-token context of
SmolLM2-135M, for qwen-cpu and for llama.cpp's llama-perplexity on the same file and text.

    PYTHONPATH=. python3 bench/kv_quality.py [--llama-perplexity PATH] [--ctx 4096] [--threads 2] [--plain]
        [--engines qwen-cpu,llama.cpp]

Both engines store a quantized cache's rows rotated by a Walsh-Hadamard matrix by default
(csrc/hadamard.h; llama.cpp's attn_rot_k/v); --plain adds the runs with plain rows
(QWEN_CPU_KV_ROTATION=0, LLAMA_ATTN_ROT_DISABLE=1).

Scored positions are llama-perplexity's: the context's first ctx tokens are run, and the
predictions of rows ctx/2 .. ctx-2 (of tokens ctx/2+1 .. ctx-1) are compared, each from the f16
run of the same engine. llama.cpp runs with -fa on (its quantized V cache needs flash attention)
and --chunks 1; it stores the f16 run's log-probabilities as 16-bit values, a small noise floor
of its own. The text: bench/data/kv_text.txt (the GPL-3 and GFDL-1.3 licence texts as Debian
ships them, ~12K tokens: llama-perplexity wants at least 2 x ctx tokens).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from qwen_cpu import Model, _kernels
from qwen_cpu.cli import demo_model_path
from qwen_cpu.sampler import log_softmax

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "bench" / "data" / "kv_text.txt"
LLAMA_PERPLEXITY = Path("/work/peers/llama-cpp-python-src/build/bin/llama-perplexity")
TYPES = ("q8_0", "q4_0")
CHUNK = 256  # rows of logits per forward call: (CHUNK, n_vocab) floats per model at a time


def ours(path: Path, ids: list[int], threads: int, rotate: bool = True) -> dict[str, tuple[float, float, float]]:
    """type -> (mean KL, max KL, top-1 agreement) against the f16 cache over rows ctx/2 .. ctx-2;
    rotate False: the quantized caches hold plain rows (QWEN_CPU_KV_ROTATION=0)."""
    n = len(ids)
    first = n // 2
    saved = os.environ.get("QWEN_CPU_KV_ROTATION")
    os.environ["QWEN_CPU_KV_ROTATION"] = "1" if rotate else "0"  # (read when a model is loaded)
    try:
        models = {t: Model.load(path, n_ctx=n, n_threads=threads, kv_type=t) for t in ("f16",) + TYPES}
    finally:
        if saved is None:
            del os.environ["QWEN_CPU_KV_ROTATION"]
        else:
            os.environ["QWEN_CPU_KV_ROTATION"] = saved
    leases = {t: m.hold() for t, m in models.items()}
    kls = {t: [] for t in TYPES}
    agree = {t: 0 for t in TYPES}
    try:
        for lease in leases.values():
            lease.prefill(ids[:first])  # (its last row is not scored)
        for start in range(first, n - 1, CHUNK):
            chunk = np.asarray(ids[start:min(start + CHUNK, n - 1)], np.int32)
            # every row's logits of a continuation: the engine's own binding (no public call returns them)
            logp = {t: log_softmax(m._require_open().forward(chunk, start, all_logits=True)[0])
                    for t, m in models.items()}
            ref = logp["f16"]
            for t in TYPES:
                kls[t].append((np.exp(ref) * (ref - logp[t])).sum(axis=-1))
                agree[t] += int((ref.argmax(-1) == logp[t].argmax(-1)).sum())
    finally:
        for t in models:
            leases[t].release()
            models[t].close()
    out = {}
    for t in TYPES:
        kl = np.concatenate(kls[t])
        out[t] = (float(kl.mean()), float(kl.max()), agree[t] / len(kl))
    return out


def llama(binary: Path, path: Path, text: Path, ctx: int, threads: int,
          rotate: bool = True) -> dict[str, tuple[float, float, float]]:
    """type -> (mean KL, max KL, top-1 agreement) from llama-perplexity --kl-divergence; rotate
    False: LLAMA_ATTN_ROT_DISABLE=1 (plain rows)."""
    out = {}
    env = dict(os.environ, LLAMA_ATTN_ROT_DISABLE="0" if rotate else "1")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "f16.kld"
        common = [str(binary), "-m", str(path), "-f", str(text), "-c", str(ctx), "--chunks", "1", "-t", str(threads),
                  "-fa", "on"]
        subprocess.run(common + ["--kl-divergence-base", str(base)], check=True, capture_output=True, text=True, env=env)
        for t in TYPES:
            p = subprocess.run(common + ["--kl-divergence-base", str(base), "--kl-divergence", "-ctk", t, "-ctv", t],
                               check=True, capture_output=True, text=True, env=env)
            log = p.stdout + p.stderr
            mean = float(re.search(r"Mean\s+KLD:\s+([-0-9.e]+)", log).group(1))
            top = float(re.search(r"Maximum KLD:\s+([-0-9.e]+)", log).group(1))
            same = float(re.search(r"Same top p:\s+([-0-9.e]+)", log).group(1)) / 100
            out[t] = (mean, top, same)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama-perplexity", type=Path, default=LLAMA_PERPLEXITY)
    ap.add_argument("--plain", action="store_true", help="also run both engines with plain (unrotated) cache rows")
    ap.add_argument("--engines", default="qwen-cpu,llama.cpp", help="comma-separated: qwen-cpu, llama.cpp")
    args = ap.parse_args()
    engines = set(args.engines.split(","))
    path = demo_model_path()
    with Model.load(path, n_ctx=64) as m:
        ids = m.tokenize(TEXT.read_text(encoding="utf-8"), add_special=True)[:args.ctx]
    print(f"{path.name}, {len(ids)}-token context, scored rows {len(ids) // 2}..{len(ids) - 2}, "
          f"kernel path {_kernels.get_isa()}, {args.threads} threads")
    print("| engine | K/V cache | mean KL vs f16 | max KL | top-1 agreement |")
    print("|---|---|--:|--:|--:|")
    rotations = (True, False) if args.plain else (True,)
    if "qwen-cpu" in engines:
        for rotate in rotations:
            name = "qwen-cpu" if rotate else "qwen-cpu, `QWEN_CPU_KV_ROTATION=0`"
            for t, (mean, top, same) in ours(path, ids, args.threads, rotate).items():
                print(f"| {name} | {t} | {mean:.6f} | {top:.4f} | {same:.2%} |", flush=True)
    if "llama.cpp" in engines:
        if not args.llama_perplexity.is_file():
            print(f"(llama.cpp skipped: no {args.llama_perplexity})")
            return
        for rotate in rotations:
            name = "llama.cpp" if rotate else "llama.cpp, `LLAMA_ATTN_ROT_DISABLE=1`"
            for t, (mean, top, same) in llama(args.llama_perplexity, path, TEXT, args.ctx, args.threads, rotate).items():
                print(f"| {name} | {t} | {mean:.6f} | {top:.4f} | {same:.2%} |", flush=True)


if __name__ == "__main__":
    main()
