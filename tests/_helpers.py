"""Helpers shared by several test files: test data paths, the weight-type table and random
weights of the kernel tests, error measures, resident-memory probes (Linux /proc)."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

from qwen_cpu import _kernels

DATA = Path(__file__).parent / "data"
QWEN_HEADER = DATA / "qwen2-7b-q4_k_m.header.gguf"  # the header of a real Qwen2 GGUF (tokenizer metadata)
QWEN_JSON = DATA / "qwen2.5-tokenizer.json"

# Subprocesses (the CLI tests) start outside the repository, so that `python -m` imports the
# installed package and not the source tree (which has no compiled module after a plain
# `pip install .`); a PYTHONPATH pointing at a development build is kept, made absolute.
CWD = tempfile.gettempdir()
PYTHONPATH = os.pathsep.join(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)


@functools.lru_cache(maxsize=None)
def cached_metadata(path: Path) -> dict:
    """The metadata dict, read once per process with the project's reader (0.1 s; gguf-py needs
    10-40 s for the Qwen header, and is the reference only where a test says so). Callers must not
    modify the dict."""
    from qwen_cpu.gguf import GGUFFile

    with GGUFFile(path, metadata_only=True) as f:
        return dict(f.metadata)


# ---- kernel test data ---------------------------------------------------------------------------
# weight type -> (elements per block, bytes per block, byte offsets of its f16 scale fields)
WEIGHT_TYPES = {
    T.F32: (1, 4, ()),
    T.F16: (1, 2, ()),
    T.BF16: (1, 2, ()),
    T.Q4_0: (32, 18, (0,)),
    T.Q4_1: (32, 20, (0, 2)),
    T.Q5_0: (32, 22, (0,)),
    T.Q5_1: (32, 24, (0, 2)),
    T.Q8_0: (32, 34, (0,)),
    T.Q2_K: (256, 84, (80, 82)),
    T.Q3_K: (256, 110, (108,)),
    T.Q4_K: (256, 144, (0, 2)),
    T.Q5_K: (256, 176, (0, 2)),
    T.Q6_K: (256, 210, (208,)),
}
ACT_Q8_0, ACT_Q8_1, ACT_Q8_K, ACT_F32 = int(T.Q8_0), 9, int(T.Q8_K), int(T.F32)
ACT_BLOCK = {ACT_Q8_0: 32, ACT_Q8_1: 32, ACT_Q8_K: 256, ACT_F32: 1}


def act_type(wtype):
    """The activation format of a weight type (the same on every path: see the test below)."""
    return _kernels.weight_act_type(int(wtype))


def random_weights(rng, wtype, n, fill=None):
    """n values of wtype as raw bytes: random (or all `fill`) quant bytes, with finite random f16
    scales (positive and negative) in the scale fields so every byte pattern gives finite values."""
    blk, nbytes, scale_offsets = WEIGHT_TYPES[wtype]
    if wtype == T.F32:
        return rng.standard_normal(n).astype(np.float32).view(np.uint8)
    if wtype == T.F16:
        return rng.standard_normal(n).astype(np.float16).view(np.uint8)
    if wtype == T.BF16:
        bits = rng.standard_normal(n).astype(np.float32).view(np.uint32) >> 16
        return bits.astype(np.uint16).view(np.uint8)
    nb = n // blk
    if fill is None:
        w = rng.integers(0, 256, (nb, nbytes), dtype=np.uint8)
    else:
        w = np.full((nb, nbytes), fill, dtype=np.uint8)
    for off in scale_offsets:
        scales = (rng.standard_normal(nb) * 0.05).astype(np.float16)
        w[:, off:off + 2] = scales.view(np.uint8).reshape(nb, 2)
    return w.reshape(-1)


def act_values(atype, a, n):
    """float64 values (n,) of activation bytes a in format atype (the byte layout of blocks.h)."""
    if atype == ACT_F32:
        return a.view(np.float32).astype(np.float64)
    if atype == ACT_Q8_K:
        b = a.reshape(-1, 292)
        d = b[:, :4].copy().view(np.float32)[:, 0].astype(np.float64)
        return (b[:, 4:260].view(np.int8) * d[:, None]).reshape(-1)
    head = 4 if atype == ACT_Q8_1 else 2
    b = a.reshape(-1, head + 32)
    d = b[:, :2].copy().view(np.float16)[:, 0].astype(np.float64)
    return (b[:, head:].view(np.int8) * d[:, None]).reshape(-1)


def rel_rmse(y, x) -> float:
    """RMS of y - x over the RMS of x (float64)."""
    x = np.asarray(x, np.float64)
    return float(np.sqrt(np.mean((np.asarray(y, np.float64) - x) ** 2) / max(np.mean(x**2), 1e-30)))


# ---- resident memory (Linux /proc) --------------------------------------------------------------
def rss_bytes() -> int:
    """This process's resident set, in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mapping_rss_kib(address: int) -> int | None:
    """Resident KiB of this process's mapping that starts at address (Linux /proc/self/smaps),
    else None. One mapping, not every mapping of the file: other tests may hold the file open."""
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line: start-end perms ...
            inside = int(head[0].split("-")[0], 16) == address
        elif inside and line.startswith("Rss:"):
            return int(head[1])
    return None


# ---- tool definitions shared by the tool-call tests (test_tools.py, test_server_tools.py) ----------
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                                                   "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                                  "required": ["a", "b"]}}}
TOOLS = [WEATHER, ADD]
