"""From a scheduler handle's `generate.Response` objects to OpenAI-shaped results: a whole
`chat.completion` / `text_completion` dict, or the chunks of a stream as Server-Sent Events.

With tool calls, <tool_call> blocks become `message.tool_calls` or tool-call deltas (tools.py).
A stream ends with a chunk carrying the finish reason ("stop", "length", "tool_calls", or
"cancelled" when the server shut down), an optional usage chunk, then `data: [DONE]`. The handle is
cancelled when the consumer goes away (the client disconnected), which frees its slot at the next step.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .. import tools
from ..errors import QwenCpuError


@dataclass
class Job:
    """One accepted generation request: the handle to read and how to shape what it yields."""

    handle: Any  # scheduler handle: .aiter() -> generate.Response, .cancel()
    kind: str  # "chat" or "text"
    model_id: str
    tokenizer: Any
    n_logprobs: int | None = None  # None: no logprobs; k: the chosen token and k alternatives
    include_usage: bool = False
    tool_calls: bool = False  # chat: parse <tool_call> blocks into tool_calls (tools.py)
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        self.id = self.id or ("chatcmpl-" if self.kind == "chat" else "cmpl-") + uuid.uuid4().hex

    # ---- pieces --------------------------------------------------------------------------------
    def _envelope(self, chunk: bool) -> dict:
        obj = ("chat.completion.chunk" if chunk else "chat.completion") if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model_id}

    def _token_entry(self, token: int, logprob: float) -> dict:
        raw = self.tokenizer.token_to_bytes(token)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    def _logprob_part(self, r, text_offset: int) -> dict | None:
        """The logprobs of one Response in the endpoint's shape (None when not asked or no token)."""
        if self.n_logprobs is None or r.token is None or r.logprob is None:
            return None
        top = r.top_logprobs or []
        if self.kind == "chat":
            entry = self._token_entry(r.token, r.logprob)
            entry["top_logprobs"] = [self._token_entry(t, lp) for t, lp in top]
            return {"content": [entry]}
        piece = self._token_entry(r.token, r.logprob)["token"]
        return {"tokens": [piece], "token_logprobs": [r.logprob], "text_offset": [text_offset],
                "top_logprobs": [{self._token_entry(t, lp)["token"]: lp for t, lp in top}]}

    @staticmethod
    def _merge_logprobs(parts: list[dict]) -> dict | None:
        if not parts:
            return None
        out: dict = {}
        for p in parts:
            for k, v in p.items():
                out.setdefault(k, []).extend(v)
        return out

    @staticmethod
    def usage(last) -> dict:
        from ..generate import usage

        return usage(last)

    def _choice(self, text: str, logprobs: dict | None, finish: str | None, chunk: bool) -> dict:
        if self.kind == "text":
            return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
        c: dict = {"index": 0, "finish_reason": finish, "logprobs": logprobs}
        if chunk:
            c["delta"] = {"content": text} if text else {}
        else:
            c["message"] = {"role": "assistant", "content": text}
        return c

    async def _responses(self) -> AsyncIterator:
        """The handle's Responses; the handle is cancelled if we stop early."""
        done = False
        try:
            async for r in self.handle.aiter():
                done = r.finish_reason is not None
                yield r
        finally:
            if not done:
                self.handle.cancel()

    # ---- whole result --------------------------------------------------------------------------
    async def collect(self, receive) -> dict:
        """Drain the handle into one completion dict. `receive` is the ASGI receive callable: a
        client that disconnects meanwhile cancels the generation."""
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, self.handle))
        texts, parts, last, offset = [], [], None, 0
        try:
            async for last in self._responses():
                lp = self._logprob_part(last, offset)
                if lp is not None:
                    parts.append(lp)
                texts.append(last.text)
                offset += len(last.text)
        finally:
            watcher.cancel()
        if last is None:
            raise QwenCpuError("the generation produced no result")
        out = self._envelope(chunk=False)
        choice = self._choice("".join(texts), self._merge_logprobs(parts), last.finish_reason, chunk=False)
        if self.tool_calls:
            choice["message"], choice["finish_reason"] = tools.chat_message(choice["message"]["content"],
                                                                            last.finish_reason)
        out["choices"] = [choice]
        out["usage"] = self.usage(last)
        return out

    # ---- stream --------------------------------------------------------------------------------
    async def sse(self) -> AsyncIterator[str]:
        """The stream as SSE lines: `data: {chunk}` events, then `data: [DONE]`."""
        def event(obj) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        def chunk(text: str, logprobs, finish) -> dict:
            return {**self._envelope(chunk=True), "choices": [self._choice(text, logprobs, finish, chunk=True)]}

        if self.kind == "chat":
            first = chunk("", None, None)
            first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            yield event(first)
        offset, last = 0, None
        parser = tools.ToolCallStream() if self.tool_calls else None
        try:
            async for last in self._responses():
                lp = self._logprob_part(last, offset)
                offset += len(last.text)
                finish = last.finish_reason
                if parser is None:
                    if last.text or lp is not None:
                        yield event(chunk(last.text, lp, None))
                else:  # text is held back while it may be a call; a call arrives whole in one delta
                    deltas = parser.push(last.text) + (parser.finish() if finish is not None else [])
                    if lp is not None and not deltas:
                        deltas = [{}]
                    for i, delta in enumerate(deltas):
                        c = chunk("", lp if i == 0 else None, None)
                        c["choices"][0]["delta"] = delta
                        yield event(c)
                    finish = tools.finish_reason(finish, len(parser.calls))
                if finish is not None:
                    yield event(chunk("", None, finish))
        except QwenCpuError as e:
            yield event({"error": {"message": str(e), "type": "invalid_request_error", "param": None, "code": None}})
            return
        if last is not None and self.include_usage:
            yield event({**self._envelope(chunk=True), "choices": [], "usage": self.usage(last)})
        yield "data: [DONE]\n\n"


async def _cancel_on_disconnect(receive, handle) -> None:
    """Wait for the client to go away (the request body has been read already), then cancel."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            handle.cancel()
            return
