"""Two `qwen-cpu serve` replicas behind Debian's nginx on loopback, configured by the documented
deploy/nginx-qwen-cpu.conf (its ports replaced by ephemeral ones): streams through nginx complete
with the replicas' own answers, and a replica stopped mid-run ends its running streams with a
final chunk while every request that had not started on it is served by the other one."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _serving import ServerProcess, sse_events

from qwen_cpu import Model

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nginx-qwen-cpu.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground with a temporary prefix, the deploy file's upstream and server."""

    def __init__(self, prefix: Path, replica_ports: list[int]):
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(exe, os.X_OK):
            pytest.fail("nginx is missing: run .ci/install-server-tools (apt-get install nginx)")
        self.exe, self.prefix = exe, prefix
        prefix.mkdir(parents=True, exist_ok=True)
        site = DEPLOY.read_text()
        for i, port in enumerate(replica_ports):
            site = site.replace(f"127.0.0.1:{8081 + i} ", f"127.0.0.1:{port} ")
        assert all(f":{p} " in site for p in replica_ports), "the deploy file's replica addresses changed"
        self.site = site
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Nginx:
        for _ in range(5):  # the port picked may be taken by someone else meanwhile: pick again
            port = free_port()
            site = self.site.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
            user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
            p = self.prefix
            conf = f"""{user}
daemon off; master_process on; worker_processes 1; pid {p}/nginx.pid; error_log {p}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;
{site}
}}
"""
            (p / "nginx.conf").write_text(conf)
            self.proc = subprocess.Popen([self.exe, "-p", str(p), "-c", str(p / "nginx.conf")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                        return self
                except httpx.TransportError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError("nginx did not start: " + self.errors())

    def errors(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text() if log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_replicas_behind_nginx(tiny_qwen_gguf, tmp_path):
    args = ("--parallel", "2", "-t", "1", "-c", "2048")
    with Model.load(tiny_qwen_gguf, n_ctx=2048, n_threads=1) as m:
        no_eos = {str(t): -100.0 for t in m.tokenizer.eos_ids}
    with ServerProcess(tiny_qwen_gguf, *args) as a, ServerProcess(tiny_qwen_gguf, *args) as b:
        nginx = Nginx(tmp_path / "nginx", [a.port, b.port]).start()
        try:
            model = tiny_qwen_gguf.name
            prompts = [f"Story number {i}:" for i in range(4)]
            direct = [httpx.post(a.url + "/v1/completions", json={"model": model, "prompt": p, "max_tokens": 24,
                                                                  "temperature": 0}).json()["choices"][0]["text"]
                      for p in prompts]

            def stream(prompt: str, max_tokens: int = 24, started: threading.Event | None = None, **extra):
                body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                        "stream": True, **extra}
                with httpx.stream("POST", nginx.url + "/v1/completions", json=body, timeout=60) as r:
                    lines = r.iter_lines()
                    events = sse_events([next(lines)])
                    if started is not None:
                        started.set()
                    events += sse_events(lines)
                    text = "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
                    return r.headers["x-upstream"], text, events[-2]["choices"][0]["finish_reason"], events[-1]

            # streams through nginx complete, spread over both replicas, with the replicas' answers
            with ThreadPoolExecutor(4) as pool:
                results = list(pool.map(stream, prompts))
            assert [text for _, text, _, _ in results] == direct
            assert all(done == "[DONE]" for *_, done in results)
            assert {upstream for upstream, *_ in results} == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}

            # a replica stopped mid-run: its running streams end with a final chunk; every new
            # request goes to the other one (nginx retries the refused connection there)
            started = [threading.Event() for _ in range(4)]
            with ThreadPoolExecutor(4) as pool:
                running = [pool.submit(stream, f"Long story {i}:", 1900, started[i], logit_bias=no_eos)
                           for i in range(4)]
                for e in started:
                    assert e.wait(30)
                a.signal(signal.SIGTERM)
                assert a.wait(20) in (0, -signal.SIGTERM)
                after = [httpx.post(nginx.url + "/v1/completions", json={"model": model, "prompt": p, "max_tokens": 24,
                                                                        "temperature": 0}, timeout=60)
                         for p in prompts]
                cut = [f.result(60) for f in running]
            assert [r.status_code for r in after] == [200] * 4
            assert [r.json()["choices"][0]["text"] for r in after] == direct
            # $upstream_addr lists every replica tried: the stopped one (refused), then the other
            assert {r.headers["x-upstream"].split(", ")[-1] for r in after} == {f"127.0.0.1:{b.port}"}
            assert any(r.headers["x-upstream"] == f"127.0.0.1:{a.port}, 127.0.0.1:{b.port}" for r in after)
            by_a = [c for c in cut if c[0] == f"127.0.0.1:{a.port}"]
            assert by_a and all(finish == "cancelled" and done == "[DONE]" for _, _, finish, done in by_a)
            assert all(finish == "length" for up, _, finish, _ in cut if up == f"127.0.0.1:{b.port}")
            assert re.search(r"connect\(\) failed \(111: Connection refused\)", nginx.errors())
        finally:
            nginx.stop()
