#!/usr/bin/env python3
"""A random-weight Qwen3-MoE at Qwen3-30B-A3B's per-layer dimensions, scaled to fit this machine.

    PYTHONPATH=. python3 bench/make_moe_model.py [--out DIR] [--layers 8] [--experts 32] [--types q4_0,q4_k_m]

Qwen3-30B-A3B's config.json (hidden 2048, 32 query / 4 KV heads of 128, 8 experts used per token,
expert FFN 768, vocabulary 151936, untied output) with fewer layers (48 -> --layers) and experts
(128 -> --experts): a token reads its 8 experts, the attention and the output matrix, as in the real
model, while the file holds n_layer * n_expert experts. Writes the HF folder DIR/qwen3moe-{L}l{E}e-random/
(F16 safetensors, one matrix per expert as transformers saves them, the Qwen2.5 tokenizer) and
converts it with `qwen-cpu quantize` (so the files are our quantizer's) to
DIR/qwen3moe-{L}l{E}e-random-{type}.gguf. Default DIR: ~/.cache/qwen-cpu-bench; existing files are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from make_models import DEFAULT_OUT, ROOT, VOCAB, package_root, write_random_safetensors

REAL = dict(hidden_size=2048, num_attention_heads=32, num_key_value_heads=4, head_dim=128, intermediate_size=6144,
            moe_intermediate_size=768, num_experts_per_tok=8, norm_topk_prob=True)


def tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, hd, ff = cfg["hidden_size"], cfg["head_dim"], cfg["moe_intermediate_size"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,),
            p + "self_attn.o_proj.weight": (h, q), p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate.weight": (cfg["num_experts"], h),
        })
        for e in range(cfg["num_experts"]):
            shapes.update({p + f"mlp.experts.{e}.gate_proj.weight": (ff, h), p + f"mlp.experts.{e}.up_proj.weight": (ff, h),
                           p + f"mlp.experts.{e}.down_proj.weight": (h, ff)})
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (VOCAB, h)
    return shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--types", default="q4_0,q4_k_m")
    args = ap.parse_args()
    name = f"qwen3moe-{args.layers}l{args.experts}e-random"
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", **REAL,
           "num_hidden_layers": args.layers, "num_experts": args.experts, "vocab_size": VOCAB,
           "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
           "tie_word_embeddings": False, "hidden_act": "silu", "decoder_sparse_step": 1, "mlp_only_layers": [],
           "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "float16"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    (folder / "tokenizer.json").write_bytes((ROOT / "tests" / "data" / "qwen2.5-tokenizer.json").read_bytes())
    template = (ROOT / "tests" / "data" / "qwen2.5-chat-template.jinja").read_text(encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
        "chat_template": template}))
    st = folder / "model.safetensors"
    if not st.exists():
        t0 = time.perf_counter()
        write_random_safetensors(st, tensor_shapes(cfg), 0)
        print(f"wrote {st} ({st.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)
    env = {**os.environ, "PYTHONPATH": package_root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for qtype in args.types.split(","):
        dst = args.out / f"{name}-{qtype}.gguf"
        if dst.exists():
            print(f"exists: {dst}")
            continue
        subprocess.run([sys.executable, "-m", "qwen_cpu.cli", "quantize", str(folder), "-o", str(dst),
                        "--type", qtype], check=True, env=env)


if __name__ == "__main__":
    main()
