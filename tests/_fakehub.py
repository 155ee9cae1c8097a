"""A loopback stand-in for the Hugging Face Hub, for tests that run the real huggingface_hub client.

It answers the calls huggingface_hub 1.x/2.x makes for model_info(files_metadata=True) and
hf_hub_download (read from its hf_api.model_info and file_download.get_hf_file_metadata):

- GET  /api/models/{repo}            the repository's info (sha, siblings: file names and sizes);
- HEAD /{repo}/resolve/{rev}/{file}  the file's metadata: X-Repo-Commit, ETag, Content-Length;
- GET  /{repo}/resolve/{rev}/{file}  the bytes; for a .gguf file (stored in LFS on the Hub) both
  answer 302 to a second server standing for the CDN, with X-Linked-Etag (the sha256) and
  X-Linked-Size, and the CDN serves the bytes;
- 404s with the Hub's X-Error-Code (RepoNotFound, EntryNotFound), which the client turns into its errors.
"""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class FakeHub:
    """Serves `repos` ({repo id: {path: bytes}}) as the Hub does, on 127.0.0.1 at an ephemeral
    port (the CDN at another); `requests` records (method, path) of every call (CDN paths start
    with /cdn/)."""

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

        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]  # hub, CDN
        self.url, self.cdn = (f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers)
        self.blobs = {hashlib.sha256(b).hexdigest(): (p.rsplit("/", 1)[-1], b)
                      for files in repos.values() for p, b in files.items()}
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self.servers]
        for t in self.threads:
            t.start()

    def close(self):
        for s, t in zip(self.servers, self.threads):
            s.shutdown()
            s.server_close()
            t.join()

    def answer(self, h: BaseHTTPRequestHandler, body: bool):
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        parts = path.strip("/").split("/")
        if parts[0] == "cdn" and len(parts) == 2 and parts[1] in self.blobs:
            name, data = self.blobs[parts[1]]
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Disposition": f"inline; filename*=UTF-8''{name}; filename=\"{name}\";"}  # as the Hub's CDN names it
            return self.send(h, 200, headers, data, body)
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
            sha256 = hashlib.sha256(data).hexdigest()
            if file.endswith(".gguf"):  # LFS: metadata here, bytes from the CDN
                headers = {"X-Repo-Commit": self.sha[repo], "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                           "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)),
                           "Location": f"{self.cdn}/cdn/{sha256}?X-Amz-Signature=test"}
                return self.send(h, 302, headers, b"", body)
            headers = {"X-Repo-Commit": self.sha[repo], "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
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
