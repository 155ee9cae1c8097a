"""Saved sessions (qwen_cpu/session.py, Model.save_state / load_state): the KV cache and its tokens
written and read back on the real SmolLM2 model, the next turn then computing only its new tokens
with logits identical to the model that never stopped; every kind of foreign, truncated, altered or
hostile file refused with a QwenCpuError before the cache is touched; `chat --session` in a
pseudo-terminal; and a prompt shared by many calls (a long system prompt) computed once."""

import hashlib
import json
import os
import struct
import sys

import numpy as np
import pexpect
import pytest
from _helpers import CWD, PYTHONPATH

from qwen_cpu.errors import QwenCpuError
from qwen_cpu import Model
from qwen_cpu.session import MAGIC

ENV = {**os.environ, "PYTHONPATH": PYTHONPATH}
SYSTEM = {"role": "system", "content": "You are a helpful assistant who answers in one short sentence."}
TURN1 = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def saved(smollm2_path, tmp_path_factory):
    """(model after one chat turn, the state file it saved, the turn's answer)."""
    path = tmp_path_factory.mktemp("session") / "chat.kv"
    m = Model.load(smollm2_path, n_ctx=512, n_threads=2)
    answer = m.chat(TURN1, max_tokens=24, temperature=0)["choices"][0]["message"]["content"]
    m.save_state(path, {"messages": TURN1 + [{"role": "assistant", "content": answer}]})
    yield m, path, answer
    m.close()


def test_a_loaded_session_continues_exactly_without_recomputing(saved, smollm2_path):
    m, path, answer = saved
    follow_up = TURN1 + [{"role": "assistant", "content": answer},
                         {"role": "user", "content": "And of Germany?"}]
    with Model.load(smollm2_path, n_ctx=512, n_threads=2) as fresh:
        extra = fresh.load_state(path)
        assert extra["messages"][-1] == {"role": "assistant", "content": answer}
        assert fresh.n_past == m.n_past > len(_encode(m, TURN1))
        with m.hold() as a, fresh.hold() as b:
            (tokens, kv), (tokens2, kv2) = a.read_slot(0), b.read_slot(0)
        assert tokens == tokens2 and np.array_equal(kv, kv2)
        r_fresh = list(fresh.stream(_encode(fresh, follow_up), max_tokens=12, temperature=0))
        r_orig = list(m.stream(_encode(m, follow_up), max_tokens=12, temperature=0))
    # the loaded model reused as much as the one that never stopped, and answered the same
    assert r_fresh[-1].prompt_cached == r_orig[-1].prompt_cached > len(_encode(m, TURN1))
    assert r_fresh[-1].prompt_tokens - r_fresh[-1].prompt_cached < 20  # only the new turn computed
    assert [r.token for r in r_fresh] == [r.token for r in r_orig]


def _encode(m, messages):
    from qwen_cpu.chat import encode_chat

    return encode_chat(m.tokenizer, messages)


def test_logits_after_loading_are_identical(saved, smollm2_path):
    m, path, _ = saved
    m.load_state(path)  # (the previous test moved m on)
    with Model.load(smollm2_path, n_ctx=512, n_threads=2) as fresh:
        fresh.load_state(path)
        token = m.tokenize(" Paris")[0]
        np.testing.assert_array_equal(fresh.decode_step(token), m.decode_step(token))


@pytest.mark.parametrize("kv_type", ["f32", "q8_0", "q4_0", ("q8_0", "q4_0")], ids=str)
def test_round_trip_of_each_kv_cache_type(smollm2_path, tmp_path, kv_type):
    """A quantized (or f32) cache is saved as stored and resumes exactly; its header names K's and
    V's types, and a model with another type refuses it by name."""
    path = tmp_path / "s.kv"
    with Model.load(smollm2_path, n_ctx=128, n_threads=2, kv_type=kv_type) as m:
        ids = _encode(m, TURN1)
        m.prefill(ids)
        m.save_state(path)
        token = m.tokenize(" Paris")[0]
        want = m.decode_step(token)
        with Model.load(smollm2_path, n_ctx=128, n_threads=2, kv_type=kv_type) as fresh:
            fresh.load_state(path)
            assert fresh.n_past == len(ids)
            np.testing.assert_array_equal(fresh.decode_step(token), want)
    header, rest = _header_and_rest(path)
    assert header["kv_type"] == list(m.kv_type)
    # SmolLM2's head_dim 64: a quantized cache's rows rotated by 64-wide Hadamard chunks (csrc/hadamard.h)
    assert header["kv_rotation"] == list(m.kv_rotation) == [64 if t != "f32" else 0 for t in m.kv_type]
    assert len(rest) == 4 * len(ids) + m.config.kv_cache_bytes(len(ids), m.kv_type)
    with Model.load(smollm2_path, n_ctx=128, n_threads=2) as f16:
        _refused(f16, path, f"KV cache types (K/V) are {'/'.join(m.kv_type)}, this model's are f16/f16")


def test_a_format_2_session_loads_with_float_caches_and_is_refused_with_quantized_ones(smollm2_path, tmp_path):
    """Format 2 (before the quantized rows were rotated) has no kv_rotation: its rows are read as
    unrotated, which a float cache's are and a quantized cache's no longer are."""
    path = tmp_path / "s.kv"
    for kv_type in ("f16", "q8_0"):
        with Model.load(smollm2_path, n_ctx=128, n_threads=2, kv_type=kv_type) as m:
            m.prefill(_encode(m, TURN1))
            m.save_state(path)
            header, rest = _header_and_rest(path)
            old = {k: v for k, v in header.items() if k != "kv_rotation"}
            _write(path, {**old, "format": 2}, rest)
            m.reset()
            if kv_type == "f16":
                m.load_state(path)
                assert m.n_past == header["n_pos"]
            else:
                _refused(m, path, "format 2 came from an older qwen-cpu", "save the session again")


def test_a_session_of_another_kv_rotation_is_refused(smollm2_path, tmp_path, monkeypatch):
    """Rows saved plain (QWEN_CPU_KV_ROTATION=0) do not load into a rotating cache, nor the reverse."""
    plain, rotated = tmp_path / "plain.kv", tmp_path / "rotated.kv"
    for path, env in ((plain, "0"), (rotated, "1")):
        monkeypatch.setenv("QWEN_CPU_KV_ROTATION", env)
        with Model.load(smollm2_path, n_ctx=128, n_threads=2, kv_type="q4_0") as m:
            assert m.kv_rotation == ((0, 0) if env == "0" else (64, 64))
            m.prefill(_encode(m, TURN1))
            m.save_state(path)
    with Model.load(smollm2_path, n_ctx=128, n_threads=2, kv_type="q4_0") as m:
        _refused(m, plain, "rotated by Hadamard widths (K, V) [0, 0], this model's by [64, 64]")
        m.load_state(rotated)
    monkeypatch.setenv("QWEN_CPU_KV_ROTATION", "0")
    with Model.load(smollm2_path, n_ctx=128, n_threads=2, kv_type="q4_0") as m:
        _refused(m, rotated, "[64, 64], this model's by [0, 0]")


# ---- refused files --------------------------------------------------------------------------------

def _refused(model, path, *words):
    before = model.n_past
    with pytest.raises(QwenCpuError) as e:
        model.load_state(path)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert model.n_past == before  # nothing was loaded
    return str(e.value)


def test_a_state_of_another_model_context_kv_type_or_rope_is_refused(saved, smollm2_path, tiny_qwen_gguf):
    _, path, _ = saved
    with Model.load(tiny_qwen_gguf, n_ctx=512) as other:
        _refused(other, path, "another model file", "SmolLM2")
    with Model.load(smollm2_path, n_ctx=256) as other:
        _refused(other, path, "n_ctx 512", "n_ctx 256")
    with Model.load(smollm2_path, n_ctx=512, kv_type="f32") as other:
        _refused(other, path, "KV cache types (K/V) are f16/f16", "f32/f32")
    with Model.load(smollm2_path, n_ctx=512, rope_scaling="yarn", rope_scale=4) as other:
        _refused(other, path, "RoPE")


def _header_and_rest(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    return json.loads(data[start:start + n]), data[start + n:]


def _write(path, header, rest):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(MAGIC + struct.pack("<I", len(text)) + text + rest)


def test_a_renamed_copy_of_the_model_file_takes_the_state(saved, smollm2_path, tmp_path):
    _, path, _ = saved
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(smollm2_path.read_bytes())
    with Model.load(copy, n_ctx=512) as other:
        other.load_state(path)
        assert other.n_past > 0
    copy.write_bytes(smollm2_path.read_bytes()[:-1] + b"\x01")  # one byte of the weights changed
    with Model.load(copy, n_ctx=512) as other:
        _refused(other, path, "another model file")


def test_truncated_altered_and_hostile_files_are_refused(saved, tmp_path):
    m, path, _ = saved
    m.reset()
    data = path.read_bytes()
    bad = tmp_path / "bad.kv"
    for cut in (0, 5, len(MAGIC) + 2, len(MAGIC) + 10, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:cut])
        _refused(m, bad, "not a usable saved session")
    bad.write_bytes(data + b"\0")
    _refused(m, bad, "truncated or corrupt")
    flipped = bytearray(data)
    flipped[-100] ^= 1  # a bit of a cached value
    bad.write_bytes(bytes(flipped))
    _refused(m, bad, "digest")
    header, rest = _header_and_rest(path)
    cases = [
        ({**header, "n_pos": -1}, "n_pos"), ({**header, "n_pos": "3"}, "n_pos"), ({**header, "n_pos": 10**12}, "positions"),
        ({**header, "n_pos": header["n_pos"] - 1}, "truncated or corrupt"),
        ({**header, "format": 1}, "older qwen-cpu"), ({**header, "format": 4}, "format"), ({**header, "model": None}, "another model"),
        ({**header, "n_layer": 29}, "n_layer"), ({**header, "payload_digest": 5}, "digest"),
        ({k: v for k, v in header.items() if k != "kv_type"}, "KV cache type"),
        ({k: v for k, v in header.items() if k != "kv_rotation"}, "rotated by Hadamard widths"),
        (b"[" * 100000 + b"]" * 100000, "JSON"), (b"\xff\xfe", "JSON"), (b"[1, 2]", "format"),
    ]
    for h, words in cases:
        _write(bad, h, rest)
        _refused(m, bad, words)
    bad.write_bytes(MAGIC + struct.pack("<I", 2**32 - 1) + b"{}")
    _refused(m, bad, "header claims")
    # a token id outside the vocabulary, with a digest that matches it
    toks = np.frombuffer(rest[:4 * header["n_pos"]], "<i4").copy()
    toks[0] = 10**6
    new = toks.tobytes() + rest[4 * header["n_pos"]:]
    header2 = {**header, "payload_digest": hashlib.blake2b(new, digest_size=16).hexdigest()}
    _write(bad, header2, new)
    _refused(m, bad, "saved tokens")
    os.mkfifo(tmp_path / "fifo")
    _refused(m, tmp_path / "fifo", "not a regular file")
    _refused(m, tmp_path / "missing.kv", "No such file")


def test_save_state_refuses_non_json_extra(saved, tmp_path):
    m, _, _ = saved
    with pytest.raises(QwenCpuError, match="JSON"):
        m.save_state(tmp_path / "x.kv", {"f": object()})
    assert not list(tmp_path.iterdir())  # no partial file left


# ---- a shared prompt is computed once ---------------------------------------------------------------

def test_a_long_system_prompt_shared_by_calls_is_computed_once(smollm2_path):
    system = {"role": "system", "content": "You are a librarian. " + "Answer briefly and politely. " * 40}
    with Model.load(smollm2_path, n_ctx=1024, n_threads=2) as m:
        n_system = len(_encode(m, [system]))
        costs = []
        for question in ("Where are the atlases?", "When do you open?", "Can I borrow three books?"):
            before = m.n_evaluated
            out = m.chat([system, {"role": "user", "content": question}], max_tokens=4, temperature=0)
            costs.append(m.n_evaluated - before - out["usage"]["completion_tokens"])
    assert n_system > 200
    assert costs[0] > n_system  # the first call computes the system prompt...
    assert all(c < 30 for c in costs[1:])  # ...the others only their question (the template's few tokens)


# ---- chat --session in a terminal -------------------------------------------------------------------

def _chat(model, session, *extra):
    child = pexpect.spawn(sys.executable, ["-m", "qwen_cpu.cli", "chat", str(model), "--temp", "0", "-v", "-n", "24",
                                           "--session", str(session), *extra],
                          encoding="utf-8", timeout=180, cwd=CWD, env=ENV)
    child.logfile_read = sys.stdout
    return child


def test_chat_session_resumes_without_recomputing(smollm2_path, tmp_path):
    session = tmp_path / "conversation.kv"
    child = _chat(smollm2_path, session)
    try:
        child.expect(">>> ")
        child.sendline("What is the capital of France? Answer in one sentence.")
        child.expect("Paris")
        child.expect(r"\[prompt: (\d+) tokens \((\d+) cached\)")
        child.expect(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0 and session.is_file()
    child = _chat(smollm2_path, session)
    try:
        child.expect(r"session .*: 2 messages, (\d+) tokens cached")
        n_cached = int(child.match.group(1))
        child.expect(">>> ")
        child.sendline("And of Germany?")
        child.expect("Berlin")
        child.expect(r"\[prompt: (\d+) tokens \((\d+) cached\)")
        total, cached = map(int, child.match.groups())
        assert cached >= n_cached - 1 > 30 and total - cached < 20  # only the new turn was computed
        child.expect(">>> ")
        child.sendeof()
        child.expect(r"\[session: (\d+) prompt tokens computed")
        assert int(child.match.group(1)) == total - cached
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    # another context size: refused with one line, no traceback
    child = _chat(smollm2_path, session, "-c", "256")
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1 and "n_ctx" in child.before and "Traceback" not in child.before
