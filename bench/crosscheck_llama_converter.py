#!/usr/bin/env python3
"""Cross-check of our quantizer's HF path against llama.cpp's converter (convert_hf_to_gguf.py), on
the tiny checkpoints of tests/data/golden_hf (qwen3; llama with Llama 3.1 rope scaling) and of
tests/data/golden_moe (qwen2moe with a shared expert, qwen3moe; one matrix per expert, as
transformers saves them, given the test tokenizer of tests/_checkpoints.py).

Both convert each checkpoint at F32; the script compares the arch's metadata keys, the tensor names,
shapes and types, and the tensor data (rope_freqs to float32 rounding: llama.cpp computes its factors
in float32), then loads llama.cpp's file in qwen-cpu and compares its logits with transformers'
reference. With llama.cpp's llama-perplexity binary (LLAMA_PERPLEXITY), our Q8_0 file of each model
also runs in llama.cpp: its perplexity on tests/data/english_paragraph.txt (chunks of 128, the
second half of each scored, llama.cpp's convention) next to ours computed the same way from our
logits. Needs a llama.cpp source tree (LLAMA_CPP, default: the vendored one of /work/peers) and
torch + transformers (its converter's imports); run by hand, results in bench/README.md.

    PYTHONPATH=. python3 bench/crosscheck_llama_converter.py

The converter is run in this process with two stand-ins for what our tiny test tokenizer lacks
(not what is compared): set_vocab goes straight to its GPT-2 BPE path (the sentencepiece probe
needs a package not installed here), and the pre-tokenizer is named 'qwen2' (its hash table does
not know our 263-token tokenizer).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LLAMA_CPP = Path(os.environ.get("LLAMA_CPP", "/work/peers/llama-cpp-python-src/llama_cpp_python-0.3.36/vendor/llama.cpp"))
DATA = ROOT / "tests" / "data" / "golden_hf"
MOE = ROOT / "tests" / "data" / "golden_moe"
LLAMA_PERPLEXITY = Path(os.environ.get("LLAMA_PERPLEXITY", "/work/peers/llama-cpp-python-src/build/bin/llama-perplexity"))
TEXT = ROOT / "tests" / "data" / "english_paragraph.txt"
N_CTX = 128


def perplexity_ours(path: Path) -> float:
    """llama-perplexity's estimate from our logits: chunks of N_CTX tokens (no BOS: the test
    tokenizer has none), each scoring its tokens N_CTX/2 + 1 .. N_CTX - 1."""
    from qwen_cpu import Model  # noqa: PLC0415
    from qwen_cpu.sampler import log_softmax  # noqa: PLC0415

    with Model.load(path, n_ctx=N_CTX, n_threads=2) as m:
        toks = m.tokenize(TEXT.read_text())
        nll, n = 0.0, 0
        for c in range(len(toks) // N_CTX):
            chunk = toks[c * N_CTX:(c + 1) * N_CTX]
            lg = m.logits(chunk).astype(np.float64)
            for j in range(N_CTX // 2, N_CTX - 1):
                nll -= float(log_softmax(lg[j])[chunk[j + 1]])
                n += 1
    return float(np.exp(nll / n))


def perplexity_llama_cpp(path: Path) -> float:
    """llama-perplexity's final estimate. Its log lines come from a worker thread, and in some runs
    from this script the last ones were missing though it exited with status 0: up to 3 tries."""
    for _ in range(3):
        out = subprocess.run([str(LLAMA_PERPLEXITY), "-m", str(path), "-f", str(TEXT), "-c", str(N_CTX), "-b", str(N_CTX),
                              "-t", "2"], capture_output=True, text=True, timeout=300)
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", out.stdout + out.stderr)
        if m:
            return float(m.group(1))
        if out.returncode:
            break
    raise RuntimeError(f"llama-perplexity failed on {path} (exit status {out.returncode}):\n"
                       f"{(out.stdout + out.stderr)[-2000:]}")


def llama_cpp_convert(folder: Path, out: Path) -> None:
    sys.path[:0] = [str(LLAMA_CPP / "gguf-py"), str(LLAMA_CPP)]
    import convert_hf_to_gguf as conv  # noqa: PLC0415
    from conversion import base  # noqa: PLC0415

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
    from conversion import llama, qwen  # noqa: PLC0415

    for cls in (qwen.Qwen2Model, qwen.Qwen2MoeModel, qwen.Qwen3MoeModel, llama.LlamaModel):
        cls.set_vocab = lambda self: self._set_vocab_gpt2()
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", str(folder), "--outtype", "f32", "--outfile", str(out)]
    try:
        conv.main()
    finally:
        sys.argv = argv


def read(path: Path):
    import gguf  # noqa: PLC0415

    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    keys = {k: f.contents() for k, f in r.fields.items() if k.startswith(arch + ".")}
    tensors = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), np.array(t.data)) for t in r.tensors}
    return keys, tensors


def checkpoints(tmp: Path):
    """(name, HF folder, token ids, transformers' F32 logits) of every checkpoint compared."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _checkpoints import write_tokenizer  # noqa: PLC0415

    manifest = json.loads((DATA / "manifest.json").read_text())
    for model in manifest["models"]:
        yield model, DATA / model, manifest["tokens"], np.load(DATA / f"{model}.f32.npz")["logits"]
    manifest = json.loads((MOE / "manifest.json").read_text())
    for model in ("qwen2moe-tiny", "qwen3moe-tiny"):
        folder = tmp / f"{model}-hf"
        shutil.copytree(MOE / f"{model}-hf", folder)
        write_tokenizer(folder)
        yield model, folder, manifest["tokens"], np.load(MOE / f"{model}.f32.npz")["logits"]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from qwen_cpu import Model  # noqa: PLC0415
    from qwen_cpu.quantize import quantize_model  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp())
    for model, folder, tokens, ref in checkpoints(tmp):
        theirs, ours = tmp / f"{model}.llama_cpp.gguf", tmp / f"{model}.ours.gguf"
        llama_cpp_convert(folder, theirs)
        quantize_model(folder, ours, "f32", progress=False)
        (tk, tt), (ok, ot) = read(theirs), read(ours)
        print(f"== {model}")
        for k in sorted(set(tk) | set(ok)):
            if k not in ok or k not in tk or not np.allclose(tk[k], ok[k], rtol=1e-6):
                print(f"  key {k}: llama.cpp {tk.get(k)!r}, ours {ok.get(k)!r}")
        print(f"  {len(tk)} arch keys in llama.cpp's file, {len(ok)} in ours; listed above: those that differ")
        assert set(tt) == set(ot), set(tt) ^ set(ot)
        worst = 0.0
        for name, (ttype, tshape, tdata) in tt.items():
            otype, oshape, odata = ot[name]
            assert (ttype, tshape) == (otype, oshape), (name, ttype, tshape, otype, oshape)
            d = float(np.abs(tdata.astype(np.float64) - odata).max())
            if name == "rope_freqs.weight":
                print(f"  rope_freqs llama.cpp {tdata.tolist()}\n             ours      {odata.tolist()}")
                assert np.allclose(tdata, odata, rtol=1e-6)
            else:
                assert d == 0, (name, d)
            worst = max(worst, d)
        print(f"  {len(tt)} tensors: same names, shapes and types; data identical "
              f"(largest difference {worst:.1e}, rope_freqs only)")
        for label, path in (("llama.cpp's file", theirs), ("our file", ours)):
            with Model.load(path, n_ctx=128, n_threads=2, kv_type="f32") as m:
                err = float(np.abs(m.logits(tokens) - ref).max() / np.abs(ref).max())
            print(f"  qwen-cpu on {label}: logits rel err vs transformers {err:.1e}")
        if LLAMA_PERPLEXITY.exists():
            q8 = quantize_model(folder, tmp / f"{model}.q8_0.gguf", "q8_0", progress=False).path
            ours_ppl, theirs_ppl = perplexity_ours(q8), perplexity_llama_cpp(q8)
            print(f"  our Q8_0 file: perplexity qwen-cpu {ours_ppl:.4f}, llama.cpp {theirs_ppl:.4f} "
                  f"({100 * (ours_ppl / theirs_ppl - 1):+.3f}%)")


if __name__ == "__main__":
    main()
