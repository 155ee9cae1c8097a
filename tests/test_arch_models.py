"""Qwen3 (dense) and Llama 3.1 rope scaling end to end against HF transformers: the tiny random-weight
checkpoints of tests/data/golden_hf (made by tests/data/make_golden_hf.py) converted by our
quantizer's HF path, loaded, and our logits compared with transformers' (float64) on every kernel path.

Tolerances as tests/test_model.py's (relative: max |ours - ref| / max |ref|): F32 with an f32 KV
cache 1e-5, with the default f16 cache 1e-3; Q8_0/Q4_0 files against transformers on the
dequantized weights 3e-2 with >= 90% top-1 agreement (measured 2.2e-2 .. 2.5e-2 on the six x86
paths). The q4_k_m file (Q4_K and Q6_K, whose activations are quantized to Q8_K, one scale per 256
values instead of Q8_0's per 32) over two layers: 4e-2 (measured 3.0e-2 .. 3.4e-2; the h256 Q4_K
file of tests/test_model.py has one layer and passes 3e-2).
"""

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from qwen_cpu import Model
from qwen_cpu.arch import ARCHES
from qwen_cpu.errors import QwenCpuError
from qwen_cpu.gguf import GGUFFile
from qwen_cpu.quantize import quantize_model

DATA = Path(__file__).parent / "data" / "golden_hf"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
TOKENS = MANIFEST["tokens"]
FILES = MANIFEST["files"]


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def tensor_digest(path: Path) -> str:
    import sys

    sys.path.insert(0, str(DATA.parent))
    from make_golden_hf import tensor_digest as digest  # the generator's own definition

    return digest(path)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name ("qwen3-tiny.q8_0") -> the GGUF our quantizer writes from the committed checkpoint."""
    out, cache = tmp_path_factory.mktemp("golden_hf"), {}

    def get(name: str) -> Path:
        if name not in cache:
            e = FILES[name]
            cache[name] = quantize_model(DATA / e["model"], out / f"{name}.gguf", e["type"], progress=False).path
        return cache[name]
    return get


@pytest.mark.parametrize("name", sorted(FILES))
def test_quantizer_writes_the_files_the_references_were_made_from(converted, name):
    # the references hold for these exact weights; after a quantizer change, run make_golden_hf.py again
    assert tensor_digest(converted(name)) == FILES[name]["tensor_digest"]


@pytest.mark.parametrize("name", [n for n in sorted(FILES) if FILES[n]["type"] == "f32"])
def test_float_files_match_transformers(isa, converted, name):
    ref = np.load(DATA / FILES[name]["reference"])["logits"]
    with Model.load(converted(name), n_ctx=128, n_threads=2, kv_type="f32") as m:
        assert rel_err(m.logits(TOKENS), ref) < 1e-5
    with Model.load(converted(name), n_ctx=128, n_threads=2) as m:
        assert rel_err(m.logits(TOKENS), ref) < 1e-3
        # decode steps after a prefill agree with the one-pass logits
        m.prefill(TOKENS[:60])
        steps = [m.decode_step(t) for t in TOKENS[60:]]
        assert rel_err(np.stack(steps), ref[60:]) < 1e-3


def test_qwen3_s_quantized_kv_cache_rotates_keys_by_its_whole_head(converted):
    """Qwen3's head_dim 128: keys (after q/k norm and RoPE) and queries rotated by one 128-wide
    Hadamard transform, values by two 64-wide ones (csrc/hadamard.h); a q8_0 cache then stays
    within q8_0's error of the f16 cache (measured: mean KL 2.1e-4, 97.5% top-1; plain rows 2.2e-4),
    and decode steps read what prefill stored."""
    from qwen_cpu.sampler import log_softmax

    path = converted("qwen3-tiny.f32")
    with Model.load(path, n_ctx=128, n_threads=2) as m:
        ref = log_softmax(m.logits(TOKENS))
    with Model.load(path, n_ctx=128, n_threads=2, kv_type="q8_0") as m:
        assert m.kv_rotation == (128, 64)
        full = m.logits(TOKENS)
        m.reset()
        steps = [m.prefill(TOKENS[:37])] + [m.decode_step(t) for t in TOKENS[37:]]
    ours = log_softmax(full)
    assert (np.exp(ref) * (ref - ours)).sum(-1).mean() < 5e-4
    assert np.mean(ours.argmax(-1) == ref.argmax(-1)) >= 0.9
    assert rel_err(np.stack(steps), full[36:]) < 1e-4


@pytest.mark.parametrize("name", [n for n in sorted(FILES) if FILES[n]["type"] != "f32"])
def test_quantized_files_match_transformers_on_dequantized_weights(isa, converted, name):
    ref = np.load(DATA / FILES[name]["reference"])["logits"]
    with Model.load(converted(name), n_ctx=128, n_threads=2) as m:
        ours = m.logits(TOKENS)
    assert rel_err(ours, ref) < (4e-2 if FILES[name]["type"] == "q4_k_m" else 3e-2)
    assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_qwen3_file_layout_is_llama_cpp_s(converted):
    """Key and tensor names as gguf-py (llama.cpp's constants) spells them for qwen3; head_dim from
    attention.key_length (128, not n_embd / n_head = 64); per-head q/k norms of head_dim; no biases."""
    path = converted("qwen3-tiny.f32")
    r = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in r.fields.items()}
    K = gguf.Keys
    assert fields[K.General.ARCHITECTURE] == "qwen3"
    assert fields[K.Attention.KEY_LENGTH.format(arch="qwen3")] == 128
    assert fields[K.Attention.VALUE_LENGTH.format(arch="qwen3")] == 128
    assert fields[K.LLM.EMBEDDING_LENGTH.format(arch="qwen3")] == 256
    assert fields[K.Attention.HEAD_COUNT.format(arch="qwen3")] == 4
    known = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.QWEN3]}
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}  # ne order: cols first
    for name in shapes:
        base = name.rsplit(".", 1)[0]  # without .weight / .bias
        assert (base if not base.startswith("blk.") else "blk.{bid}." + base.split(".", 2)[2]) in known, name
    assert shapes["blk.0.attn_q_norm.weight"] == (128,) and shapes["blk.1.attn_k_norm.weight"] == (128,)
    assert shapes["blk.0.attn_q.weight"] == (256, 512) and shapes["blk.0.attn_output.weight"] == (512, 256)
    assert not any(n.endswith(".bias") for n in shapes)


def test_every_table_name_is_a_gguf_py_tensor_of_its_arch():
    for arch in ARCHES.values():
        known = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH[arch.name.upper()]]}
        for t in arch.tensors:
            base = t.gguf.rsplit(".", 1)[0]
            assert ("blk.{bid}." + base if t.per_layer else base) in known, (arch.name, t.gguf)


def rewrite(src: Path, dst: Path, drop: str | None = None, replace: dict | None = None) -> Path:
    """A copy of the GGUF src (gguf-py) without tensor `drop` and with tensors replaced by arrays."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    for t in r.tensors:
        if t.name != drop:
            w.add_tensor(t.name, (replace or {}).get(t.name, np.array(t.data)), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_qwen3_without_its_norms_is_refused(converted, tmp_path):
    path = rewrite(converted("qwen3-tiny.f32"), tmp_path / "no_norm.gguf", drop="blk.1.attn_k_norm.weight")
    with pytest.raises(QwenCpuError, match=r"missing tensor blk.1.attn_k_norm.weight \(a qwen3 model has it\)"):
        Model.load(path)


def test_llama3_bad_rope_freqs_refused(converted, tmp_path):
    f = np.ones(8, np.float32)
    f[3] = 0.0
    path = rewrite(converted("llama3-tiny.f32"), tmp_path / "zero.gguf", replace={"rope_freqs.weight": f})
    with pytest.raises(QwenCpuError, match=r"rope_freqs.weight: factor 3 is 0.0+, not a positive number"):
        Model.load(path)
    path = rewrite(converted("llama3-tiny.f32"), tmp_path / "short.gguf", replace={"rope_freqs.weight": f[:4]})
    with pytest.raises(QwenCpuError, match=r"tensor rope_freqs.weight has shape \(4,\); .* give \(8,\) \(rope_pairs\)"):
        Model.load(path)


def test_llama3_rope_freqs_written_as_llama_cpp_does(converted):
    """rope_freqs (head_dim/2) F32, no rope.scaling keys (llama.cpp's converter: the tensor alone);
    factors 1 for wavelengths under original_context / high_freq_factor, `factor` above
    original_context / low_freq_factor, smooth in between."""
    cfg = MANIFEST["models"]["llama3-tiny"]
    rs, hd, theta = cfg["rope_scaling"], cfg["head_dim"], cfg["rope_theta"]
    with GGUFFile(converted("llama3-tiny.f32")) as g:
        assert not any(k.startswith("llama.rope.scaling") for k in g.metadata)
        f = np.array(g.tensor("rope_freqs.weight"))
        assert g.tensors["rope_freqs.weight"].shape == (hd // 2,) and f.dtype == np.float32
    wavelen = 2 * np.pi * theta ** (np.arange(0, hd, 2) / hd)
    old = rs["original_max_position_embeddings"]
    short, long = wavelen < old / rs["high_freq_factor"], wavelen > old / rs["low_freq_factor"]
    assert short.any() and long.any() and (~short & ~long).any()  # the test model has all three bands
    assert (f[short] == 1).all() and (f[long] == rs["factor"]).all()
    mid = ~short & ~long
    assert ((f[mid] > 1) & (f[mid] < rs["factor"])).all()


def test_llama3_comparison_sees_the_scaling(converted, tmp_path):
    """The same checkpoint without its rope_scaling gives logits far from the reference: the golden
    test above checks the scaled frequencies, at positions up to 2.5x the original context."""
    assert len(TOKENS) > 2 * MANIFEST["models"]["llama3-tiny"]["rope_scaling"]["original_max_position_embeddings"]
    folder = tmp_path / "plain"
    shutil.copytree(DATA / "llama3-tiny", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("rope_scaling", None)
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_parameters"]["rope_theta"]}
    (folder / "config.json").write_text(json.dumps(cfg))
    path = quantize_model(folder, tmp_path / "plain.gguf", "f32", progress=False).path
    ref = np.load(DATA / FILES["llama3-tiny.f32"]["reference"])["logits"]
    with Model.load(path, n_ctx=128, n_threads=2, kv_type="f32") as m:
        assert rel_err(m.logits(TOKENS), ref) > 1e-2


def test_info_describes_qwen3_and_llama3(converted):
    from click.testing import CliRunner

    from qwen_cpu import cli

    out = CliRunner().invoke(cli.main, ["info", str(converted("qwen3-tiny.q8_0"))])
    assert out.exit_code == 0, out.output
    assert "architecture:      qwen3" in out.output and "head_dim 128" in out.output
    assert "q/k norm:          per head, before RoPE" in out.output
    out = CliRunner().invoke(cli.main, ["info", str(converted("llama3-tiny.f32"))])
    assert out.exit_code == 0, out.output
    assert "per-pair factors (rope_freqs: Llama 3.1 scaling)" in out.output and "q/k norm:          none" in out.output


def test_qwen3_chat_with_the_file_s_template(converted):
    """chat() renders the checkpoint's template (tokenizer_config.json, carried into the GGUF) and
    generates greedily; the same prompt ids through logits() give the same first token."""
    with Model.load(converted("qwen3-tiny.q8_0"), n_ctx=128, n_threads=2) as m:
        assert "<|im_start|>" in m.metadata["tokenizer.chat_template"]
        msgs = [{"role": "user", "content": "the weather"}]
        r = m.chat(msgs, max_tokens=4, temperature=0)
        from qwen_cpu.chat import encode_chat

        ids = encode_chat(m.tokenizer, msgs)
        first = int(m.logits(ids)[-1].argmax())
        assert r["usage"]["prompt_tokens"] == len(ids) and r["usage"]["completion_tokens"] == 4
        assert first != m.tokenizer.eos_id and r["choices"][0]["finish_reason"] == "length"
        assert r["choices"][0]["message"]["content"].startswith(m.detokenize([first]))


@pytest.fixture(scope="module")
def thinking_qwen3(tmp_path_factory):
    """The qwen3 checkpoint with the Qwen3-style template (tests/data/qwen3-style-chat-template.jinja),
    converted to Q8_0."""
    folder = tmp_path_factory.mktemp("thinking") / "qwen3-think"
    shutil.copytree(DATA / "qwen3-tiny", folder)
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc["chat_template"] = (DATA.parent / "qwen3-style-chat-template.jinja").read_text()
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    return quantize_model(folder, folder.parent / "think.gguf", "q8_0", progress=False).path


MSGS = [{"role": "user", "content": "the weather"}]
THINK_OFF = b"<think>\n\n</think>\n\n"  # one token per byte in the tiny BPE (no merge applies)


def test_chat_template_kwargs_reach_the_template(thinking_qwen3):
    from qwen_cpu.chat import encode_chat

    with Model.load(thinking_qwen3, n_ctx=128, n_threads=2) as m:
        on, off = encode_chat(m.tokenizer, MSGS), encode_chat(m.tokenizer, MSGS, enable_thinking=False)
        assert m.detokenize(off[len(on):]) == "<think>\n\n</think>\n\n" and off[:len(on)] == on
        r = m.chat(MSGS, max_tokens=1, temperature=0, chat_template_kwargs={"enable_thinking": False})
        assert r["usage"]["prompt_tokens"] == len(off)
        assert m.chat(MSGS, max_tokens=1, temperature=0)["usage"]["prompt_tokens"] == len(on)
        for bad, why in [({"messages": []}, "is set by the chat itself"), ({"1x": 1}, "is not a template variable"),
                         (["enable_thinking"], "must be an object")]:
            with pytest.raises(QwenCpuError, match=why):
                m.chat(MSGS, max_tokens=1, chat_template_kwargs=bad)


def test_cli_no_think(thinking_qwen3):
    from click.testing import CliRunner

    from qwen_cpu import cli

    usage = {}
    for flags in ([], ["--no-think"]):
        out = CliRunner().invoke(cli.main, ["generate", str(thinking_qwen3), "the weather", "-n", "1", "--json",
                                            "--temp", "0", *flags])
        assert out.exit_code == 0, out.output
        usage[bool(flags)] = json.loads(out.output)["usage"]["prompt_tokens"]
    assert usage[True] == usage[False] + len(THINK_OFF)


def test_server_chat_template_kwargs(thinking_qwen3):
    import httpx

    from _serving import ServerProcess, name

    srv = ServerProcess(thinking_qwen3, "--threads", "1").start()
    try:
        body = {"model": name(srv), "messages": MSGS, "max_tokens": 1, "temperature": 0}
        plain = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=30).json()
        off = httpx.post(srv.url + "/v1/chat/completions", timeout=30,
                         json={**body, "chat_template_kwargs": {"enable_thinking": False}}).json()
        assert "usage" in plain, plain
        assert off["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"] + len(THINK_OFF)
        bad = httpx.post(srv.url + "/v1/chat/completions", timeout=30,
                         json={**body, "chat_template_kwargs": {"messages": []}})
        assert bad.status_code == 400 and "is set by the chat itself" in bad.text
    finally:
        srv.stop()


@pytest.mark.parametrize("model", ["qwen3-tiny", "llama3-tiny"])
def test_requantizing_the_f32_gguf_gives_the_direct_q8_0_file(converted, tmp_path, model):
    # GGUF -> GGUF (q_norm/k_norm and rope_freqs copied as F32 vectors) writes the same tensors as HF -> Q8_0
    path = quantize_model(converted(f"{model}.f32"), tmp_path / "re.gguf", "q8_0", progress=False).path
    assert tensor_digest(path) == FILES[f"{model}.q8_0"]["tensor_digest"]
