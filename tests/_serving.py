"""Start `qwen-cpu serve` in a subprocess on an ephemeral loopback port, for the server tests.

    with ServerProcess(model_path, "--parallel", "4") as srv:
        srv.url            # http://127.0.0.1:PORT
        srv.client()       # an openai.OpenAI client for it (no retries)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import qwen_cpu
from _helpers import CWD

START_TIMEOUT = 60.0


class ServerProcess:
    def __init__(self, model: str | os.PathLike, *args: str, api_key: str | None = None):
        self.model, self.args, self.api_key = str(model), list(args), api_key
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.port = 0
        self.log: list[str] = []

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "qwen_cpu.cli", "serve", self.model, "--port", "0", *self.args]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        # the qwen_cpu this test process imports (the source tree with PYTHONPATH=., or the installed one)
        package_parent = str(Path(qwen_cpu.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": package_parent + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=CWD)  # outside the source tree (_helpers.CWD says why)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"on (http://[\d.]+:(\d+))", line)
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
                # keep draining stderr so the server never blocks on a full pipe
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError("the server did not start:\n" + "".join(self.log))

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- clients ------------------------------------------------------------------------------
    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.api_key or "none", max_retries=0, **kw)

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def metrics(self) -> dict[str, float]:
        """The /metrics samples without labels, name -> value."""
        import httpx

        text = httpx.get(self.url + "/metrics", headers=self.headers(), timeout=10).text
        return {k: float(v) for k, v in re.findall(r"^(qwen_cpu_\w+) (\S+)$", text, re.MULTILINE)}

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no slot is busy and nothing is queued (the scheduler has caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.metrics()
            if m.get("qwen_cpu_slots_busy", 1) == 0 and m.get("qwen_cpu_queue_depth", 1) == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"the server is still busy after {timeout} s: {self.metrics()}")


def sse_events(lines) -> list:
    """Parse SSE lines (an iterator of str) into the decoded `data:` payloads, "[DONE]" kept as is."""
    out = []
    for line in lines:
        if line.startswith("data:"):
            data = line[5:].strip()
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def name(srv: ServerProcess) -> str:
    """The model id the server reports (GET /v1/models)."""
    return srv.client().models.list().data[0].id
