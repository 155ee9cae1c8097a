"""Progress bars (qwen_cpu/progress.py) are drawn on a terminal only: a download (`pull`) and a
long prompt's prefill in `chat`, run in a pseudo-terminal with pexpect; on a pipe, or with --json,
nothing is written (the pipe cases are in test_hub.py)."""

import json
import os
import sys

import pexpect
from _checkpoints import make_gguf
from _fakehub import FakeHub
from _helpers import CWD, PYTHONPATH


def spawn(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, **(env_extra or {})}
    child = pexpect.spawn(sys.executable, ["-m", "qwen_cpu.cli", *map(str, args)], encoding="utf-8", timeout=60,
                          cwd=CWD, env=env, dimensions=(24, 120))
    child.logfile_read = sys.stdout  # the transcript, shown by pytest when the test fails
    return child


def test_download_bar_on_a_terminal(tmp_path):
    model = make_gguf(tmp_path / "ckpt", "f32", vocab=4096)  # ~1.6 MB
    hub = FakeHub({"test-org/Tiny-GGUF": {"tiny-F32.gguf": model.read_bytes()}})
    try:
        child = spawn(["pull", "test-org/Tiny-GGUF:f32"], {
            "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"})
        child.expect(r"tiny-F32\.gguf: +\d+%\|")  # tqdm's bar: description, percentage, bar
        child.expect(r"snapshots/\w+/tiny-F32\.gguf \(\d+\.\d MiB\)")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        hub.close()


def test_long_prompt_prefill_bar_in_chat(tmp_path):
    model = make_gguf(tmp_path / "ckpt", "q8_0")
    child = spawn(["chat", model, "-v", "-n", "4", "--temp", "0"])
    try:
        child.expect(">>> ")
        child.sendline("ab " * 300)  # about 900 tokens with this byte-level tokenizer (3 per repeat)
        child.expect(r"prompt: +\d+%\|")
        child.expect(r"\[prompt: (\d+) tokens \((\d+) cached\), [\d.]+ tok/s")
        total, cached = map(int, child.match.groups())
        assert total > 512 and cached == 0  # the steps under the bar count as computed, not cached
        child.expect(">>> ")
        child.sendline("hi")  # a short follow-up: no bar, the long turn is reused from the cache
        child.expect(r"\[prompt: (\d+) tokens \((\d+) cached\)")
        total2, cached2 = map(int, child.match.groups())
        assert cached2 >= total and "%|" not in child.before
        child.expect(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_json_output_has_no_bar_even_on_a_terminal(tmp_path):
    model = make_gguf(tmp_path / "ckpt", "f32", vocab=4096)
    hub = FakeHub({"test-org/Tiny-GGUF": {"tiny-F32.gguf": model.read_bytes()}})
    try:
        child = spawn(["generate", "test-org/Tiny-GGUF:f32", "hi", "-n", "2", "--json"], {
            "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"})
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        out = child.before.replace("\r\n", "\n")
        assert json.loads(out)["object"] == "chat.completion"  # the whole output is the JSON object
        assert any(r[1].startswith("/cdn/") for r in hub.requests)  # it was downloaded, silently
    finally:
        hub.close()


def test_quantize_bar_on_a_terminal(tmp_path):
    from _checkpoints import make_checkpoint

    make_checkpoint(tmp_path / "ckpt", hidden=64, ffn=128, n_layer=2)
    child = spawn(["quantize", tmp_path / "ckpt", "-o", tmp_path / "out.gguf", "--type", "q8_0"])
    child.expect(r"out\.gguf: +\d+%\|")
    child.expect(r"wrote .*out\.gguf")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
