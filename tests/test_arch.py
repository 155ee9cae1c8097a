"""The model schema (qwen_cpu/arch.py) against the C++ forward pass's tensor slots, and the typed
config the C++ model takes."""

import dataclasses

import pytest

from qwen_cpu import _kernels
from qwen_cpu.arch import ARCHES, dims, shape_of
from qwen_cpu.config import ModelConfig

SLOTS = {name: (per_layer, shape, optional) for name, per_layer, shape, optional in _kernels.tensor_slots()}


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_every_table_tensor_is_a_cpp_slot_of_the_same_shape(arch):
    for t in ARCHES[arch].tensors:
        assert t.gguf in SLOTS, f"{arch}: {t.gguf} has no slot in csrc/model.cpp kTensorSlots"
        per_layer, shape, optional = SLOTS[t.gguf]
        assert per_layer == t.per_layer and shape == t.shape, (arch, t.gguf, SLOTS[t.gguf], t)
        # a tensor an architecture may lack is one the forward pass runs without (output: tied)
        assert not t.optional or optional or t.gguf == "output.weight", (arch, t.gguf)


def test_every_required_cpp_slot_is_in_every_table():
    for name, (per_layer, _, optional) in SLOTS.items():
        if not optional:
            for arch in ARCHES.values():
                spec = next(t for t in arch.tensors if t.gguf == name)
                assert spec.per_layer == per_layer


def test_table_names():
    qwen3 = ARCHES["qwen3"]
    names = dict(qwen3.gguf_names(2))
    assert "blk.1.attn_q_norm.weight" in names and "blk.2.attn_q.weight" not in names
    assert not names["blk.0.attn_k_norm.weight"].optional
    assert qwen3.spec("blk.7.attn_k_norm.weight").hf == "self_attn.k_norm.weight"
    assert qwen3.spec("rope_freqs.weight") is None and ARCHES["llama"].spec("rope_freqs.weight").optional
    assert qwen3.spec("blk.x.attn_q.weight") is None
    cfg = ModelConfig(arch="qwen3", n_layer=2, n_embd=64, n_ff=96, n_head=4, n_kv_head=2, head_dim=32,
                      n_vocab=100, n_ctx_train=128, rms_eps=1e-6, rope_freq_base=1e6, rope_neox=True)
    d = dims(cfg)
    assert shape_of(qwen3.spec("blk.0.attn_q.weight"), d) == (128, 64)  # head_dim * n_head != n_embd
    assert shape_of(qwen3.spec("blk.0.attn_output.weight"), d) == (64, 128)
    assert shape_of(qwen3.spec("blk.0.attn_q_norm.weight"), d) == (32,)


def test_typed_config_refuses_unknown_names_and_carries_every_field():
    cfg = ModelConfig(arch="qwen2", n_layer=2, n_embd=64, n_ff=96, n_head=4, n_kv_head=2, head_dim=16,
                      n_vocab=100, n_ctx_train=128, rms_eps=1e-5, rope_freq_base=1e4, rope_neox=True,
                      rope_freq_scale=0.25, rope_ext_factor=1.0, rope_attn_factor=1.5, rope_beta_fast=16.0,
                      rope_beta_slow=2.0, rope_n_ctx_orig=64)
    kc = cfg.kernel_config(("q8_0", "f32"), n_ctx=32, n_batch=8, n_seq=3, repack=False)
    for f in dataclasses.fields(cfg):
        if f.name not in ("arch", "n_ctx_train"):
            assert getattr(kc, f.name) == pytest.approx(getattr(cfg, f.name)), f.name
    assert (kc.n_ctx, kc.n_batch, kc.kv_k, kc.kv_v, kc.n_seq, kc.repack) == (32, 8, 8, 0, 3, False)
    with pytest.raises(AttributeError):
        cfg.kernel_config(("f16", "f16"), n_ctxx=32)
    with pytest.raises(AttributeError):
        kc.rope_freq_bas = 2.0
    with pytest.raises(TypeError):
        _kernels.Model({"n_layer": 2}, {}, 1)  # the string-keyed dict of old is no config
