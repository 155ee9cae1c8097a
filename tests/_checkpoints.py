"""Tiny synthetic Hugging Face checkpoints (config, safetensors, tokenizer) for the quantize tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qwen_cpu.safetensors_io import write_safetensors

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def write_tokenizer(folder: Path, eos: str = "<|im_end|>") -> int:
    """A byte-level BPE tokenizer with Qwen2's pre-tokenizer; returns its vocabulary size."""
    chars = byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    merges = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"]]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    added = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<tool_call>", False)]
    added_tokens = []
    for text, special in added:
        added_tokens.append({"id": len(vocab) + len(added_tokens), "content": text, "single_word": False,
                             "lstrip": False, "rstrip": False, "normalized": False, "special": special})
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    (folder / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": eos, "pad_token": "<|endoftext|>",
        "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
    }), encoding="utf-8")
    return len(vocab) + len(added_tokens)


def bf16_round(v: np.ndarray) -> np.ndarray:
    """float32 -> the float32 value of its bfloat16 rounding (nearest, ties to even)."""
    bits = v.astype(np.float32).view(np.uint32).astype(np.uint64)
    return (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint32) << 16).view(np.float32)


def make_checkpoint(folder: Path, *, arch: str = "Qwen2ForCausalLM", hidden: int = 128, ffn: int = 256,
                    n_layer: int = 8, n_head: int = 4, n_kv: int = 2, vocab: int = 320, tied: bool = True,
                    shards: int = 1, bf16: bool = True, seed: int = 0, rope_scaling: dict | None = None,
                    ) -> dict[str, np.ndarray]:
    """Write a random checkpoint; returns its float32 tensors by HF name (bf16-rounded if bf16)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hd = hidden // n_head
    qwen = arch == "Qwen2ForCausalLM"
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden)) * 0.05}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
        t[p + "self_attn.q_proj.weight"] = rng.standard_normal((n_head * hd, hidden)) * 0.05
        t[p + "self_attn.k_proj.weight"] = rng.standard_normal((n_kv * hd, hidden)) * 0.05
        t[p + "self_attn.v_proj.weight"] = rng.standard_normal((n_kv * hd, hidden)) * 0.05
        if qwen:
            t[p + "self_attn.q_proj.bias"] = rng.standard_normal(n_head * hd) * 0.1
            t[p + "self_attn.k_proj.bias"] = rng.standard_normal(n_kv * hd) * 0.1
            t[p + "self_attn.v_proj.bias"] = rng.standard_normal(n_kv * hd) * 0.1
        t[p + "self_attn.o_proj.weight"] = rng.standard_normal((hidden, n_head * hd)) * 0.05
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
        t[p + "mlp.gate_proj.weight"] = rng.standard_normal((ffn, hidden)) * 0.05
        t[p + "mlp.up_proj.weight"] = rng.standard_normal((ffn, hidden)) * 0.05
        t[p + "mlp.down_proj.weight"] = rng.standard_normal((hidden, ffn)) * 0.05
    t["model.norm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
    if not tied:
        t["lm_head.weight"] = rng.standard_normal((vocab, hidden)) * 0.05
    t = {k: v.astype(np.float32) for k, v in t.items()}
    if bf16:  # the values the file will hold: rounded to bfloat16 (nearest even), as write_safetensors does
        t = {k: bf16_round(v) for k, v in t.items()}
    names = list(t)
    if shards == 1:
        write_safetensors(folder / "model.safetensors", t, bf16=bf16)
    else:
        weight_map = {}
        for s in range(shards):
            part = {n: t[n] for n in names[s::shards]}
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(folder / fname, part, bf16=bf16)
            weight_map.update({n: fname for n in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg = {"architectures": [arch], "model_type": "qwen2" if qwen else "llama", "hidden_size": hidden,
           "intermediate_size": ffn, "num_hidden_layers": n_layer, "num_attention_heads": n_head,
           "num_key_value_heads": n_kv, "vocab_size": vocab, "max_position_embeddings": 4096,
           "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": tied}
    if rope_scaling:
        cfg["rope_scaling"] = rope_scaling
    (folder / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(folder)
    return t


def make_gguf(folder: Path, qtype: str = "q8_0", generation_config: dict | None = None, name: str = "tiny.gguf",
              **checkpoint) -> Path:
    """A small random Qwen2 checkpoint (2 layers, hidden 64; make_checkpoint's keywords override),
    with generation_config.json if given, converted by our quantizer; returns the GGUF's path."""
    from qwen_cpu.quantize import quantize_model

    make_checkpoint(folder, **{"hidden": 64, "ffn": 128, "n_layer": 2, **checkpoint})
    if generation_config is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation_config))
    return quantize_model(folder, folder / name, qtype, progress=False).path
