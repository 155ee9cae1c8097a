"""The chat page at / in a real headless Chromium (Debian's `chromium`, installed by
.ci/install-server-tools), driven over the Chrome DevTools Protocol on --remote-debugging-pipe:
type a question, see the answer grow as it streams, check it equals Model.chat's for the same
greedy request, a second turn, and the stop button freeing the server's slot."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time

import pytest
from _serving import ServerProcess

from qwen_cpu import Model

SCREENSHOT = os.environ.get("QWEN_CPU_PAGE_SCREENSHOT")  # a path: save the page as PNG there


class Browser:
    """Headless Chromium with a CDP client on its pipe (fd 3: commands in, fd 4: replies out;
    messages are JSON separated by NUL bytes)."""

    def __init__(self, profile_dir):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.fail("chromium is missing: run .ci/install-server-tools (apt-get install chromium)")
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()
        # out of the way of fds 3 and 4, which the child's dup2 below fills
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
        for fd in (to_child, from_child):
            os.close(fd)

        def child_fds():
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--window-size=1000,760",
             f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=child_fds, close_fds=False)
        for fd in high:
            os.close(fd)
        self._buf = b""
        self._next_id = 0
        self.session = None

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and return its result (events in between are skipped)."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session or self.session:
            msg["sessionId"] = session or self.session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._in, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.navigate", url=url)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {expression}")

    def type(self, text: str) -> None:
        """Keyboard input into the focused element, then Enter."""
        self.call("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def close(self) -> None:
        os.close(self._out)
        os.close(self._in)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


LAST_ANSWER = ("(() => { const a = document.querySelectorAll('.assistant'); const e = a[a.length - 1];"
               " return e ? [e.textContent, e.classList.contains('streaming')] : null; })()")


def ask(browser: Browser, question: str) -> tuple[str, list[str]]:
    """Type a question; returns the final answer and the distinct texts seen while it streamed."""
    n_before = browser.js("document.querySelectorAll('.assistant').length")
    browser.js("document.getElementById('input').focus()")
    browser.type(question)
    browser.wait_for(f"document.querySelectorAll('.assistant').length > {n_before}")
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text, streaming = browser.js(LAST_ANSWER)
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if not streaming:
            return text, seen
        time.sleep(0.01)
    raise AssertionError(f"the answer did not finish: {seen[-1:]}")


def test_chat_page_streams_answers(smollm2_path, tmp_path):
    with Model.load(smollm2_path, n_threads=1) as model, \
            ServerProcess(smollm2_path, "--parallel", "1", "-t", "1") as srv:
        browser = Browser(tmp_path / "profile")
        try:
            browser.open(srv.url + "/")
            browser.wait_for("document.getElementById('model')?.textContent.endsWith('.gguf')")
            assert browser.js("document.getElementById('model').textContent") == smollm2_path.name
            browser.js("document.getElementById('temp').value = '0'; document.getElementById('maxtok').value = '40'")
            q1, q2 = "What is the capital of France?", "And of Italy?"
            answer1, seen = ask(browser, q1)
            expected1 = model.chat([{"role": "user", "content": q1}], temperature=0, max_tokens=40)
            assert answer1 == expected1["choices"][0]["message"]["content"]
            # streamed: the text grew in several steps, each a beginning of the final answer
            assert len(seen) >= 3 and all(answer1.startswith(s) for s in seen)
            answer2, _ = ask(browser, q2)  # the second turn is sent with the first
            expected2 = model.chat([{"role": "user", "content": q1}, {"role": "assistant", "content": answer1},
                                    {"role": "user", "content": q2}], temperature=0, max_tokens=40)
            assert answer2 == expected2["choices"][0]["message"]["content"]
            assert browser.js("document.querySelectorAll('.user').length") == 2
            if SCREENSHOT:
                png = browser.call("Page.captureScreenshot", format="png")["data"]
                with open(SCREENSHOT, "wb") as f:
                    f.write(base64.b64decode(png))

            # the stop button ends a long answer; the server frees the slot
            browser.js("document.getElementById('maxtok').value = '3000'")
            browser.js("document.getElementById('input').focus()")
            browser.type("Write a very long story about a dragon.")
            browser.wait_for("document.getElementById('stop').disabled === false "
                             "&& document.querySelector('.assistant.streaming')?.textContent.length > 10")
            browser.js("document.getElementById('stop').click()")
            browser.wait_for("document.getElementById('status').textContent.startsWith('stopped')")
            srv.wait_idle(timeout=5)
            assert browser.js("document.getElementById('send').disabled") is False
        finally:
            browser.close()
