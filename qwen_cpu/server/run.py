"""`qwen-cpu serve`: the application under uvicorn on a socket we bind ourselves (so port 0 gives
an ephemeral port, printed once listening), with a clean shutdown on SIGINT/SIGTERM: the
scheduler is closed first, so running streams end with a final chunk and `[DONE]` instead of
holding the shutdown open, then uvicorn closes the connections."""

from __future__ import annotations

import socket
import sys
import threading

import uvicorn

from .app import close_service, create_app

GRACEFUL_SECONDS = 10  # after the streams were ended: time left for their last bytes to go out


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app):
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig, frame) -> None:
        # First stop accepting, so that a load balancer's next attempt is refused (and retried
        # elsewhere) instead of reaching a server that can no longer answer; then end the streams,
        # in a thread since the signal interrupts the event loop's thread and closing waits for a step.
        for server in getattr(self, "servers", []):
            server.close()
        threading.Thread(target=close_service, args=(self._app,), daemon=True).start()
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: the OS picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(model_path, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning",
          **app_options) -> None:
    """Load the model, listen on host:port and serve until SIGINT/SIGTERM. app_options go to
    `create_app` (parallel, n_ctx, n_threads, max_queue, api_key, max_body, cors_origins, model_id,
    draft, kv_type, warmup)."""
    sock = bind(host, port)  # first: a busy port fails before the model is loaded
    app = create_app(model_path, **app_options)
    svc = app.state.service
    shown = f"[{host}]" if ":" in host else host
    print(f"qwen-cpu: serving {svc.model_id} ({app_options.get('parallel', 1)} slots, context "
          f"{svc.model.n_ctx}) on http://{shown}:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACEFUL_SECONDS,
                            proxy_headers=False, server_header=False)
    try:
        _Server(config, app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the SIGINT again once it has shut down
        pass
    finally:
        close_service(app)
        sock.close()
