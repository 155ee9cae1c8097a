"""Generation in three layers (as in mlx-lm):

1. `generate_tokens`: prompt ids -> sampled token ids, one forward step each (the KV cache keeps
   what it can from the previous call, so a chat turn only computes its new tokens);
2. `stream`: -> `Response` objects carrying the new text (never broken UTF-8, never any part of a
   stop string), the token, speed figures and, on the last one, the finish reason;
3. `generate`: a drained stream, the whole text at once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Iterator, Sequence

from . import tools
from .errors import QwenCpuError
from .sampler import Sampler, SamplingParams, StopStringMatcher
from .tokenizer import StreamingDetokenizer


@dataclass
class Response:
    """One step of a stream. `text` is the new text since the previous Response."""

    text: str
    token: int | None  # the sampled token (None on a final response that only flushes text)
    finish_reason: str | None  # None while generating; "stop" (end token, stop string, complete grammar) or "length"
    prompt_tokens: int  # prompt length
    prompt_cached: int  # prompt tokens reused from the KV cache (not recomputed)
    generation_tokens: int  # tokens sampled so far
    prompt_tps: float  # prompt tokens computed per second
    generation_tps: float  # sampled tokens per second (after the first)


# Tokens a grammar forces run as one prefill from this many on, below it as decode steps: a short
# prefill reads the repacked matrices unpacked, slower than a few decode steps (bench/README.md).
FORCED_PREFILL_MIN = 8


def generate_tokens(model, prompt_ids: Sequence[int], sampler: Sampler, max_tokens: int,
                    stats: dict | None = None) -> Iterator[int]:
    """Yield up to max_tokens sampled ids; stops early when the context is full. The caller stops
    on end-of-generation tokens. stats (optional) receives prompt timing and cache reuse.
    With a constraint on the sampler, the tokens its grammar forces are yielded without sampling,
    and the ids end where the grammar is complete."""
    prompt_ids = list(prompt_ids)
    if max_tokens <= 0:
        return
    before = model.n_evaluated
    t0 = time.perf_counter()
    logits = model.prefill(prompt_ids)
    if stats is not None:
        stats["prompt_seconds"] = time.perf_counter() - t0
        stats["prompt_computed"] = model.n_evaluated - before
    history = list(prompt_ids)
    constraint = sampler.constraint
    while True:
        new = [sampler(logits, history)]
        if constraint is not None:
            room = min(max_tokens - (len(history) - len(prompt_ids)), model.n_ctx - model.n_past) - 1
            new += constraint.forced_tokens()[:max(room, 0)]
            for t in new[1:]:
                constraint.accept(t)
        for t in new:
            history.append(t)
            yield t
        if len(history) - len(prompt_ids) >= max_tokens or model.n_past + len(new) > model.n_ctx:
            return
        if constraint is not None and constraint.is_complete():
            return
        if len(new) >= FORCED_PREFILL_MIN:
            logits = model.prefill(history)
        else:
            for t in new:
                logits = model.decode_step(t)


def stream(model, prompt_ids: Sequence[int], *, max_tokens: int = 256, params: SamplingParams | None = None,
           stop: Sequence[str] = (), stop_tokens: Sequence[int] | None = None,
           constraint=None) -> Iterator[Response]:
    """Stream the continuation of prompt_ids as text (params: default the model's own,
    sampling_params(model)). The model's lock is held for the whole generation, so two threads
    streaming from one model take turns instead of corrupting the cache.
    constraint (constrain.Constraint): the output follows its grammar and ends ("stop") when the
    grammar is complete."""
    tok = model.tokenizer
    params = params or sampling_params(model)
    sampler = Sampler(params, constraint=constraint)
    end_tokens = set(tok.eos_ids if stop_tokens is None else stop_tokens)
    if len(prompt_ids) >= model.n_ctx:
        raise QwenCpuError(
            f"the prompt has {len(prompt_ids)} tokens but the context holds {model.n_ctx} (n_ctx), "
            "leaving no room to generate"
        )
    detok = StreamingDetokenizer(tok, skip_special=True)
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

    with model._lock:
        finish = "length"
        for token in generate_tokens(model, prompt_ids, sampler, max_tokens, stats):
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
        if finish == "length" and constraint is not None and constraint.is_complete():
            finish = "stop"  # generate_tokens ended at the end of the grammar
        # Text held back (an unfinished character, a possible stop-string prefix) is released at the end.
        tail = "" if stops.stopped else stops.push(detok.finish()) + stops.flush()
        yield response(tail, None, finish)


def generate(responses: Iterator[Response]) -> Response:
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


def openai_completion(responses: Iterator[Response], model_name: str, tool_calls: bool = False) -> dict:
    """Drain a stream into an OpenAI `chat.completion` dict. tool_calls: parse <tool_call> blocks
    into message.tool_calls (tools.py)."""
    last = generate(responses)
    message, finish = {"role": "assistant", "content": last.text}, last.finish_reason
    if tool_calls:
        message, finish = tools.chat_message(last.text, finish)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.generation_tokens,
                  "total_tokens": last.prompt_tokens + last.generation_tokens},
    }


def openai_chunks(responses: Iterator[Response], model_name: str, tool_calls: bool = False) -> Iterator[dict]:
    """A stream as OpenAI `chat.completion.chunk` dicts: a role delta, content deltas (and with
    tool_calls, a tool-call delta per complete <tool_call> block: tools.ToolCallStream), then an
    empty delta carrying the finish reason."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict, finish: str | None) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant"}, None)
    parser = tools.ToolCallStream() if tool_calls else None
    for r in responses:
        if parser is None:
            deltas = [{"content": r.text}] if r.text else []
        else:
            deltas = parser.push(r.text) + (parser.finish() if r.finish_reason is not None else [])
        for delta in deltas:
            yield chunk(delta, None)
        if r.finish_reason is not None:
            yield chunk({}, tools.finish_reason(r.finish_reason, len(parser.calls)) if parser else r.finish_reason)
