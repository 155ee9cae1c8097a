"""End-to-end check of quantize_model's GGUF files with llama.cpp (llama-cpp-python).

Writes tiny random Qwen2 and Llama checkpoints (tests/_checkpoints.py), converts them with
quantize_model to f32 and q8_0 GGUFs, runs them in llama.cpp and compares its logits with a plain
numpy forward pass of the *checkpoint* in Hugging Face's conventions (rotate-half RoPE, GQA, biases,
tied or untied head); when transformers is installed, also with checkpoints saved by transformers and
its own logits as the reference. Agreement at f32 shows the tensor names, shapes, the Llama Q/K row permutation
and the hyper-parameter keys are what llama.cpp expects; q8_0 shows the quantized data is read the
same way.

    PYTHONPATH=.:tests python3 bench/converter_vs_llamacpp.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _checkpoints import make_checkpoint  # noqa: E402

from qwen_cpu.quantize import quantize_model  # noqa: E402


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_hf(x: np.ndarray, theta: float, interleaved: bool = False) -> np.ndarray:
    """x: (n_tok, n_head, hd); HF's rotate-half convention rotates pairs (i, i + hd/2).
    interleaved=True rotates pairs (2i, 2i + 1) instead: the control for a missing Q/K permutation."""
    n, _, hd = x.shape
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, b * cos + a * sin
        return out
    a, b = x[..., : hd // 2], x[..., hd // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def forward_hf(t: dict, tokens: list[int], n_layer: int, n_head: int, n_kv: int, theta: float, eps: float,
               tied: bool, interleaved: bool = False) -> np.ndarray:
    """Logits (n_tok, vocab) of the checkpoint t (HF names), float64."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    x = t["model.embed_tokens.weight"][tokens]
    n = len(tokens)
    for i in range(n_layer):
        p = f"model.layers.{i}."
        h = rmsnorm(x, t[p + "input_layernorm.weight"], eps)
        q = h @ t[p + "self_attn.q_proj.weight"].T + t.get(p + "self_attn.q_proj.bias", 0)
        k = h @ t[p + "self_attn.k_proj.weight"].T + t.get(p + "self_attn.k_proj.bias", 0)
        v = h @ t[p + "self_attn.v_proj.weight"].T + t.get(p + "self_attn.v_proj.bias", 0)
        hd = q.shape[1] // n_head
        q, k, v = q.reshape(n, n_head, hd), k.reshape(n, n_kv, hd), v.reshape(n, n_kv, hd)
        q, k = rope_hf(q, theta, interleaved), rope_hf(k, theta, interleaved)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        s += np.triu(np.full((n, n), -np.inf), 1)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", s, v).reshape(n, n_head * hd)
        x = x + o @ t[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, t[p + "post_attention_layernorm.weight"], eps)
        g = h @ t[p + "mlp.gate_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ t[p + "mlp.up_proj.weight"].T)) @ t[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, t["model.norm.weight"], eps)
    head = t["model.embed_tokens.weight"] if tied else t["lm_head.weight"]
    return x @ head.T


def llamacpp_logits(path: Path, tokens: list[int]) -> np.ndarray:
    import llama_cpp

    m = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2)
    m.eval(tokens)
    out = np.array(m.scores[: len(tokens)], dtype=np.float64)
    m.close()
    return out


def main() -> int:
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, 300, 48)]  # 48 positions: RoPE matters
    failed = False
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        cases = [("qwen2 tied", dict(arch="Qwen2ForCausalLM", hidden=256, ffn=512, n_layer=3, n_head=4, n_kv=2,
                                      vocab=300, tied=True)),
                 ("llama untied", dict(arch="LlamaForCausalLM", hidden=256, ffn=512, n_layer=3, n_head=8, n_kv=2,
                                       vocab=300, tied=False))]
        for label, kw in cases:
            ck = d / label.replace(" ", "-")
            t = make_checkpoint(ck, bf16=False, **kw)
            ref = forward_hf(t, tokens, kw["n_layer"], kw["n_head"], kw["n_kv"], 1e6, 1e-6, kw["tied"])
            # llama.cpp keeps the KV cache in f16 (f32 files: ~5e-4) and multiplies Q8_0 weights with
            # Q8_0-quantized activations (q8_0 files: a few %); a layout mistake gives errors of order 1
            control = forward_hf(t, tokens, kw["n_layer"], kw["n_head"], kw["n_kv"], 1e6, 1e-6, kw["tied"], True)
            for qtype, tol in (("f32", 2e-3), ("q8_0", 6e-2)):
                out = d / f"{ck.name}-{qtype}.gguf"
                quantize_model(ck, out, qtype, progress=False)
                got = llamacpp_logits(out, tokens)
                err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
                ok = err < tol
                failed |= not ok
                wrong = float(np.max(np.abs(got - control)) / np.max(np.abs(control)))
                print(f"{label:<13} {qtype:<5} max |llama.cpp - numpy HF forward| / max|logit| = {err:.2e} "
                      f"(tolerance {tol:g}) {'ok' if ok else 'MISMATCH'}; against the wrong RoPE pairing: {wrong:.2e}")
        failed |= check_transformers(d, tokens)
    return 1 if failed else 0


def check_transformers(d: Path, tokens: list[int]) -> bool:
    """The same with checkpoints saved by transformers itself (its config.json conventions, e.g.
    transformers 5's rope_parameters) and its own forward pass as the reference. Returns failed."""
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    except ImportError:
        print("transformers/torch not importable: transformers check not run")
        return False
    from _checkpoints import write_tokenizer

    torch.manual_seed(0)
    failed = False
    cases = [("qwen2", Qwen2ForCausalLM, Qwen2Config(hidden_size=256, intermediate_size=512, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, vocab_size=300, tie_word_embeddings=True,
              rope_theta=1e6)),
             ("llama", LlamaForCausalLM, LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=3,
              num_attention_heads=8, num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False,
              rope_theta=5e5))]
    for label, cls, cfg in cases:
        model = cls(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.05)
            ref = model(torch.tensor([tokens])).logits[0].double().numpy()
        ck = d / f"tf-{label}"
        model.save_pretrained(ck, safe_serialization=True)
        write_tokenizer(ck)
        out = d / f"tf-{label}.gguf"
        quantize_model(ck, out, "f32", progress=False)
        err = float(np.max(np.abs(llamacpp_logits(out, tokens) - ref)) / np.max(np.abs(ref)))
        ok = err < 2e-3
        failed |= not ok
        print(f"transformers {label:<6} f32   max |llama.cpp - transformers| / max|logit| = {err:.2e} "
              f"(tolerance 0.002) {'ok' if ok else 'MISMATCH'}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
