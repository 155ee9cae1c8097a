"""A loopback stand-in for the Hugging Face Hub, for tests that run the real huggingface_hub client.

It answers the calls huggingface_hub 1.x/2.x makes for model_info(files_metadata=True) and
hf_hub_download (read from its hf_api.model_info and file_download.get_hf_file_metadata):

- GET  /api/models/{repo}            the repository's info (sha, siblings: file names and sizes);
- HEAD /{repo}/resolve/{rev}/{file}  the file's metadata: X-Repo-Commit, ETag, Content-Length;
- GET  /{repo}/resolve/{rev}/{file}  the bytes;
- 404s with the Hub's X-Error-Code (RepoNotFound, EntryNotFound), which the client turns into its errors.
"""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class FakeHub:
    """Serves `repos` ({repo id: {path: bytes}}) as the Hub does, on 127.0.0.1 at an ephemeral
    port; `requests` records (method, path) of every call."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        self.sha = {r: hashlib.sha1(repr(sorted((p, hashlib.sha256(b).hexdigest()) for p, b in f.items()))
                                    .encode()).hexdigest() for r, f in repos.items()}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub.answer(self, body=True)

            def do_HEAD(self):
                hub.answer(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def answer(self, h: BaseHTTPRequestHandler, body: bool):
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo = "/".join(parts[2:4])
            if repo not in self.repos:
                return self.error(h, 404, "RepoNotFound", "Repository not found")
            siblings = [{"rfilename": p, "size": len(b), "blobId": hashlib.sha1(b).hexdigest(),
                         **({"lfs": {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b), "pointerSize": 134}}
                            if p.endswith(".gguf") else {})}
                        for p, b in sorted(self.repos[repo].items())]
            data = json.dumps({"_id": "0" * 24, "id": repo, "modelId": repo, "sha": self.sha[repo],
                               "private": False, "gated": False, "disabled": False, "tags": ["gguf"],
                               "siblings": siblings}).encode()
            return self.send(h, 200, {"Content-Type": "application/json"}, data, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, file = "/".join(parts[:2]), "/".join(parts[4:])
            if repo not in self.repos:
                return self.error(h, 404, "RepoNotFound", "Repository not found")
            data = self.repos[repo].get(file)
            if data is None:
                return self.error(h, 404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": self.sha[repo]})
            headers = {"X-Repo-Commit": self.sha[repo], "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            return self.send(h, 200, headers, data, body)
        return self.error(h, 404, None, "not found")

    def error(self, h, status, code, message, extra=None):
        headers = {"X-Error-Message": message, "Content-Type": "application/json", **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self.send(h, status, headers, json.dumps({"error": message}).encode(), True)

    @staticmethod
    def send(h, status, headers, data, body):
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
