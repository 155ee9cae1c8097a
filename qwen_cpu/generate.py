"""Generation in three layers (as in mlx-lm):

1. `generate_tokens`: prompt ids -> sampled token ids, one forward step each (the KV cache keeps
   what it can from the previous call, so a chat turn only computes its new tokens);
2. `stream`: -> `Response` objects carrying the new text (never broken UTF-8, never any part of a
   stop string), the token, speed figures and, on the last one, the finish reason;
3. `collect`: a drained stream, the whole text at once.

Stop strings are text handling and live here too (StopStringMatcher).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

from .errors import QwenCpuError
from .options import check_max_tokens, check_stop, check_token_ids
from .sampler import Sampler, SamplingParams
from .tokenizer import StreamingDetokenizer

if TYPE_CHECKING:
    from .model import ModelLease


@dataclass
class Response:
    """One step of a stream. `text` is the new text since the previous Response."""

    text: str
    token: int | None  # the sampled token (None on a final response that only flushes text)
    finish_reason: str | None  # None while generating; "stop" (end token or stop string) or "length"
    prompt_tokens: int  # prompt length
    prompt_cached: int  # prompt tokens reused from the KV cache (not recomputed)
    generation_tokens: int  # tokens sampled so far
    prompt_tps: float  # prompt tokens computed per second
    generation_tps: float  # sampled tokens per second (after the first)


def generate_tokens(lease: "ModelLease", prompt_ids: Sequence[int], sampler: Sampler,
                    max_tokens: int | None, stats: dict | None = None) -> Iterator[int]:
    """Yield up to max_tokens sampled ids (None: no limit); stops early when the context is full.
    `lease` (Model.hold()) gives this generation the model's cache. The caller stops on
    end-of-generation tokens. stats (optional) receives prompt timing and cache reuse."""
    model = lease.model
    prompt_ids = list(prompt_ids)
    if max_tokens == 0:
        return
    before = model.n_evaluated
    t0 = time.perf_counter()
    logits = lease.prefill(prompt_ids)
    if stats is not None:
        stats["prompt_seconds"] = time.perf_counter() - t0
        stats["prompt_computed"] = model.n_evaluated - before
    history = list(prompt_ids)
    n = 0
    while True:
        token = sampler(logits, history)
        history.append(token)
        n += 1
        yield token
        if n == max_tokens or model.n_past >= model.n_ctx:
            return
        logits = lease.decode_step(token)


def stream(model, prompt_ids: Sequence[int], *, max_tokens: int | None = 256,
           params: SamplingParams | None = None, stop: str | Sequence[str] | None = (),
           stop_tokens: Sequence[int] | None = None) -> Iterator[Response]:
    """Stream the continuation of prompt_ids as text: an iterator of Responses.

    params: default the model's own (sampling_params(model)). Every argument is checked here,
    before anything is computed. The stream takes the model
    (`Model.hold()`) at its first step and owns its cache until it finishes, is closed or is
    garbage-collected; it may be advanced from any thread. See Model.hold for what another call
    does meanwhile. max_tokens None: until a stop or the end of the context. stop: one string or
    several (never emitted, even when split across tokens)."""
    tok = model.tokenizer
    n_vocab = model.config.n_vocab
    prompt_ids = check_token_ids(prompt_ids, n_vocab, "prompt token ids")
    max_tokens = check_max_tokens(max_tokens)
    stop = check_stop(stop)
    params = params if params is not None else sampling_params(model)
    if not isinstance(params, SamplingParams):
        raise QwenCpuError(f"params must be a SamplingParams, got {type(params).__name__}")
    if params.logit_bias and max(params.logit_bias) >= n_vocab:
        raise QwenCpuError(f"logit_bias token id {max(params.logit_bias)} is outside the vocabulary "
                           f"(0 .. {n_vocab - 1})")
    end_tokens = set(tok.eos_ids if stop_tokens is None
                     else check_token_ids(stop_tokens, n_vocab, "stop_tokens") if stop_tokens else ())
    if len(prompt_ids) >= model.n_ctx:
        raise QwenCpuError(
            f"the prompt has {len(prompt_ids)} tokens but the context holds {model.n_ctx} (n_ctx), "
            "leaving no room to generate"
        )
    return _stream(model, prompt_ids, max_tokens, Sampler(params), stop, end_tokens)


def _stream(model, prompt_ids: list[int], max_tokens: int | None, sampler: Sampler,
            stop: tuple[str, ...], end_tokens: set[int]) -> Iterator[Response]:
    detok = StreamingDetokenizer(model.tokenizer, skip_special=True)
    stops = StopStringMatcher(stop)
    stats: dict = {}
    n_gen = 0
    t_first = None

    def response(text: str, token: int | None, finish: str | None) -> Response:
        prompt_s = stats.get("prompt_seconds", 0.0)
        computed = stats.get("prompt_computed", 0)
        gen_s = time.perf_counter() - t_first if t_first is not None and n_gen > 1 else 0.0
        return Response(
            text=text, token=token, finish_reason=finish, prompt_tokens=len(prompt_ids),
            prompt_cached=len(prompt_ids) - computed, generation_tokens=n_gen,
            prompt_tps=computed / prompt_s if prompt_s > 0 else 0.0,
            generation_tps=(n_gen - 1) / gen_s if gen_s > 0 else 0.0,
        )

    # Held across the yields below; released by the `with` when the stream ends, is closed
    # (GeneratorExit) or is collected. Not a thread-bound lock: any thread may advance the stream.
    with model.hold() as lease:
        finish = "length"
        for token in generate_tokens(lease, prompt_ids, sampler, max_tokens, stats):
            n_gen += 1
            if t_first is None:
                t_first = time.perf_counter()
            if token in end_tokens:
                finish = "stop"
                break
            text = stops.push(detok.feed(token))
            if stops.stopped:
                finish = "stop"
                if text:
                    yield response(text, token, None)
                break
            yield response(text, token, None)
        # Text held back (an unfinished character, a possible stop-string prefix) is released at the end.
        tail = "" if stops.stopped else stops.push(detok.finish()) + stops.flush()
    yield response(tail, None, finish)


def collect(responses: Iterator[Response]) -> Response:
    """Drain a stream into one Response holding the whole text (and the last one's figures)."""
    parts, last = [], None
    for last in responses:
        parts.append(last.text)
    assert last is not None
    last.text = "".join(parts)
    return last


def sampling_params(defaults=None, /, **overrides) -> SamplingParams:
    """SamplingParams from keyword overrides (temperature=0: greedy; a None value means "not
    given") over a model's own defaults: `defaults` is a Model, a defaults.Defaults, or None for
    the generic ones. The order in which settings win is described in defaults.py."""
    from . import defaults as _defaults

    n_ctx = getattr(defaults, "n_ctx", None)
    if defaults is not None and not isinstance(defaults, _defaults.Defaults):
        defaults = defaults.sampling_defaults  # a Model
    values, _ = _defaults.resolve(defaults, overrides, n_ctx)
    try:
        return SamplingParams(**values)
    except TypeError as e:
        raise QwenCpuError(f"unknown sampling option: {e}") from None


def openai_completion(responses: Iterator[Response], model_name: str) -> dict:
    """Drain a stream into an OpenAI `chat.completion` dict."""
    last = collect(responses)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": last.text},
                     "finish_reason": last.finish_reason}],
        "usage": {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.generation_tokens,
                  "total_tokens": last.prompt_tokens + last.generation_tokens},
    }


def openai_chunks(responses: Iterator[Response], model_name: str) -> Iterator[dict]:
    """A stream as OpenAI `chat.completion.chunk` dicts: a role delta, content deltas, then an
    empty delta carrying the finish reason."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict, finish: str | None) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant"}, None)
    for r in responses:
        if r.text:
            yield chunk({"content": r.text}, None)
        if r.finish_reason is not None:
            yield chunk({}, r.finish_reason)


# ---- stop strings -----------------------------------------------------------------------------

class StopStringMatcher:
    """Filters streamed text so that no stop string, nor its beginning, is ever emitted.

    `push(delta) -> str` returns text that is safe to show: it holds back the longest tail that
    could still grow into a stop string. When a stop string completes (even across many deltas),
    `push` returns the text before it, `stopped` becomes True and `stop_string` names it; further
    pushes return "". `flush() -> str` releases what is held back once generation ends without one.
    """

    def __init__(self, stop_strings: Sequence[str]):
        self.stop_strings = [s for s in stop_strings if s]
        self._held = ""
        self.stopped = False
        self.stop_string: str | None = None

    def push(self, delta: str) -> str:
        if self.stopped or not delta:
            return ""
        if not self.stop_strings:
            return delta
        text = self._held + delta
        hits = [(i, s) for s in self.stop_strings if (i := text.find(s)) >= 0]
        if hits:
            at, self.stop_string = min(hits, key=lambda h: (h[0], -len(h[1])))
            self.stopped, self._held = True, ""
            return text[:at]
        hold = 0
        for s in self.stop_strings:
            for length in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:length]):
                    hold = length
                    break
        self._held = text[len(text) - hold:]
        return text[:len(text) - hold]

    def flush(self) -> str:
        out, self._held = ("" if self.stopped else self._held), ""
        return out
