#!/usr/bin/env python3
"""Random-weight Qwen2.5-shaped models at the real 0.5B and 1.5B dimensions, for the benchmarks.

    PYTHONPATH=. python3 bench/make_models.py [--out DIR] [--sizes 0.5b,1.5b] [--types q4_0,q8_0,q4_k_m,f16]

For each size, writes an HF folder DIR/qwen2.5-{size}-random/ (config.json, model.safetensors in F16,
the Qwen2.5 tokenizer.json and tokenizer_config.json with its chat template from tests/data), then
converts it with `qwen-cpu quantize` to DIR/qwen2.5-{size}-random-{type}.gguf. The values are random
(weights ~ N(0, 0.02), norm weights ~ 1), so the text is gibberish but every byte is read as in the
real model, which is all speed needs. Default DIR: ~/.cache/qwen-cpu-bench. Existing files are kept
(delete them to rebuild). Memory: the safetensors file is written one tensor at a time, and each
conversion runs in its own process; the peak is about one embedding matrix in float32 (0.9 GB at 1.5B).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path.home() / ".cache" / "qwen-cpu-bench"

# Qwen2.5-0.5B/1.5B(-Instruct) config.json values that shape the network (tied embeddings in both)
SIZES = {
    "0.5b": dict(num_hidden_layers=24, hidden_size=896, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864),
    "1.5b": dict(num_hidden_layers=28, hidden_size=1536, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960),
}
VOCAB = 151936  # embedding rows (the tokenizer has 151665 tokens; the rest are padding)


def tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """HF name -> shape, in the order the checkpoint stores them."""
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h), p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, q),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (ff, h), p + "mlp.up_proj.weight": (ff, h),
            p + "mlp.down_proj.weight": (h, ff),
        })
    shapes["model.norm.weight"] = (h,)
    return shapes


def write_random_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    """Write F16 tensors one at a time (never the whole model in memory); each tensor has its own
    seeded stream, so the file is the same on every machine."""
    header, pos = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for i, (name, shape) in enumerate(shapes.items()):
            rng = np.random.default_rng([seed, i])
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                x = 1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32)
            else:  # weights and biases
                x = 0.02 * rng.standard_normal(shape, dtype=np.float32)
            fh.write(x.astype(np.float16).tobytes())
            del x
    os.replace(tmp, path)


def make_checkpoint(folder: Path, size: str, seed: int = 0) -> None:
    """The HF folder of one size (skipped if its model.safetensors exists)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **SIZES[size], "vocab_size": VOCAB,
           "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
           "tie_word_embeddings": True, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
           "torch_dtype": "float16"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    shutil.copyfile(ROOT / "tests" / "data" / "qwen2.5-tokenizer.json", folder / "tokenizer.json")
    template = (ROOT / "tests" / "data" / "qwen2.5-chat-template.jinja").read_text(encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
        "chat_template": template}))
    st = folder / "model.safetensors"
    if not st.exists():
        t0 = time.perf_counter()
        write_random_safetensors(st, tensor_shapes(cfg), seed)
        print(f"wrote {st} ({st.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)


def package_root() -> str:
    """The folder holding the qwen_cpu this process would import (the conversions use the same one)."""
    spec = importlib.util.find_spec("qwen_cpu")
    return str(Path(spec.origin).parent.parent) if spec else str(ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--sizes", default="0.5b,1.5b")
    ap.add_argument("--types", default="q4_0,q8_0,q4_k_m,f16")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": package_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for size in args.sizes.split(","):
        folder = args.out / f"qwen2.5-{size}-random"
        make_checkpoint(folder, size)
        for qtype in args.types.split(","):
            dst = args.out / f"qwen2.5-{size}-random-{qtype}.gguf"
            if dst.exists():
                print(f"exists: {dst}")
                continue
            # a process per conversion: its memory is returned to the system when it ends
            subprocess.run([sys.executable, "-m", "qwen_cpu.cli", "quantize", str(folder), "-o", str(dst),
                            "--type", qtype], check=True, env=env)


if __name__ == "__main__":
    main()
