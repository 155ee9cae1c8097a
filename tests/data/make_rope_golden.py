"""Write tests/data/rope_golden.npz: rotary cos/sin tables from Hugging Face transformers, the
independent reference that tests/test_ops.py compares `_kernels.rope_tables` with.

Run from the repository root (needs torch and transformers; the .npz is committed, so the tests do
not):  python3 tests/data/make_rope_golden.py

Two configurations of a Qwen2 model, each through transformers' own `Qwen2RotaryEmbedding` (the
module the HF model uses, which calls the rope init function of `transformers.modeling_rope_utils`
for its `rope_type`), at the positions in POSITIONS:

  plain  rope_theta 1e6, head_dim 128: the default rope of Qwen2.5;
  yarn   the same plus rope_scaling {"type": "yarn", "factor": 4, "original_max_position_embeddings":
         32768}, as Qwen2.5's model cards prescribe for contexts beyond 32K.

Stored per configuration <name>: <name>_cos, <name>_sin (n_pos, head_dim/2) float32 (HF duplicates
each value into both halves of the head; the first half is kept), <name>_inv_freq (head_dim/2,)
float32, <name>_attention_scaling (scalar) and the parameters that produced them.

The mapping to our RopeParams (the llama.cpp one, from GGUF rope.scaling.* keys) that the test uses:
freq_base = rope_theta, freq_scale = 1 / factor, ext_factor = 1 for "yarn" (0 otherwise),
n_ctx_orig = original_max_position_embeddings, attn_factor = 1, beta_fast 32, beta_slow 1.

Where HF's YaRN and llama.cpp's (which csrc/ops.cpp follows) differ:
  - precision: HF computes inv_freq and the angles in float32, llama.cpp its frequencies by repeated
    float multiplication, we everything in double; the angles agree to ~1.2e-7 relative (the
    test's tolerance allows 2.5e-7 of the angle);
  - the ramp's zero-width guard: HF adds 0.001 to `high` only when low == high, llama.cpp uses
    max(0.001, high - low); they differ only when high < low, which beta_fast > beta_slow excludes;
  - HF's `truncate: false` (correction dims not rounded to integers) has no llama.cpp/GGUF
    counterpart; we always floor/ceil, as llama.cpp does;
  - HF's optional `attention_factor` (or mscale / mscale_all_dim) overrides 1 + 0.1 ln(factor); in
    our terms attn_factor = attention_factor / (1 + 0.1 ln(factor)). Qwen2.5 sets none of them;
  - llama.cpp applies the 1 + 0.1 ln(1/freq_scale) magnitude only when ext_factor != 0, HF whenever
    the type is "yarn" (with ext_factor = 1 the two agree).
"""

import os
import sys

import numpy as np
import torch
import transformers
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

POSITIONS = [0, 1, 2, 3, 7, 100, 1000, 4095, 32767, 32768, 65536, 131071]
HEAD_DIM, N_HEAD, THETA = 128, 4, 1e6
YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


def tables(rope_scaling):
    """cos, sin (n_pos, head_dim/2) float32, inv_freq (head_dim/2,) float32, attention_scaling."""
    config = Qwen2Config(
        hidden_size=HEAD_DIM * N_HEAD,
        num_attention_heads=N_HEAD,
        num_key_value_heads=N_HEAD,
        max_position_embeddings=131072,
        rope_theta=THETA,
        rope_scaling=rope_scaling,
    )
    rotary = Qwen2RotaryEmbedding(config)
    positions = torch.tensor([POSITIONS], dtype=torch.long)
    with torch.no_grad():
        cos, sin = rotary(torch.zeros(1, len(POSITIONS), HEAD_DIM, dtype=torch.float32), positions)
    half = HEAD_DIM // 2
    cos, sin = cos[0].numpy(), sin[0].numpy()
    assert np.array_equal(cos[:, :half], cos[:, half:]) and np.array_equal(sin[:, :half], sin[:, half:])
    return (cos[:, :half].astype(np.float32), sin[:, :half].astype(np.float32),
            rotary.inv_freq.numpy().astype(np.float32), float(rotary.attention_scaling))


def main():
    out = {"positions": np.array(POSITIONS, dtype=np.int64), "head_dim": HEAD_DIM, "rope_theta": THETA,
           "yarn_factor": YARN["factor"], "yarn_original_max_position_embeddings": YARN["original_max_position_embeddings"],
           "transformers_version": transformers.__version__, "torch_version": torch.__version__}
    for name, scaling in (("plain", None), ("yarn", YARN)):
        cos, sin, inv_freq, attention_scaling = tables(scaling)
        out[f"{name}_cos"], out[f"{name}_sin"] = cos, sin
        out[f"{name}_inv_freq"], out[f"{name}_attention_scaling"] = inv_freq, attention_scaling
        print(f"{name}: attention_scaling {attention_scaling:.6f}, inv_freq[20:44:4] {inv_freq[20:44:4]}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rope_golden.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({os.path.getsize(path)} bytes) with transformers {transformers.__version__}")


if __name__ == "__main__":
    sys.exit(main())
