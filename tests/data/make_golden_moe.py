#!/usr/bin/env python3
"""Tiny random-weight mixture-of-experts checkpoints (qwen2moe, qwen3moe) and transformers' logits.

Run once by hand (needs torch + transformers); the outputs under tests/data/golden_moe/ are
committed so the test suite needs neither. Seeded: a re-run rewrites the same files.

    python3 tests/data/make_golden_moe.py

For each model:
  1. seeded float32 weights in HF naming, experts one by one (`mlp.experts.E.gate_proj.weight`, as
     transformers' save_pretrained writes them);
  2. the HF checkpoint (config.json + model.safetensors) of the F32 weights, for the quantizer test;
  3. one GGUF per weight type, written with gguf-py in llama.cpp's layout (the experts stacked into
     3-D ffn_{gate,up,down}_exps tensors, the router and shared-expert gate kept F32, as its
     converter does);
  4. each GGUF read back (dequantized) into Qwen2MoeForCausalLM / Qwen3MoeForCausalLM, run in
     float64 on a fixed 80-token sequence: the logits go into <file>.npz.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import encode_tensor  # noqa: E402  (the dense golden's tensor encoder)

OUT = Path(__file__).resolve().parent / "golden_moe"
N_TOKENS = 80
TOKEN_SEED = 4321

MODELS = {
    # 8 experts, top 2, a shared expert; rows of 64/32/96 (Q8_0/Q4_0 blocks, not repacked)
    "qwen2moe-tiny": dict(arch="qwen2moe", n_vocab=512, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=16,
                          n_ff=160, n_expert=8, n_expert_used=2, n_ff_exp=32, n_ff_shexp=96, norm_topk=False,
                          rope_theta=1.0e6, rms_eps=1e-6, n_ctx=256, seed=201, types=["F32", "Q8_0", "Q4_0"]),
    # rows of 256 (Q4_K super-blocks; Q4_0 and Q8_0 matrices repacked where the path repacks)
    "qwen2moe-h256": dict(arch="qwen2moe", n_vocab=512, n_embd=256, n_layer=1, n_head=4, n_head_kv=2, head_dim=64,
                          n_ff=512, n_expert=4, n_expert_used=2, n_ff_exp=256, n_ff_shexp=256, norm_topk=False,
                          rope_theta=1.0e6, rms_eps=1e-6, n_ctx=256, seed=202, types=["Q4_K", "Q4_0"]),
    # qwen3 attention (q/k head norms, head_dim 32 != n_embd / n_head), top 2 of 8 renormalised
    "qwen3moe-tiny": dict(arch="qwen3moe", n_vocab=512, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=32,
                          n_ff=160, n_expert=8, n_expert_used=2, n_ff_exp=32, n_ff_shexp=0, norm_topk=True,
                          rope_theta=1.0e6, rms_eps=1e-6, n_ctx=256, seed=203, types=["F32", "Q8_0"]),
}


def random_weights(cfg: dict) -> dict[str, np.ndarray]:
    """HF-named float32 weights; scales as make_golden.py's (linear ~ N(0, 1/in), norms ~ 1 + N(0, 0.1^2)),
    the router ~ N(0, 4/in) so that the routing is decided by clear margins."""
    rng = np.random.default_rng(cfg["seed"])
    E, hd = cfg["n_embd"], cfg["head_dim"]
    q_dim, kv_dim = cfg["n_head"] * hd, cfg["n_head_kv"] * hd

    def linear(n_out, n_in, scale=1.0):
        return (scale * rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": (rng.standard_normal((cfg["n_vocab"], E)) * (2.0 / np.sqrt(E))).astype(np.float32)}
    for i in range(cfg["n_layer"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(E)
        w[p + "self_attn.q_proj.weight"] = linear(q_dim, E)
        w[p + "self_attn.k_proj.weight"] = linear(kv_dim, E)
        w[p + "self_attn.v_proj.weight"] = linear(kv_dim, E)
        if cfg["arch"] == "qwen2moe":
            for n, d in (("q", q_dim), ("k", kv_dim), ("v", kv_dim)):
                w[p + f"self_attn.{n}_proj.bias"] = (0.3 * rng.standard_normal(d)).astype(np.float32)
        else:
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        w[p + "self_attn.o_proj.weight"] = linear(E, q_dim)
        w[p + "post_attention_layernorm.weight"] = norm(E)
        w[p + "mlp.gate.weight"] = linear(cfg["n_expert"], E, 2.0)
        for e in range(cfg["n_expert"]):
            w[p + f"mlp.experts.{e}.gate_proj.weight"] = linear(cfg["n_ff_exp"], E)
            w[p + f"mlp.experts.{e}.up_proj.weight"] = linear(cfg["n_ff_exp"], E)
            w[p + f"mlp.experts.{e}.down_proj.weight"] = linear(E, cfg["n_ff_exp"])
        if cfg["n_ff_shexp"]:
            w[p + "mlp.shared_expert.gate_proj.weight"] = linear(cfg["n_ff_shexp"], E)
            w[p + "mlp.shared_expert.up_proj.weight"] = linear(cfg["n_ff_shexp"], E)
            w[p + "mlp.shared_expert.down_proj.weight"] = linear(E, cfg["n_ff_shexp"])
            w[p + "mlp.shared_expert_gate.weight"] = linear(1, E, 2.0)
    w["model.norm.weight"] = norm(E)
    w["lm_head.weight"] = linear(cfg["n_vocab"], E)
    return w


_LAYER = {
    "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
}
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
_F32_ALWAYS = ("ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight")  # llama.cpp's converter keeps these F32


def gguf_tensors(cfg: dict, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF name -> float32 array in llama.cpp's layout (experts stacked: (n_expert, rows, cols))."""
    out = {}
    for name, x in w.items():
        if name in _GLOBAL:
            out[_GLOBAL[name]] = x
        elif ".mlp.experts." not in name:
            _, _, i, rest = name.split(".", 3)
            out[f"blk.{i}.{_LAYER[rest]}"] = x
    for i in range(cfg["n_layer"]):
        for proj, gname in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
            out[f"blk.{i}.{gname}.weight"] = np.stack(
                [w[f"model.layers.{i}.mlp.experts.{e}.{proj}.weight"] for e in range(cfg["n_expert"])])
    return out


def encode(name: str, x: np.ndarray, wtype: str) -> tuple[np.ndarray, QT]:
    if name.endswith(_F32_ALWAYS) or x.ndim == 1:
        return x.astype(np.float32), QT.F32
    if x.ndim == 3:  # the experts: each matrix encoded as a 2-D tensor, stacked again
        parts = [encode_tensor(m, wtype) for m in x]
        return np.stack([p[0] for p in parts]), parts[0][1]
    return encode_tensor(x, wtype)


def write_gguf(path: Path, name: str, cfg: dict, tensors: dict[str, np.ndarray], wtype: str) -> dict[str, np.ndarray]:
    """Writes the file; returns its tensors read back as float32 (dequantized)."""
    arch = cfg["arch"]
    wr = gguf.GGUFWriter(path, arch)
    wr.add_name(f"{name}-{wtype.lower()}")
    wr.add_description("random-weight test checkpoint made by qwen-cpu tests/data/make_golden_moe.py; no tokenizer")
    wr.add_context_length(cfg["n_ctx"])
    wr.add_embedding_length(cfg["n_embd"])
    wr.add_feed_forward_length(cfg["n_ff"])
    wr.add_block_count(cfg["n_layer"])
    wr.add_head_count(cfg["n_head"])
    wr.add_head_count_kv(cfg["n_head_kv"])
    if cfg["head_dim"] != cfg["n_embd"] // cfg["n_head"]:
        wr.add_key_length(cfg["head_dim"])
        wr.add_value_length(cfg["head_dim"])
    wr.add_rope_freq_base(cfg["rope_theta"])
    wr.add_layer_norm_rms_eps(cfg["rms_eps"])
    wr.add_expert_count(cfg["n_expert"])
    wr.add_expert_used_count(cfg["n_expert_used"])
    wr.add_expert_feed_forward_length(cfg["n_ff_exp"])
    if cfg["n_ff_shexp"]:
        wr.add_expert_shared_feed_forward_length(cfg["n_ff_shexp"])
    wr.add_uint32("general.quantization_version", gguf.GGML_QUANT_VERSION)
    for gname, x in tensors.items():
        data, qt = encode(gname, x, wtype)
        wr.add_tensor(gname, data, raw_dtype=qt if qt not in (QT.F32, QT.F16) else None)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    r = gguf.GGUFReader(path)
    return {t.name: np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
        tuple(int(d) for d in reversed(t.shape))) for t in r.tensors}


def hf_config(cfg: dict):
    from transformers import Qwen2MoeConfig, Qwen3MoeConfig  # noqa: PLC0415

    common = dict(vocab_size=cfg["n_vocab"], hidden_size=cfg["n_embd"], num_hidden_layers=cfg["n_layer"],
                  num_attention_heads=cfg["n_head"], num_key_value_heads=cfg["n_head_kv"],
                  intermediate_size=cfg["n_ff"], moe_intermediate_size=cfg["n_ff_exp"], num_experts=cfg["n_expert"],
                  num_experts_per_tok=cfg["n_expert_used"], norm_topk_prob=cfg["norm_topk"],
                  rms_norm_eps=cfg["rms_eps"], rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]},
                  max_position_embeddings=cfg["n_ctx"], tie_word_embeddings=False, hidden_act="silu",
                  decoder_sparse_step=1, mlp_only_layers=[], attn_implementation="eager",
                  experts_implementation="eager")
    if cfg["arch"] == "qwen2moe":
        return Qwen2MoeConfig(**common, shared_expert_intermediate_size=cfg["n_ff_shexp"])
    return Qwen3MoeConfig(**common, head_dim=cfg["head_dim"])


def hf_state(cfg: dict, g: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's state dict (transformers 5's fused expert parameters) from GGUF-named tensors."""
    inv = {v: k for k, v in _LAYER.items()}
    inv_g = {v: k for k, v in _GLOBAL.items()}
    sd = {}
    for name, x in g.items():
        if name in inv_g:
            sd[inv_g[name]] = x
            continue
        _, i, rest = name.split(".", 2)
        p = f"model.layers.{i}."
        if rest == "ffn_gate_exps.weight":
            sd[p + "mlp.experts.gate_up_proj"] = np.concatenate([x, g[f"blk.{i}.ffn_up_exps.weight"]], axis=1)
        elif rest == "ffn_down_exps.weight":
            sd[p + "mlp.experts.down_proj"] = x
        elif rest != "ffn_up_exps.weight":
            sd[p + inv[rest]] = x
    return sd


def run_hf(cfg: dict, g: dict[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
    import torch  # noqa: PLC0415
    from transformers import Qwen2MoeForCausalLM, Qwen3MoeForCausalLM  # noqa: PLC0415

    cls = Qwen2MoeForCausalLM if cfg["arch"] == "qwen2moe" else Qwen3MoeForCausalLM
    model = cls(hf_config(cfg))
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in hf_state(cfg, g).items()}
    missing, unexpected = model.load_state_dict(sd, strict=True)
    assert not missing and not unexpected, (missing, unexpected)
    model.eval().to(torch.float64)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(tokens.astype(np.int64))[None], use_cache=False).logits[0]
    return logits.numpy()


def save_hf_checkpoint(path: Path, cfg: dict, w: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file  # noqa: PLC0415

    path.mkdir(parents=True, exist_ok=True)
    c = hf_config(cfg).to_dict()
    c["architectures"] = ["Qwen2MoeForCausalLM" if cfg["arch"] == "qwen2moe" else "Qwen3MoeForCausalLM"]
    c["torch_dtype"] = "float32"
    (path / "config.json").write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    save_file({k: np.ascontiguousarray(v) for k, v in w.items()}, path / "model.safetensors")


def main() -> None:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    OUT.mkdir(exist_ok=True)
    tokens = np.random.default_rng(TOKEN_SEED).integers(0, 512, N_TOKENS).astype(np.int32)
    manifest = {"tokens": tokens.tolist(), "models": {}, "files": {},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "gguf": getattr(gguf, "__version__", "?"), "numpy": np.__version__}}
    for name, cfg in MODELS.items():
        manifest["models"][name] = {k: v for k, v in cfg.items() if k != "types"}
        w = random_weights(cfg)
        if "F32" in cfg["types"]:
            save_hf_checkpoint(OUT / f"{name}-hf", cfg, w)
        g = gguf_tensors(cfg, w)
        for wtype in cfg["types"]:
            fname = f"{name}.{wtype.lower()}.gguf"
            back = write_gguf(OUT / fname, name, cfg, g, wtype)
            if wtype == "F32":
                assert all(np.array_equal(back[k], g[k].reshape(back[k].shape)) for k in g)
            logits = run_hf(cfg, {k: back[k].reshape(g[k].shape) for k in g}, tokens)
            np.savez_compressed(OUT / fname.replace(".gguf", ".npz"), logits=logits.astype(np.float32))
            manifest["files"][fname] = {"model": name, "type": wtype}
            print(fname, "max |logit|", float(np.abs(logits).max()))
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
