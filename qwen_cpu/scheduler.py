"""Continuous batching: many requests through one Model, the next token of every running sequence
in one forward pass. Knows nothing of HTTP (qwen_cpu.server builds on it); usable from Python:

    m = Model.load(path, n_seq=4)                        # 4 KV-cache slots: 4 sequences at once
    with Scheduler(m, max_queue=64, prompt_chunk=256) as s:
        h = s.submit(Request(prompt_ids=ids, max_tokens=128, params=sampling_params(temperature=0)))
        for r in h:                                      # generate.Response objects, as generate.stream's
            print(r.text, end="")

A step thread repeats: admit queued requests into free slots, then one `Model.forward_runs` with a
one-token run for every sequence that is generating and a chunk of up to `prompt_chunk` prompt
tokens (shared, first come first served, by the sequences still reading their prompts), so running
streams keep flowing while a long prompt is read; then each sequence samples from its logits
(generate.Generation: the same per-sequence code as generate.stream). A slot keeps its cache when
its request ends: a new request goes to the free slot holding the longest prefix of its prompt (a
follow-up chat turn computes only its new tokens), and a longer prefix held by a busy slot is
copied over first.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator, Sequence

import numpy as np

from .errors import QwenCpuError
from .generate import Generation, Response, sampling_params
from .model import Engine, Run, check_pooling, pool_states
from .options import check_token_ids
from .sampler import SamplingParams


class QueueFull(QwenCpuError):
    """The scheduler's queue holds max_queue requests already (HTTP servers answer 429)."""


@dataclass
class Request:
    """A generation request: prompt token ids and the options of generate.stream."""

    prompt_ids: Sequence[int]
    max_tokens: int = 256
    params: SamplingParams | None = None  # generate.sampling_params(model, ...); None: the model's defaults
    stop: Sequence[str] = ()
    logprobs: int | None = None  # None, or top-N (0..20): fills Response.logprob / top_logprobs
    constraint: Any = None  # interface 1 (qwen_cpu.constrain): a per-request grammar
    stop_tokens: Sequence[int] | None = None  # None: the tokenizer's end-of-generation tokens


class Handle:
    """The Responses of one submitted request, in order; the last has a finish_reason ("stop",
    "length" or "cancelled"). Iterate from one consumer, in a thread (`for r in h`) or in asyncio
    (`async for r in h.aiter()`). A consumer that stops before the end cancels the request."""

    def __init__(self):
        self._items: collections.deque = collections.deque()  # Response, or an exception to raise
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._cancelled = False
        self._ended = False  # the final item has been put

    def cancel(self) -> None:
        """Stop the request: its slot is freed at the next step and the stream ends with
        finish_reason "cancelled" (nothing happens if it has ended already)."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def _put(self, item: Response | BaseException, wakes: list | None = None) -> None:
        """Queue item for the consumer; an asyncio consumer is woken now, or, given `wakes`, its
        (loop, future) goes there for the caller's _wake_all (one wake-up per loop and step)."""
        with self._cond:
            self._items.append(item)
            if isinstance(item, BaseException) or item.finish_reason is not None:
                self._ended = True
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, []
        if wakes is not None:
            wakes.extend(waiters)
        else:
            _wake_all(waiters)

    @staticmethod
    def _unpack(item: Response | BaseException) -> Response:
        if isinstance(item, BaseException):
            raise item
        return item

    def __iter__(self) -> Iterator[Response]:
        finished = False
        try:
            while not finished:
                with self._cond:
                    while not self._items:
                        self._cond.wait()
                    item = self._items.popleft()
                r = self._unpack(item)
                finished = r.finish_reason is not None
                yield r
        finally:
            if not finished:
                self.cancel()

    async def aiter(self) -> AsyncIterator[Response]:
        """The Responses in asyncio, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        finished = False
        try:
            while not finished:
                with self._cond:
                    item = self._items.popleft() if self._items else None
                    if item is None:
                        fut = loop.create_future()
                        self._waiters.append((loop, fut))
                if item is None:
                    await fut
                    continue
                r = self._unpack(item)
                finished = r.finish_reason is not None
                yield r
        finally:
            if not finished:
                self.cancel()

    def result(self) -> Response:
        """Wait for the end: one Response with the whole text (and the last one's figures)."""
        from .generate import collect

        return collect(iter(self))


def _wake_all(waiters: Sequence[tuple[asyncio.AbstractEventLoop, asyncio.Future]]) -> None:
    """Resolve the asyncio consumers' futures, one call_soon_threadsafe per event loop: each is a
    write that wakes the loop's thread, which then competes with the step's compute threads."""
    by_loop: dict = {}
    for loop, fut in waiters:
        by_loop.setdefault(loop, []).append(fut)
    for loop, futs in by_loop.items():
        loop.call_soon_threadsafe(_wake, futs)


def _wake(futs: list[asyncio.Future]) -> None:
    for fut in futs:
        if not fut.done():
            fut.set_result(None)


@dataclass
class _Embed:
    ids: list[int]
    pooling: str
    future: Future


@dataclass
class _Seq:
    """A request in a slot."""

    slot: int
    job: Any  # (Generation, Handle) for a generation, _Embed for an embedding
    pending: list[int]  # prompt tokens still to run
    pos: int  # position of the next token to run
    t_admit: float = field(default_factory=time.perf_counter)
    computed: int = 0  # prompt tokens computed (not reused)
    states: list = field(default_factory=list)  # an embedding's hidden states so far
    next_token: int | None = None  # sampled, to run at pos (generating)
    drafter: Any = None  # speculative.Lookup or ModelDrafter (the scheduler's draft option)
    drafts: list = field(default_factory=list)  # drafted tokens run after next_token this step
    draft_key: Any = None  # what kind of draft they are (DraftLength)


class Scheduler:
    """Runs requests on a Model with n_seq slots; starts its step thread. It holds the model
    (a lease from Model.hold) until close(): other calls on the model are refused meanwhile."""

    def __init__(self, model: Engine, max_queue: int = 64, prompt_chunk: int = 256, draft: Any = None):
        if not isinstance(max_queue, int) or max_queue < 0:
            raise QwenCpuError(f"max_queue must be a non-negative integer, got {max_queue!r}")
        if not isinstance(prompt_chunk, int) or prompt_chunk < 2:
            raise QwenCpuError(f"prompt_chunk must be an integer >= 2, got {prompt_chunk!r}")
        self._draft, self._length = draft, None
        if draft is not None:  # checked now (a bad draft model is an error here, not per request)
            from .speculative import DraftLength, drafter

            drafter(model, draft)
            self._length = DraftLength(explores=True)  # shared: the costs are the model's
        self._lease = model.hold()
        self._lease.exclusive = ("the model's cache slots belong to a Scheduler: submit requests to it "
                                 "(Scheduler.submit, Scheduler.embed) or close it first")
        self.model, self.max_queue, self.prompt_chunk = model, max_queue, prompt_chunk
        self.n_seq = model.n_seq
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()  # (Request, Generation, Handle) or _Embed
        self._active: dict[int, _Seq] = {}  # slot -> its sequence
        self._last_used = [0.0] * self.n_seq  # when each slot last ended a request (free-slot choice)
        self._closing = False
        self._counts = collections.Counter()
        self._recent: collections.deque = collections.deque()  # (time, tokens generated) of recent steps
        self._thread = threading.Thread(target=self._run, name="qwen-cpu-scheduler", daemon=True)
        self._thread.start()

    # ---- the API --------------------------------------------------------------------------------
    def submit(self, request: Request) -> Handle:
        """Queue a request; returns its Handle at once. Raises QueueFull when max_queue requests
        wait already, QwenCpuError for a bad request (prompt ids, options) or a closed scheduler."""
        m = self.model
        gen = Generation(m.tokenizer, request.prompt_ids, n_ctx=m.n_ctx, n_vocab=m.config.n_vocab,
                         max_tokens=request.max_tokens,
                         params=request.params if request.params is not None else sampling_params(m), stop=request.stop,
                         stop_tokens=request.stop_tokens, logprobs=request.logprobs, constraint=request.constraint)
        handle = Handle()
        self._enqueue((gen.prompt_ids, gen, handle))
        return handle

    def embed(self, ids: Sequence[int], pooling: str = "mean") -> np.ndarray:
        """The embedding of ids (Model.embed's: a unit (n_embd,) float32 vector), computed in a
        free slot between the steps; blocks until done."""
        return self.embed_async(ids, pooling).result()

    def embed_async(self, ids: Sequence[int], pooling: str = "mean") -> Future:
        """embed() as a concurrent.futures.Future (asyncio: `await asyncio.wrap_future(f)`)."""
        check_pooling(pooling)
        job = _Embed(self._check_ids(ids), pooling, Future())
        self._enqueue(job)
        return job.future

    def stats(self) -> dict:
        """Counters and gauges: queue_depth, slots_busy, n_seq, requests_total, requests_finished,
        requests_cancelled, prompt_tokens_total, prompt_tokens_cached_total,
        tokens_generated_total, steps_total, tokens_per_second (generated, over the last 10 s)."""
        with self._cond:
            now = time.perf_counter()
            self._forget_old(now)
            window = now - self._recent[0][0] if self._recent else 0.0
            recent = sum(n for _, n in self._recent)
            return {
                "queue_depth": len(self._queue), "slots_busy": len(self._active), "n_seq": self.n_seq,
                **{k: self._counts[k] for k in ("requests_total", "requests_finished", "requests_cancelled",
                                                "prompt_tokens_total", "prompt_tokens_cached_total",
                                                "tokens_generated_total", "steps_total")},
                "tokens_per_second": recent / window if window > 0 else 0.0,
            }

    def close(self) -> None:
        """Stop the step thread: running and queued requests end with a final Response
        (finish_reason "cancelled"), waiting embeddings fail; the model's slots are released."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- internals ------------------------------------------------------------------------------
    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        ids = check_token_ids(ids, self.model.config.n_vocab, "prompt token ids")
        if len(ids) > self.model.n_ctx:
            raise QwenCpuError(f"the prompt has {len(ids)} tokens but the context holds {self.model.n_ctx} (n_ctx)")
        return ids

    def _enqueue(self, job) -> None:
        with self._cond:
            if self._closing:
                raise QwenCpuError("the scheduler is closed")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting); try again later")
            self._queue.append(job)
            self._counts["requests_total"] += 1
            self._cond.notify_all()

    def _forget_old(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - 10.0:
            self._recent.popleft()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closing and not self._queue and not self._active:
                        self._cond.wait()
                    if self._closing:
                        break
                    self._drop_cancelled()
                    self._admit()
                if self._active:
                    self._step()
        finally:
            self._shut_down()

    def _drop_cancelled(self) -> None:
        """Requests cancelled while queued or running end now (their slots free for this step)."""
        kept = collections.deque()
        for job in self._queue:
            if isinstance(job, tuple) and job[2].cancelled:
                job[2]._put(job[1].finish("cancelled"))
                self._counts["requests_cancelled"] += 1
            else:
                kept.append(job)
        self._queue = kept
        for slot, seq in list(self._active.items()):
            if not isinstance(seq.job, _Embed) and seq.job[1].cancelled:
                seq.job[1]._put(seq.job[0].finish("cancelled"))
                self._counts["requests_cancelled"] += 1
                self._free(slot)

    def _free(self, slot: int) -> None:
        del self._active[slot]
        self._last_used[slot] = time.perf_counter()

    def _admit(self) -> None:
        """Queued requests into free slots, first come first served."""
        m = self._lease
        while self._queue and len(self._active) < self.n_seq:
            job = self._queue.popleft()
            free = [s for s in range(self.n_seq) if s not in self._active]
            if isinstance(job, _Embed):
                # every position's state is needed: nothing reused; the least recently used slot
                slot = min(free, key=lambda s: self._last_used[s])
                self._active[slot] = _Seq(slot, job, list(job.ids), 0)
                continue
            ids, gen, handle = job
            # the free slot with the longest cached prefix (then the least recently used)
            slot = max(free, key=lambda s: (m.cached_prefix(s, ids), -self._last_used[s]))
            keep = m.cached_prefix(slot, ids)
            donor = max(range(self.n_seq), key=lambda s: m.cached_prefix(s, ids))
            if m.cached_prefix(donor, ids) > keep:  # a busy slot holds more of it: copy that
                keep = m.cached_prefix(donor, ids)
                m.copy_slot(donor, slot, keep)
            self._counts["prompt_tokens_total"] += len(ids)
            self._counts["prompt_tokens_cached_total"] += keep
            self._active[slot] = _Seq(slot, (gen, handle), ids[keep:], keep)
            if self._draft is not None:
                from .speculative import drafter

                self._active[slot].drafter = drafter(self.model, self._draft)

    def _step(self) -> None:
        """One forward pass: a token for every generating sequence, a share of prompt_chunk
        prompt tokens for the sequences reading their prompts."""
        runs, seqs = [], []
        budget = self.prompt_chunk
        for seq in sorted(self._active.values(), key=lambda q: q.t_admit):
            if seq.next_token is not None:
                seq.drafts = self._drafts(seq) if seq.drafter is not None else []
                runs.append(Run(seq.slot, seq.pos, [seq.next_token] + seq.drafts, verify=bool(seq.drafts)))
            else:
                take = _prompt_take(len(seq.pending), budget)
                if take == 0:
                    continue
                budget -= take
                runs.append(Run(seq.slot, seq.pos, seq.pending[:take], logits=take == len(seq.pending)))
            seqs.append(seq)
        if not runs:
            return
        want_hidden = any(isinstance(q.job, _Embed) for q in seqs)
        try:
            t0 = time.perf_counter()
            outs = self._lease.forward_runs(runs, hidden=want_hidden)
            if self._length is not None and len(runs) == 1:  # a lone sequence's step: its cost
                if runs[0].verify:
                    self._length.verify_time(len(runs[0].tokens), time.perf_counter() - t0)
                elif len(runs[0].tokens) == 1:
                    self._length.decode_time(time.perf_counter() - t0)
        except BaseException as e:  # noqa: BLE001 - every sequence of the step learns why it ended
            with self._cond:
                for seq in seqs:
                    self._fail(seq, e if isinstance(e, Exception) else QwenCpuError(f"the step was interrupted: {e!r}"))
            if not isinstance(e, Exception):
                raise
            return
        now, generated = time.perf_counter(), 0
        wakes: list = []  # the asyncio consumers to wake once the step's tokens are all out
        try:
            with self._cond:
                for seq, run, (logits, states) in zip(seqs, runs, outs):
                    n = len(run.tokens)
                    seq.pos += n
                    if seq.next_token is None:  # a prompt chunk
                        del seq.pending[:n]
                        seq.computed += n
                        if isinstance(seq.job, _Embed):
                            seq.states.append(states)
                            if not seq.pending:
                                seq.job.future.set_result(pool_states(np.concatenate(seq.states), seq.job.pooling))
                                self._counts["requests_finished"] += 1
                                self._free(seq.slot)
                            continue
                        if seq.pending:
                            continue
                        seq.job[0].prompt_done(seq.computed, now - seq.t_admit)
                    gen, handle = seq.job
                    try:
                        if run.verify:
                            token, n_gen = self._verified(seq, logits, seq.pos - n, wakes)
                        else:
                            token, n_gen = gen.sample(logits), 1
                            for r in gen.push(token):
                                handle._put(r, wakes)
                    except Exception as e:  # noqa: BLE001 - e.g. every token banned: this request alone ends, with why
                        self._fail(seq, e if isinstance(e, QwenCpuError) else QwenCpuError(f"sampling failed: {e!r}"))
                        continue
                    generated += n_gen
                    if gen.done:
                        self._counts["requests_finished"] += 1
                        self._free(seq.slot)
                    else:
                        seq.next_token = token
                self._counts["tokens_generated_total"] += generated
                self._counts["steps_total"] += 1
                self._recent.append((now, generated))
                self._forget_old(now)
        finally:  # a failing sample still wakes the consumers whose items went out
            _wake_all(wakes)

    def _drafts(self, seq: _Seq) -> list[int]:
        """The drafted tokens to verify after seq.next_token this step (speculative.py), maybe []."""
        from .speculative import K_MAX, Lookup

        gen = seq.job[0]
        room = self.model.n_ctx - seq.pos - 1
        if gen.max_tokens is not None:
            room = min(room, gen.max_tokens - gen.n_gen - 1)
        if room <= 0 or self._length.t1 is None:
            return []
        want = min(K_MAX, room)
        if isinstance(seq.drafter, Lookup):
            proposal, seq.draft_key = seq.drafter.propose(gen.history, want)
            return proposal[:self._length.choose(seq.draft_key, len(proposal))]
        k = self._length.choose("model", want)
        if not k:
            return []
        t0 = time.perf_counter()
        drafts, seq.draft_key = seq.drafter.propose(self._lease.slot_tokens(seq.slot)[:seq.pos] + [seq.next_token], k)
        self._length.draft_time(len(drafts), time.perf_counter() - t0)
        return drafts

    def _verified(self, seq: _Seq, logits: np.ndarray, base: int, wakes: list) -> tuple[int, int]:
        """Sample each verified row (logits (1 + len(seq.drafts), n_vocab)) while the samples
        match the drafts (speculative.py's rule), push them (consumers to wake into `wakes`), roll
        the slot back past the first mismatch; returns (the last token sampled, tokens sampled)."""
        gen, handle = seq.job
        drafts, ok = seq.drafts, 0
        for i in range(len(drafts) + 1):
            token = gen.sample(logits[i])
            for r in gen.push(token):
                handle._put(r, wakes)
            accept = i < len(drafts) and token == drafts[i]
            ok += accept
            if gen.done or not accept:
                break
        checked = min(i + 1, len(drafts))
        gen.draft_checked += checked
        gen.draft_accepted += ok
        self._length.accepted(seq.draft_key, checked, ok)
        seq.pos = base + i + 1  # the rows whose tokens stand
        self._lease.rollback(seq.pos, seq.slot)
        return token, i + 1

    def _fail(self, seq: _Seq, error: Exception) -> None:
        if isinstance(seq.job, _Embed):
            seq.job.future.set_exception(error)
        else:
            seq.job[1]._put(error)
        self._free(seq.slot)

    def _shut_down(self) -> None:
        with self._cond:
            self._closing = True
            for seq in list(self._active.values()):
                if isinstance(seq.job, _Embed):
                    seq.job.future.set_exception(QwenCpuError("the scheduler was closed"))
                else:
                    seq.job[1]._put(seq.job[0].finish("cancelled"))
                self._free(seq.slot)
            for job in self._queue:
                if isinstance(job, _Embed):
                    job.future.set_exception(QwenCpuError("the scheduler was closed"))
                else:
                    job[2]._put(job[1].finish("cancelled"))
            self._queue.clear()
        self._lease.release()


def _prompt_take(remaining: int, budget: int) -> int:
    """Prompt tokens to run this step: up to the budget, but never a chunk of one token out of a
    longer prompt (nor one left for later): a one-token run takes the decode kernels, and a
    prompt's tokens then give what one prefill of them gives."""
    take = min(remaining, budget)
    if take < remaining and remaining - take == 1:
        take -= 1
    return 0 if take == 1 and remaining > 1 else take
