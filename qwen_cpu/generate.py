"""Generation in three layers (as in mlx-lm):

1. `Generation`: one sequence's way from logits to text, a token at a time: its options checked,
   sampling (with its history), end tokens, the streaming detokenizer, stop strings, limits,
   logprobs and the `Response` objects. `stream` drives one; qwen_cpu.scheduler drives many in one
   forward pass;
2. `stream`: prompt ids -> `Response` objects carrying the new text (never broken UTF-8, never any
   part of a stop string), the token, speed figures and, on the last one, the finish reason (the
   KV cache keeps what it can from the previous call, so a chat turn only computes its new tokens);
3. `collect`: a drained stream, the whole text at once.

Stop strings are text handling and live here too (StopStringMatcher).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from . import tools
from .errors import QwenCpuError
from .options import check_max_tokens, check_stop, check_token_ids
from .sampler import Sampler, SamplingParams, log_softmax
from .tokenizer import StreamingDetokenizer

MAX_TOP_LOGPROBS = 20  # as OpenAI's API


@dataclass
class Response:
    """One step of a stream. `text` is the new text since the previous Response."""

    text: str
    token: int | None  # the sampled token (None on a final response that only flushes text)
    finish_reason: str | None  # None while generating; "stop" (end token, stop string, complete grammar), "length" or "cancelled"
    prompt_tokens: int  # prompt length
    prompt_cached: int  # prompt tokens reused from the KV cache (not recomputed)
    generation_tokens: int  # tokens sampled so far
    prompt_tps: float  # prompt tokens computed per second
    generation_tps: float  # sampled tokens per second (after the first)
    # With logprobs asked for: the token's log-probability under the model's distribution (before
    # the sampling filters), and the top-N (token, logprob) pairs, most likely first.
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    # With a draft (speculative decoding): drafted tokens checked so far, and those accepted.
    draft_tokens: int = 0
    draft_accepted: int = 0


class Generation:
    """The state of one sequence's generation, advanced one sampled token at a time:
    `token = g.sample(logits)` then `responses = g.push(token)` (1 or 2 Responses, the last with a
    finish reason once `g.done`); the caller runs the model on `token` while not done. `finish(reason)`
    ends it early (e.g. "cancelled") with the held-back text.

    Every option is checked here, before anything is computed. n_ctx: the context the sequence runs
    in (a sampled token with no position left ends it with "length"); n_vocab: the model's.
    max_tokens None: until a stop or the end of the context. stop: one string or several.
    logprobs: None, or N in 0..20 to fill Response.logprob and the top-N. constraint: an object of
    interface 1 (qwen_cpu.constrain), applied by the Sampler; its completion ends with "stop".
    context_shift: None (a full context ends the sequence with "length") or a qwen_cpu.context
    shift (KeepStart, ChatShift) the driver calls when the cache is full; needs max_tokens.
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int], *, n_ctx: int, n_vocab: int,
                 max_tokens: int | None = 256, params: SamplingParams | None = None,
                 stop: str | Sequence[str] | None = (), stop_tokens: Sequence[int] | None = None,
                 logprobs: int | None = None, constraint=None, context_shift=None):
        self.prompt_ids = check_token_ids(prompt_ids, n_vocab, "prompt token ids")
        self.max_tokens = check_max_tokens(max_tokens)
        params = params if params is not None else sampling_params()
        if not isinstance(params, SamplingParams):
            raise QwenCpuError(f"params must be a SamplingParams, got {type(params).__name__}")
        if params.logit_bias and max(params.logit_bias) >= n_vocab:
            raise QwenCpuError(f"logit_bias token id {max(params.logit_bias)} is outside the vocabulary "
                               f"(0 .. {n_vocab - 1})")
        if len(self.prompt_ids) >= n_ctx:
            raise QwenCpuError(
                f"the prompt has {len(self.prompt_ids)} tokens but the context holds {n_ctx} (n_ctx), "
                "leaving no room to generate"
            )
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= MAX_TOP_LOGPROBS):
            raise QwenCpuError(f"logprobs must be an integer in 0..{MAX_TOP_LOGPROBS} (top-N), got {logprobs!r}")
        self.end_tokens = set(tokenizer.eos_ids if stop_tokens is None
                              else check_token_ids(stop_tokens, n_vocab, "stop_tokens") if stop_tokens else ())
        self.sampler = Sampler(params, constraint=constraint)
        self.constraint = constraint
        self.history = list(self.prompt_ids)
        if context_shift is not None and self.max_tokens is None:
            raise QwenCpuError("a context shift needs max_tokens (else the generation might never end)")
        self.n_ctx, self.logprobs, self.context_shift = n_ctx, logprobs, context_shift
        self.detok = StreamingDetokenizer(tokenizer, skip_special=True)
        self.stops = StopStringMatcher(check_stop(stop))
        self.n_gen = 0
        self.draft_checked = self.draft_accepted = 0  # speculative decoding's drafted tokens (speculative.py)
        self.finish_reason: str | None = None
        self.prompt_computed, self.prompt_seconds = 0, 0.0
        self.t_first: float | None = None
        self._logprob: tuple[float, list[tuple[int, float]]] | None = None
        self._unpushed = 0  # tokens the constraint has accepted that push has not seen yet
        if self.max_tokens == 0:
            self.finish_reason = "length"

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def prompt_done(self, computed: int, seconds: float) -> None:
        """Record the prompt's cost: tokens computed (not reused from the cache) and seconds."""
        self.prompt_computed, self.prompt_seconds = computed, seconds

    def sample(self, logits: np.ndarray) -> int:
        """The next token drawn from logits (n_vocab,) float32 (the history, penalties and seed
        are this sequence's)."""
        token = self.sampler(logits, self.history)
        self._unpushed = 1  # accepted by the constraint, not yet pushed (forced_tokens adds to it)
        if self.logprobs is not None:
            lp = log_softmax(logits)
            top = np.argpartition(-lp, self.logprobs)[:self.logprobs] if self.logprobs else np.zeros(0, np.int64)
            top = top[np.argsort(-lp[top], kind="stable")]
            self._logprob = (float(lp[token]), [(int(i), float(lp[i])) for i in top])
        return token

    def forced_tokens(self, room: int) -> list[int]:
        """After `sample`: the tokens the constraint forces next (accepted into it), at most `room`
        (the cache positions left after the sampled token) and what max_tokens allows; the caller
        pushes each and runs the model on them without sampling. [] without a constraint."""
        if self.constraint is None:
            return []
        if self.max_tokens is not None:
            room = min(room, self.max_tokens - self.n_gen - 1)
        forced = self.constraint.forced_tokens()[:max(room, 0)]
        for t in forced:
            self.constraint.accept(t)
        self._unpushed += len(forced)
        return forced

    def push(self, token: int) -> list[Response]:
        """Take a sampled token: its Response (unless it ends the text), then the final one if the
        sequence ends here (end token, stop string, constraint complete, max_tokens, no context left)."""
        if self.done:
            raise QwenCpuError("push: this generation has finished")
        self.n_gen += 1
        self._unpushed = max(self._unpushed - 1, 0)
        self.history.append(token)
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if token in self.end_tokens:
            return [self.finish("stop")]
        out = []
        text = self.stops.push(self.detok.feed(token))
        if text or not self.stops.stopped:
            out.append(self._response(text, token, None))
        complete = self.constraint is not None and not self._unpushed and self.constraint.is_complete()
        if self.stops.stopped or complete:
            out.append(self.finish("stop"))
        elif self.n_gen == self.max_tokens or (self.context_shift is None
                                               and len(self.prompt_ids) + self.n_gen > self.n_ctx):
            out.append(self.finish("length"))  # (the token just sampled has no position left)
        return out

    def finish(self, reason: str) -> Response:
        """End the sequence: the final Response, with the text held back so far (an unfinished
        character, a possible stop-string prefix) unless a stop string ended it."""
        self.finish_reason = reason
        tail = "" if self.stops.stopped else self.stops.push(self.detok.finish()) + self.stops.flush()
        return self._response(tail, None, reason)

    def _response(self, text: str, token: int | None, finish: str | None) -> Response:
        gen_s = time.perf_counter() - self.t_first if self.t_first is not None and self.n_gen > 1 else 0.0
        lp, top = self._logprob if token is not None and self._logprob is not None else (None, None)
        return Response(
            text=text, token=token, finish_reason=finish, prompt_tokens=len(self.prompt_ids),
            prompt_cached=len(self.prompt_ids) - self.prompt_computed, generation_tokens=self.n_gen,
            prompt_tps=self.prompt_computed / self.prompt_seconds if self.prompt_seconds > 0 else 0.0,
            generation_tps=(self.n_gen - 1) / gen_s if gen_s > 0 else 0.0, logprob=lp, top_logprobs=top,
            draft_tokens=self.draft_checked, draft_accepted=self.draft_accepted,
        )


def stream(model, prompt_ids: Sequence[int], *, max_tokens: int | None = 256,
           params: SamplingParams | None = None, stop: str | Sequence[str] | None = (),
           stop_tokens: Sequence[int] | None = None, logprobs: int | None = None,
           constraint=None, context_shift=None, draft=None) -> Iterator[Response]:
    """Stream the continuation of prompt_ids as text: an iterator of Responses (see Generation
    for the options, all checked here before anything is computed; params: default the model's
    own, sampling_params(model)).

    The stream takes the model (`Model.hold()`) at its first step and owns its cache until it
    finishes, is closed or is garbage-collected; it may be advanced from any thread. See
    Model.hold for what another call does meanwhile.

    draft: speculative decoding (qwen_cpu.speculative): None, "lookup" (prompt lookup), or a
    draft model (a GGUF path or reference, or a loaded Model with the same vocabulary); the output
    is the same, token for token."""
    drafter = None
    if draft is not None:
        from . import speculative

        drafter = speculative.drafter(model, draft)
    gen = Generation(model.tokenizer, prompt_ids, n_ctx=model.n_ctx, n_vocab=model.config.n_vocab,
                     max_tokens=max_tokens, params=params if params is not None else sampling_params(model),
                     stop=stop, stop_tokens=stop_tokens,
                     logprobs=logprobs, constraint=constraint, context_shift=context_shift)
    if drafter is not None:
        return speculative.stream(model, gen, drafter, FORCED_PREFILL_MIN)
    return _stream(model, gen)


# Tokens a grammar forces run as one prefill from this many on, below it as decode steps: a short
# prefill reads the repacked matrices unpacked, slower than a few decode steps (bench/README.md).
FORCED_PREFILL_MIN = 8


def _stream(model, gen: Generation) -> Iterator[Response]:
    # The lease is held across the yields below; released by the `with` when the stream ends, is
    # closed (GeneratorExit) or is collected, before the final Response. Not a thread-bound lock:
    # any thread may advance the stream.
    final = None
    if not gen.done:  # (max_tokens 0: nothing to compute)
        with model.hold() as lease:
            before, t0 = model.n_evaluated, time.perf_counter()
            logits = lease.prefill(gen.prompt_ids)
            gen.prompt_done(model.n_evaluated - before, time.perf_counter() - t0)
            while final is None:
                new = [gen.sample(logits)]
                new += gen.forced_tokens(model.n_ctx - model.n_past - 1)
                for token in new:
                    responses = gen.push(token)
                    if gen.done:
                        final = responses.pop()
                    yield from responses
                    if final is not None:
                        break
                if final is not None:
                    break
                if model.n_past + len(new) <= model.n_ctx:
                    if len(new) >= FORCED_PREFILL_MIN:
                        logits = lease.prefill(lease.slot_tokens(0) + new)
                    else:
                        for token in new:
                            logits = lease.decode_step(token)
                else:  # the cache is full (with a context shift: see qwen_cpu.context)
                    kept = gen.context_shift(lease.slot_tokens(0) + new)
                    if kept is None or len(kept) > model.n_ctx:
                        final = gen.finish("length")
                    else:
                        logits = lease.prefill(kept)
    yield final if final is not None else gen.finish(gen.finish_reason)


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


def openai_completion(responses: Iterator[Response], model_name: str, tool_calls: bool = False) -> dict:
    """Drain a stream into an OpenAI `chat.completion` dict. tool_calls: parse <tool_call> blocks
    into message.tool_calls (tools.py)."""
    last = collect(responses)
    message, finish = {"role": "assistant", "content": last.text}, last.finish_reason
    if tool_calls:
        message, finish = tools.chat_message(last.text, finish)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage(last),
    }


def usage(last: Response) -> dict:
    """OpenAI's usage object of a finished stream; with drafting, its checked drafted tokens as
    completion_tokens_details (OpenAI's predicted-output fields: accepted and rejected)."""
    out = {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.generation_tokens,
           "total_tokens": last.prompt_tokens + last.generation_tokens}
    if last.draft_tokens:
        out["completion_tokens_details"] = {"accepted_prediction_tokens": last.draft_accepted,
                                            "rejected_prediction_tokens": last.draft_tokens - last.draft_accepted}
    return out


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
