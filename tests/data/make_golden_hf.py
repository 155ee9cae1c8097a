#!/usr/bin/env python3
"""Tiny random-weight Hugging Face checkpoints (Qwen3ForCausalLM; LlamaForCausalLM with Llama 3.1
rope scaling) and transformers' logits for them, for the tests that convert the checkpoints with our
quantizer's HF path and compare our logits (tests/test_arch_models.py).

Run once by hand (needs torch + transformers and the built extension); the outputs under
tests/data/golden_hf/ are committed so the suite needs neither torch nor transformers:

    PYTHONPATH=. python3 tests/data/make_golden_hf.py

Per model:
  1. seeded random float32 weights (numpy), rounded to bfloat16 and written as an HF folder:
     config.json (transformers' own save_pretrained of the config), model.safetensors (bf16),
     tokenizer.json / tokenizer_config.json (tests/_checkpoints.write_tokenizer: a tiny byte BPE);
  2. per weight TYPE the folder converted by qwen_cpu.quantize.quantize_model into a GGUF in a
     temporary folder, read back with gguf-py (dequantized; llama Q/K rows un-permuted), its tensors
     renamed to HF names through qwen_cpu/arch.py's table, loaded into the transformers model, and
     the 80 test tokens run in float64: reference logits <model>.<type>.npz. For f32 the read-back
     weights equal the bf16 checkpoint's exactly (asserted), so its reference is the checkpoint's.
  3. manifest.json: tokens, configs, versions, and per file a digest of the GGUF tensor data our
     quantizer wrote (the test checks it still writes the same, so the reference still applies).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

OUT = Path(__file__).resolve().parent / "golden_hf"
N_TOKENS, TOKEN_SEED = 80, 4321

MODELS = {
    # head_dim 128 with 4 heads: q_dim 512 != n_embd 256 (Qwen3's shape: head_dim from the file);
    # every row a multiple of 256, so q4_k_m's 2-D weights are Q4_K (Q6_K for attn_v/ffn_down in
    # its more-bits layers and the tied output)
    "qwen3-tiny": dict(cls="Qwen3ForCausalLM", n_vocab=320, n_embd=256, n_layer=2, n_head=4, n_kv_head=2,
                       head_dim=128, n_ff=256, rope_theta=1.0e6, rms_eps=1e-6, n_ctx=128, tied=True, seed=201,
                       types=["f32", "q8_0", "q4_0", "q4_k_m"]),
    # Llama 3.1 rope scaling over a 32-position original context, so that the 80 test tokens reach
    # 2.5x beyond it; rope_theta 100 puts the 8 pairs' wavelengths (6.3 .. 3e2) in all three bands
    # (< 32/4 unscaled, 8 .. 32 smoothed, > 32 divided by the factor)
    "llama3-tiny": dict(cls="LlamaForCausalLM", n_vocab=320, n_embd=64, n_layer=2, n_head=4, n_kv_head=2,
                        head_dim=16, n_ff=160, rope_theta=100.0, rms_eps=1e-5, n_ctx=128, tied=False, seed=202,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=32),
                        types=["f32", "q8_0"]),
}


def hf_config(cfg: dict):
    import transformers  # noqa: PLC0415

    rope = {"rope_type": "default", "rope_theta": cfg["rope_theta"]}
    if "rope_scaling" in cfg:
        rope = {**cfg["rope_scaling"], "rope_theta": cfg["rope_theta"]}
    common = dict(vocab_size=cfg["n_vocab"], hidden_size=cfg["n_embd"], num_hidden_layers=cfg["n_layer"],
                  num_attention_heads=cfg["n_head"], num_key_value_heads=cfg["n_kv_head"], head_dim=cfg["head_dim"],
                  intermediate_size=cfg["n_ff"], rms_norm_eps=cfg["rms_eps"], rope_parameters=rope,
                  max_position_embeddings=cfg["n_ctx"], tie_word_embeddings=cfg["tied"], hidden_act="silu",
                  attention_bias=False)
    if cfg["cls"] == "Qwen3ForCausalLM":
        return transformers.Qwen3Config(**common)
    return transformers.LlamaConfig(**common, mlp_bias=False)


def random_weights(cfg: dict, names_shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Seeded weights by HF name, bf16-rounded float32: linear ~ N(0, 1/in), embeddings ~
    N(0, (2/sqrt(n_embd))^2), norms ~ 1 + N(0, 0.1^2) (activations O(1), logits of std ~2)."""
    from _checkpoints import bf16_round  # noqa: PLC0415

    rng = np.random.default_rng(cfg["seed"])
    out = {}
    for name, shape in names_shapes.items():
        if len(shape) == 1:
            x = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            x = rng.standard_normal(shape) * (2.0 / np.sqrt(shape[1]))
        else:
            x = rng.standard_normal(shape) / np.sqrt(shape[1])
        out[name] = bf16_round(x.astype(np.float32))
    return out


def hf_shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}


def write_checkpoint(folder: Path, cfg: dict):
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from _checkpoints import write_tokenizer  # noqa: PLC0415
    from qwen_cpu.safetensors_io import write_safetensors  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    config = hf_config(cfg)
    config.architectures = [cfg["cls"]]
    torch.manual_seed(0)
    model = getattr(transformers, cfg["cls"])(config)
    weights = random_weights(cfg, hf_shapes(model))
    write_safetensors(folder / "model.safetensors", weights, bf16=True)
    config.save_pretrained(folder)
    write_tokenizer(folder)
    return weights


def read_back(path: Path, cfg: dict, arch_name: str) -> dict[str, np.ndarray]:
    """A GGUF's tensors as float32 by HF name (dequantized; llama Q/K rows back in HF order)."""
    import gguf  # noqa: PLC0415
    from qwen_cpu.arch import ARCHES  # noqa: PLC0415

    arch = ARCHES[arch_name]
    out = {}
    for t in gguf.GGUFReader(path).tensors:
        spec = arch.spec(t.name)
        assert spec is not None, t.name
        x = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if spec.hf is None:
            continue  # computed by the converter (rope_freqs): checked against transformers by the logits
        if not arch.rope_neox and spec.gguf in ("attn_q.weight", "attn_k.weight"):
            hd = cfg["head_dim"]  # GGUF rows 2j, 2j+1 of a head are HF rows j, j + hd/2
            x = x.reshape(-1, hd // 2, 2, x.shape[1]).swapaxes(1, 2).reshape(x.shape)
        layer = t.name.split(".")[1] if spec.per_layer else None
        out[f"model.layers.{layer}.{spec.hf}" if spec.per_layer else spec.hf] = x
    return out


def tensor_digest(path: Path) -> str:
    """sha256 over the GGUF's tensors in file order: name, type, shape and data bytes."""
    from qwen_cpu.gguf import GGUFFile  # noqa: PLC0415

    h = hashlib.sha256()
    with GGUFFile(path) as g:
        for name, info in g.tensors.items():
            h.update(f"{name}:{int(info.ggml_type)}:{tuple(info.shape)}".encode())
            h.update(np.ascontiguousarray(g.tensor(name)).view(np.uint8).tobytes())
    return h.hexdigest()


def reference_logits(folder: Path, weights: dict[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    config = transformers.AutoConfig.from_pretrained(folder)
    config._attn_implementation = "eager"
    model = getattr(transformers, config.architectures[0])(config).to(torch.float64).eval()
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.float64) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if config.tie_word_embeddings else set()), \
        (missing, unexpected)
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(tokens.astype(np.int64))[None], use_cache=False).logits[0].numpy()


def main() -> None:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    import gguf  # noqa: PLC0415
    from importlib.metadata import version  # noqa: PLC0415
    from qwen_cpu.quantize import quantize_model  # noqa: PLC0415
    from qwen_cpu.quantize.hf_checkpoint import hf_config as read_hf_config  # noqa: PLC0415

    OUT.mkdir(exist_ok=True)
    tokens = np.random.default_rng(TOKEN_SEED).integers(0, 320, size=N_TOKENS).astype(np.int32)
    manifest = {"n_tokens": N_TOKENS, "tokens": tokens.tolist(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "gguf": version("gguf"), "numpy": np.__version__},
                "models": {}, "files": {}}
    for name, cfg in MODELS.items():
        folder = OUT / name
        weights = write_checkpoint(folder, cfg)
        arch = read_hf_config(folder).arch
        manifest["models"][name] = {k: v for k, v in cfg.items() if k != "types"} | {"arch": arch}
        float_logits = None
        for qtype in cfg["types"]:
            with tempfile.TemporaryDirectory() as tmp:
                path = quantize_model(folder, Path(tmp) / "m.gguf", qtype, progress=False).path
                back = read_back(path, cfg, arch)
                digest = tensor_digest(path)
            assert set(back) == set(weights), set(back) ^ set(weights)
            if qtype == "f32":
                for k, v in weights.items():
                    assert np.array_equal(back[k], v), f"{name}: {k} did not round-trip"
            logits = reference_logits(folder, back, tokens)
            ref = f"{name}.{qtype}.npz"
            np.savez(OUT / ref, logits=logits.astype(np.float32))
            entry = {"model": name, "type": qtype, "reference": ref, "tensor_digest": digest,
                     "max_abs_logit": float(np.abs(logits).max())}
            if float_logits is None:
                float_logits = logits
            else:
                entry["reference_vs_f32_rel_err"] = float(np.abs(logits - float_logits).max() / np.abs(float_logits).max())
            manifest["files"][f"{name}.{qtype}"] = entry
            print(name, qtype, {k: v for k, v in entry.items() if k not in ("tensor_digest",)})
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
