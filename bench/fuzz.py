"""Longer fuzz runs of the targets in tests/fuzz_targets.py (CI runs each for a few seconds).

    python bench/fuzz.py gguf --seconds 600               # atheris when installed, else random
    python bench/fuzz.py tokenizer --seconds 300 --engine random --seed 3
    python bench/fuzz.py model --seconds 300 --engine atheris

Targets: gguf (the GGUF reader: only GGUFError may escape), model (Model.load + tokenizer + a
forward pass on a mutated tiny model: only QwenCpuError), tokenizer (hostile text through the
Qwen2.5 tokenizer: no crash or hang, and the NFC round trip holds).

Engines: `atheris` (coverage-guided libFuzzer over Python, `pip install atheris`; it instruments
qwen_cpu's Python, starts from the target's seed and keeps its corpus in build/fuzz/<target>)
and `random` (seeded mutation of the seed input, tests/fuzz_targets.py's `mutate`). Prints the
iteration count and writes any crashing input to build/fuzz/crash-<target>-*; the exit status is
non-zero when something was found.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
OUT = ROOT / "build" / "fuzz"


def save_crash(target: str, data: bytes) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"crash-{target}-{hashlib.sha1(data).hexdigest()[:12]}"
    path.write_bytes(data)
    return path


def run_random(target: str, seconds: float, seed: int) -> int:
    import fuzz_targets

    t0 = time.monotonic()
    total, crashes = 0, 0
    # Keep going after a finding (with the next seed) so one run reports every distinct problem.
    while time.monotonic() - t0 < seconds:
        try:
            total += fuzz_targets.run_random(target, seconds - (time.monotonic() - t0), seed=seed)
        except Exception as e:  # a finding: record it and continue
            crashes += 1
            data = getattr(e, "fuzz_input", b"")
            print(f"FINDING #{crashes} (seed {seed}): {type(e).__name__}: {str(e)[:300]}")
            traceback.print_exc(limit=-3)
            print(f"  input saved to {save_crash(target, data)}")
        seed += 1
    elapsed = time.monotonic() - t0
    print(f"{target}: random engine, {total} inputs in {elapsed:.0f} s ({total / elapsed:.0f}/s), "
          f"{crashes} findings")
    return 1 if crashes else 0


def run_atheris(target: str, seconds: float, seed: int) -> int:
    import atheris

    with atheris.instrument_imports(include=["qwen_cpu"]):
        import fuzz_targets
        import qwen_cpu.gguf  # noqa: F401  (imported under instrumentation)
        import qwen_cpu.model  # noqa: F401
        import qwen_cpu.tokenizer  # noqa: F401
    fn, seed_fn = fuzz_targets.TARGETS[target]
    corpus = OUT / target
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "seed").write_bytes(seed_fn())
    fuzz_targets.qwen_tokenizer() if target == "tokenizer" else None  # build outside the clock

    def one_input(data: bytes) -> None:
        fn(data)

    args = [sys.argv[0], str(corpus), f"-max_total_time={int(seconds)}", f"-seed={seed + 1}",
            "-timeout=60", "-rss_limit_mb=4096", f"-artifact_prefix={OUT}/crash-{target}-",
            "-print_final_stats=1"]
    if target != "tokenizer":
        args.append(f"-max_len={len(seed_fn()) + 4096}")
    else:
        args.append("-max_len=3000")
    atheris.Setup(args, one_input)
    # libFuzzer prints 'Done N runs in S second(s)' and exits the process; an escaping exception or
    # a crash leaves an artifact and a non-zero status.
    atheris.Fuzz()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=["gguf", "model", "tokenizer"])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    a = ap.parse_args()
    engine = a.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    os.environ.setdefault("QWEN_CPU_NUM_THREADS", "1")
    print(f"fuzzing {a.target} for {a.seconds:.0f} s with the {engine} engine (seed {a.seed})", flush=True)
    if engine == "atheris":
        return run_atheris(a.target, a.seconds, a.seed)
    return run_random(a.target, a.seconds, a.seed)


if __name__ == "__main__":
    sys.exit(main())
