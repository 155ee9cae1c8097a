"""The HTTP layer: `create_app(...)` builds a FastAPI (ASGI) application over a model and its
scheduler; `qwen-cpu serve` runs it under uvicorn, and any ASGI server can run it too.

Routes are thin: validate (pydantic for types, the Python API's own functions for values), turn
the request into token ids, submit to the scheduler, shape what comes back (streams.py). The
scheduler knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import threading
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from ..errors import QwenCpuError
from ..generate import sampling_params
from .metrics import Metrics
from .schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from .streams import Job

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_BODY = 4 * 2**20  # bytes; a 32k-token prompt is ~150 kB of text, so this leaves room for JSON overhead
COUNTED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/health", "/metrics")
PUBLIC_PATHS = ("/health",)  # reachable without the API key
PAGE_PREFIX = "/static/"  # with "/": the chat page, files holding no data (the page sends the key itself)


class APIError(Exception):
    """An error answered as OpenAI's {"error": {...}} object with this status code."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.type, self.code, self.headers = status, type_, code, headers


def shutting_down() -> APIError:
    return APIError(503, "the server is shutting down", type_="server_error", code="shutting_down")


def _error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                    param: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class Service:
    """What the routes share: the model, its scheduler, the served name and the counters."""

    model: Any
    scheduler: Any
    model_id: str
    metrics: Metrics
    closing: threading.Lock = field(default_factory=threading.Lock)  # held while closing

    def check_model(self, name: str) -> None:
        if name != self.model_id:
            raise APIError(404, f"model {name!r} does not exist; this server serves {self.model_id!r}",
                           code="model_not_found")

    def submit(self, prompt_ids: list[int], max_tokens: int | None, params, stop: Sequence[str],
               n_logprobs: int | None, grammar=None):
        """Submit one generation. Without max_tokens it runs until an end token or the context is
        full (the scheduler caps every request by the context). grammar: a constrain.Grammar the
        answer must follow (its own constraint per request), or None."""
        from ..scheduler import QueueFull, Request

        request = Request(prompt_ids=list(prompt_ids), max_tokens=max_tokens or self.model.n_ctx, params=params,
                          stop=list(stop), logprobs=n_logprobs,
                          constraint=grammar.constraint() if grammar is not None else None)
        scheduler = self.scheduler
        if scheduler is None:
            raise shutting_down()
        try:
            return scheduler.submit(request)
        except QueueFull as e:
            raise APIError(429, f"the server is busy: {e}", type_="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None

    def embed_async(self, ids: list[int]):
        scheduler = self.scheduler
        if scheduler is None:
            raise shutting_down()
        return scheduler.embed_async(ids)


class Gate:
    """ASGI middleware in front of every route: API key, request body size limit, request counts."""

    def __init__(self, app, *, api_key: str | None, max_body: int, metrics: Metrics):
        self.app, self.api_key, self.max_body, self.metrics = app, api_key, max_body, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status = [0]

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                status[0] = refusal.status_code
                return await refusal(scope, receive, send)
            await self.app(scope, self._limited(receive), counted_send)
        finally:
            endpoint = path if path in COUNTED_PATHS else "other"
            self.metrics.count_request(endpoint, status[0])

    def _refusal(self, scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        path = scope["path"]
        if self.api_key is not None and not (path in PUBLIC_PATHS or path == "/" or path.startswith(PAGE_PREFIX)):
            given = headers.get(b"authorization", b"")
            expected = b"Bearer " + self.api_key.encode()
            if not hmac.compare_digest(given, expected):  # constant time: no timing oracle on the key
                return _error_response(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                       type_="authentication_error", code="invalid_api_key",
                                       headers={"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return _error_response(413, f"the request body is larger than the limit of {self.max_body} bytes",
                                   code="body_too_large")
        return None

    def _limited(self, receive):
        """receive() that refuses a (chunked) body growing past the limit."""
        seen = [0]

        async def limited():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise HTTPException(413, f"the request body is larger than the limit of {self.max_body} bytes")
            return message

        return limited


async def _parse(request: Request, model: type[BaseModel]):
    """The JSON body as `model`, whatever the Content-Type says (curl -d sends a form type)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


def _field_error_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One line naming each bad field (`messages.0.content: Input should be a valid string`)."""
    parts, first = [], None
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        if err.get("type") == "json_invalid":
            msg = f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        else:
            msg = f"{where}: {err.get('msg')}"
        first = first or where
        parts.append(msg)
    return "; ".join(parts), first


def create_app(model_path: str | os.PathLike, *, parallel: int = 1, n_ctx: int | None = None,
               n_threads: int | None = None, max_queue: int = 64, api_key: str | None = None,
               max_body: int = DEFAULT_MAX_BODY, cors_origins: Sequence[str] = (),
               model_id: str | None = None, draft: str | None = None,
               kv_type: str | Sequence[str] = "f16", warmup: bool = True) -> FastAPI:
    """A FastAPI application serving the GGUF at model_path with `parallel` KV-cache slots.

    n_ctx: context length of each slot; max_queue: requests that may wait for a slot (more -> 429);
    api_key: required as 'Authorization: Bearer KEY' on every route but /health and the chat page;
    max_body: request body limit in bytes; cors_origins: origins allowed by CORS (none by default);
    model_id: the name clients send as `model` (default: the file name); draft: speculative
    decoding for every request, "lookup" or a draft model's path (qwen_cpu.speculative; the
    answers are the same, token for token).
    kv_type: the KV cache's element types (Model.load's). warmup: the first request's one-time work done
    before serving (warm_up), as llama-server's warm-up run.
    The model is loaded here; the scheduler is closed when the application shuts down (lifespan).
    """
    from ..api import Model
    from ..scheduler import Scheduler

    model = Model.load(model_path, n_ctx=n_ctx, n_threads=n_threads, n_seq=parallel, kv_type=kv_type)
    try:
        if warmup:
            warm_up(model)
        scheduler = Scheduler(model, max_queue=max_queue, draft=draft)
    except BaseException:
        model.close()
        raise
    svc = Service(model=model, scheduler=scheduler, model_id=model_id or model.path.name, metrics=Metrics())

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            close_service(app)

    app = FastAPI(title="qwen-cpu", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc
    app.add_middleware(Gate, api_key=api_key, max_body=max_body, metrics=svc.metrics)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    _install_error_handlers(app)
    _install_routes(app, svc)
    return app


def warm_up(model) -> None:
    """The first request's one-time costs, paid before serving: the tokenizer and the chat
    template built (slow for a large vocabulary), and one single-token step on slot 0, then
    forgotten: the first decode step makes the repacked copies of the weights
    (csrc/repack.h) and reads the weights into memory."""
    from ..model import Run
    from ..tools import prepare_chat

    try:
        ids = prepare_chat(model.tokenizer, [{"role": "user", "content": "Hello"}]).prompt_ids
    except QwenCpuError:  # no usable vocabulary, or a template that wants other messages: the
        ids = [0]         # requests that need them will say so
    with model.hold() as lease:
        lease.forward_runs([Run(0, 0, ids[:1] or [0])])
        lease.clear_slot(0)


def close_service(app) -> None:
    """Stop the scheduler (running streams end with a final "cancelled" response) and free the
    model. Safe to call twice; used by the lifespan and by the signal handler of `serve`."""
    svc: Service = app.state.service
    with svc.closing:  # a second caller (the lifespan after a signal) waits for the first to finish
        scheduler, svc.scheduler = svc.scheduler, None
        if scheduler is not None:
            scheduler.close()
            svc.model.close()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QwenCpuError)
    async def bad_value(request, exc: QwenCpuError):
        return _error_response(400, str(exc))

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return _error_response(exc.status, str(exc), exc.type, exc.code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_shape(request, exc: RequestValidationError):
        message, param = _field_error_message(exc)
        return _error_response(400, message, param=param)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


def _install_routes(app: FastAPI, svc: Service) -> None:
    from ..constrain import from_response_format
    from ..tools import prepare_chat

    def running() -> Service:
        if svc.scheduler is None:
            raise shutting_down()
        return svc

    async def admit(request: Request, schema):
        """The preamble of both generation routes -> (parsed body, running service, sampling params)."""
        body = await _parse(request, schema)
        s = running()
        s.check_model(body.model)
        body.check_supported()
        return body, s, sampling_params(s.model, **body.sampling_overrides())

    def answer(job: Job, stream: bool, request: Request):
        if stream:
            return StreamingResponse(job.sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return job.collect(request.receive)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body, s, params = await admit(request, ChatRequest)
        n_logprobs = body.n_logprobs()
        # template and grammar in a thread: compiling a schema can take a while
        req = await asyncio.to_thread(prepare_chat, s.model.tokenizer, body.message_dicts(), tools=body.tools,
                                      tool_choice=body.tool_choice, parallel_tool_calls=body.parallel_tool_calls,
                                      response_format=body.response_format,
                                      template_kwargs=body.chat_template_kwargs)
        handle = s.submit(req.prompt_ids, body.token_limit(), params, body.stop_list(), n_logprobs, req.grammar)
        job = Job(handle, "chat", s.model_id, s.model.tokenizer, n_logprobs,
                  include_usage=body.include_usage(), tool_calls=req.tool_calls)
        return await _maybe_await(answer(job, body.stream, request))

    @app.post("/v1/completions")
    async def completions(request: Request):
        body, s, params = await admit(request, CompletionRequest)
        prompt = body.single_prompt()
        grammar = await asyncio.to_thread(from_response_format, s.model.tokenizer, body.response_format)
        if isinstance(prompt, str):
            ids = await asyncio.to_thread(s.model.tokenize, prompt, True)
        else:
            ids = list(prompt)
        handle = s.submit(ids, body.max_tokens, params, body.stop_list(), body.logprobs, grammar)
        job = Job(handle, "text", s.model_id, s.model.tokenizer, body.logprobs,
                  include_usage=body.include_usage())
        return await _maybe_await(answer(job, body.stream, request))

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await _parse(request, EmbeddingRequest)
        s = running()
        s.check_model(body.model)
        data, n_tokens = [], 0
        for i, item in enumerate(body.inputs()):
            ids = await asyncio.to_thread(s.model.tokenize, item) if isinstance(item, str) else list(item)
            try:
                vector = await asyncio.wrap_future(s.embed_async(ids))
            except QwenCpuError as e:
                raise QwenCpuError(f"input {i}: {e}") from None
            vector = np.asarray(vector, dtype="<f4")
            n_tokens += len(ids)
            value: Any = (base64.b64encode(vector.tobytes()).decode() if body.encoding_format == "base64"
                          else vector.tolist())
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {"object": "list", "data": data, "model": s.model_id,
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": svc.model_id, "object": "model", "created": 0,
                                            "owned_by": "qwen-cpu"}]}

    @app.get("/health")
    async def health():
        if svc.scheduler is None:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        stats = svc.scheduler.stats() if svc.scheduler is not None else {}
        return PlainTextResponse(svc.metrics.render(stats), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


async def _maybe_await(value):
    return await value if asyncio.iscoroutine(value) else value
