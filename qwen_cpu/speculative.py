"""Speculative decoding: tokens proposed cheaply (a draft), then checked all at once by the model.

Decode reads every weight once per token; checking 1 + k tokens in one pass (`ModelLease.verify`:
every row through the decode kernels, bit for bit what a decode step gives, the weights read once
for all rows) costs little more, so accepted drafts come nearly free. Two drafters:

- `Lookup` (draft="lookup"): prompt lookup. The longest recent n-gram (n = 4 down to 1) ending the
  text so far (prompt and output) that occurred before: its continuation there is the draft.
- `ModelDrafter` (draft=path or a loaded Model): a smaller model with the same vocabulary drafts
  greedily, on its own KV cache.

Acceptance: each position is sampled exactly as plain decoding samples it (the same sampler, the
same history, the same seeded random draws in the same order); the draft token is accepted when the
sample equals it, and the first mismatch ends the pass, its sample kept. For a deterministic draft
this is the standard speculative-sampling rule (accept draft t with probability p(t) under the
processed distribution; otherwise a token from p with t removed, renormalised), and since the
verified logits are the decode step's bit for bit, the output equals plain decoding's, token for
token, greedy or seeded. A grammar constraint, penalties and logit processors see each position
with the history advanced, as in plain decoding. The KV cache is then rolled back past the first
rejected token (its positions are overwritten later).

Draft length (`DraftLength`): the number of drafted tokens to check is chosen per step to maximise
the expected tokens per second, from the measured acceptance rate (per n-gram length for lookup)
and the measured cost of a decode step and of each extra verified row; no draft when that does not
pay, so text with nothing to copy runs as plain decoding.
"""

from __future__ import annotations

import os
import time
from typing import Iterator, Sequence

from .errors import QwenCpuError
from .model import Engine

K_MAX = 10  # most drafted tokens checked in one pass
_ALPHA = 0.15  # weight of a new observation in the running averages
_MARGIN = 1.1  # a draft must promise this many times plain decoding's rate (the estimates are noisy)
_PROBE = 16  # steps without drafts before a costly drafter is tried again (doubled while probes fail)


class Lookup:
    """Prompt-lookup drafting over a growing token list (the prompt, then the output): an index
    of the n-grams seen so far (n = n_min .. n_max) -> the position after their latest occurrence,
    updated incrementally, so a proposal costs O(n_max) whatever the length."""

    # An unverified proposal is still checked against the next token (stream), but a row's cost
    # is measured only when one is verified: probe now and then (DraftLength).
    explores = True

    def __init__(self, n_max: int = 4, n_min: int = 1):
        self.n_max, self.n_min = n_max, n_min
        self._index: dict[tuple, int] = {}
        self._done = 0  # n-grams ending before this position are indexed

    def propose(self, tokens: Sequence[int], k: int) -> tuple[list[int], object]:
        """(up to k tokens continuing `tokens`, the n-gram length that matched) or ([], None).
        `tokens` must extend the list of the previous call."""
        end = len(tokens)
        for i in range(self._done, end - 1):  # index n-grams ending at i (not the suffix itself)
            for n in range(self.n_min, min(self.n_max, i + 1) + 1):
                self._index[tuple(tokens[i + 1 - n:i + 1])] = i + 1
        self._done = max(self._done, end - 1)
        for n in range(min(self.n_max, end), self.n_min - 1, -1):
            at = self._index.get(tuple(tokens[end - n:]))
            if at is not None:
                return list(tokens[at:at + k]), n
        return [], None

    def prepare(self, prompt: Sequence[int]) -> None:
        pass

    def close(self) -> None:
        pass


class ModelDrafter:
    """Greedy drafts from a smaller model with the same vocabulary, on its own KV cache (taken
    for each proposal, so several streams can share a draft model; prefix reuse makes a call
    compute only the tokens new since that cache last held this sequence)."""

    explores = True  # drafting costs: when it does not pay, probe now and then (DraftLength)

    def __init__(self, engine: Engine, n_vocab: int):
        self.engine, self.n_vocab = engine, n_vocab

    def propose(self, tokens: Sequence[int], k: int) -> tuple[list[int], object]:
        m = self.engine
        if k <= 0 or len(tokens) + k - 1 > m.n_ctx:
            return [], None
        out = []
        with m.hold() as lease:
            logits = lease.prefill(tokens)
            while True:
                t = int(logits.argmax())
                if t >= self.n_vocab:  # a padding row of the draft's embeddings: not a target token
                    break
                out.append(t)
                if len(out) == k:
                    break
                logits = lease.decode_step(t)
        return out, "model"

    def prepare(self, prompt: Sequence[int]) -> None:
        """Read the prompt into the draft model's cache now, as part of the prompt's cost."""
        if len(prompt) <= self.engine.n_ctx:
            with self.engine.hold() as lease:
                lease.prefill(prompt)

    def close(self) -> None:
        pass


def check_vocab(target: Engine, draft: Engine) -> None:
    """Raise QwenCpuError unless the draft model's tokens are the target's: the same token texts
    for the ids both have (the embedding rows may be padded: at most 128 apart, as llama.cpp allows),
    the same end-of-generation tokens."""
    name = f"draft model {draft.path.name}"
    nt, nd = target.config.n_vocab, draft.config.n_vocab
    if abs(nt - nd) > 128:
        raise QwenCpuError(f"{name}: vocabulary of {nd} tokens, the model's has {nt}: not the same vocabulary")
    has_t, has_d = "tokenizer.ggml.tokens" in target.metadata, "tokenizer.ggml.tokens" in draft.metadata
    if has_t != has_d:
        raise QwenCpuError(f"{name}: only one of the two files has a vocabulary: cannot check they are the same")
    if not has_t:
        return
    a, b = target.tokenizer, draft.tokenizer
    n = min(a.vocab_size, b.vocab_size)
    for i in range(n):
        if a.id_to_token(i) != b.id_to_token(i):
            raise QwenCpuError(f"{name}: token {i} is {b.id_to_token(i)!r}, the model's is {a.id_to_token(i)!r}: "
                               "a draft model must have the same vocabulary")
    if a.eos_ids != b.eos_ids:
        raise QwenCpuError(f"{name}: end-of-generation tokens {sorted(b.eos_ids)}, the model's are {sorted(a.eos_ids)}")


def drafter(model: Engine, draft) -> Lookup | ModelDrafter | None:
    """The drafter of a `draft` option: None (no drafting), "lookup", a GGUF path / Hugging Face
    reference, or a loaded Model (another object than `model`). A path is loaded once per model
    and kept (closed with it)."""
    if draft is None:
        return None
    if isinstance(draft, str) and draft == "lookup":
        return Lookup()
    if isinstance(draft, (str, os.PathLike)):
        draft = _loaded_draft(model, draft)
    if not isinstance(draft, Engine):
        raise QwenCpuError(f"draft must be 'lookup', a model path or a loaded Model, got {type(draft).__name__}")
    if draft is model:
        raise QwenCpuError("draft: a model cannot draft for itself (its cache holds the answer being checked); "
                           "load the file a second time")
    if draft._net is None:
        raise QwenCpuError("draft: the draft model has been closed")
    checked = getattr(model, "_draft_checked", None)
    if checked is None or checked() is not draft:
        check_vocab(model, draft)
        import weakref

        model._draft_checked = weakref.ref(draft)
    return ModelDrafter(draft, model.config.n_vocab)


def _loaded_draft(model: Engine, path) -> Engine:
    from .hub import resolve_model

    resolved = str(resolve_model(path))
    cached = getattr(model, "_draft_model", None)
    if cached is not None and cached[0] == resolved and cached[1]._net is not None:
        return cached[1]
    if cached is not None:
        cached[1].close()
    draft = type(model).load(resolved, n_ctx=model.n_ctx, n_threads=model.threads)
    model._draft_model = (resolved, draft)
    return draft


class DraftLength:
    """How many drafted tokens to check: the k in 0..available that maximises the expected tokens
    per second, (1 + a + a^2 + ... + a^k) / (t1 + k * (dt + td)), with a the running acceptance
    rate of a drafted token (given the ones before it were accepted) for this kind of draft, t1 the
    seconds of a decode step, dt those of each extra verified row, td a drafted token's cost."""

    def __init__(self, explores: bool):
        self.acc: dict = {}
        self.t1: float | None = None
        self.dt: float | None = None
        self.td = 0.0
        self.explores, self._skipped, self._probe = explores, 0, _PROBE

    def choose(self, key, available: int) -> int:
        if available <= 0 or self.t1 is None:
            return 0
        if self.dt is None:
            return 1  # the first check: one token, to time an extra row
        a = self.acc.get(key, 0.6)
        best_k, best, gain, p = 0, _MARGIN / self.t1, 1.0, 1.0
        for k in range(1, available + 1):
            p *= a
            gain += p
            rate = gain / (self.t1 + k * (self.dt + self.td))
            if rate > best:
                best_k, best = k, rate
        ideal = (1 + available) / (self.t1 + available * (self.dt + self.td))  # every draft accepted
        if best_k == 0 and self.explores and ideal * self.t1 > _MARGIN:  # (else no acceptance could pay)
            self._skipped += 1
            if self._skipped >= self._probe:  # the estimate only moves when drafts are checked
                self._skipped, best_k = 0, 1
        return best_k

    def accepted(self, key, checked: int, ok: int) -> None:
        if self.explores and checked:  # probe less often while probes fail
            self._probe = _PROBE if ok else min(self._probe * 2, 256)
        a = self.acc.get(key, 0.6)
        for i in range(checked):
            a += _ALPHA * ((1.0 if i < ok else 0.0) - a)
        self.acc[key] = a

    def decode_time(self, seconds: float) -> None:
        self.t1 = seconds if self.t1 is None else self.t1 + _ALPHA * (seconds - self.t1)

    def verify_time(self, rows: int, seconds: float) -> None:
        if self.t1 is not None and rows > 1:
            per_row = max(seconds - self.t1, 0.0) / (rows - 1)
            self.dt = per_row if self.dt is None else self.dt + _ALPHA * (per_row - self.dt)

    def draft_time(self, tokens: int, seconds: float) -> None:
        if tokens > 0:
            self.td += _ALPHA * (seconds / tokens - self.td) if self.td else seconds / tokens


def stream(model, gen, draft, forced_prefill_min: int) -> Iterator:
    """generate._stream with drafting: the same Responses (see the module docstring), the
    Generation's draft counters updated. draft: a Lookup or ModelDrafter (closed at the end)."""
    length = DraftLength(draft.explores)
    final, pending = None, []  # pending: tokens pushed (sampled or forced) but not yet in the cache
    unchecked = None  # (key, token) of a lookup proposal not verified: checked against the next token
    try:
        if not gen.done:
            with model.hold() as lease:
                before, t0 = model.n_evaluated, time.perf_counter()
                logits = lease.prefill(gen.prompt_ids)
                draft.prepare(gen.prompt_ids)
                gen.prompt_done(model.n_evaluated - before, time.perf_counter() - t0)
                while final is None:
                    if not pending:
                        pending = [gen.sample(logits)]
                        pending += gen.forced_tokens(model.n_ctx - model.n_past - 1)
                        if unchecked is not None:
                            length.accepted(unchecked[0], 1, int(pending[0] == unchecked[1]))
                            unchecked = None
                        for token in pending:
                            responses = gen.push(token)
                            if gen.done:
                                final = responses.pop()
                            yield from responses
                            if final is not None:
                                break
                        if final is not None:
                            break
                    if model.n_past + len(pending) > model.n_ctx:  # full: as plain decoding
                        kept = gen.context_shift(lease.slot_tokens(0) + pending)
                        if kept is None or len(kept) > model.n_ctx:
                            final = gen.finish("length")
                        else:
                            logits = lease.prefill(kept)
                        pending = []
                        continue
                    if len(pending) >= forced_prefill_min:
                        logits, pending = lease.prefill(lease.slot_tokens(0) + pending), []
                        continue
                    room = model.n_ctx - model.n_past - len(pending)
                    if gen.max_tokens is not None:
                        room = min(room, gen.max_tokens - gen.n_gen - 1)
                    drafts, key, t0 = [], None, time.perf_counter()
                    if room > 0 and length.t1 is not None:
                        want = min(K_MAX, room)
                        if isinstance(draft, Lookup):
                            proposal, key = draft.propose(gen.history, want)
                            drafts = proposal[:length.choose(key, len(proposal))]
                            if proposal and not drafts:
                                unchecked = (key, proposal[0])
                        else:
                            k = length.choose("model", want)
                            if k:
                                drafts, key = draft.propose(lease.slot_tokens(0) + pending, k)
                                length.draft_time(len(drafts), time.perf_counter() - t0)
                    if not drafts:
                        t0 = time.perf_counter()
                        for token in pending:
                            logits = lease.decode_step(token)
                        if len(pending) == 1:
                            length.decode_time(time.perf_counter() - t0)
                        pending = []
                        continue
                    base, t0 = model.n_past, time.perf_counter()
                    rows = lease.verify(pending + drafts)
                    if len(pending) == 1:
                        length.verify_time(1 + len(drafts), time.perf_counter() - t0)
                    first, ok = len(pending) - 1, 0
                    for i in range(len(drafts) + 1):
                        r = first + i
                        new = [gen.sample(rows[r])]
                        new += gen.forced_tokens(model.n_ctx - (base + r + 1) - 1)
                        accept = i < len(drafts) and new == [drafts[i]]
                        ok += accept
                        if i < len(drafts):  # counted before the push: a final Response includes this pass
                            gen.draft_checked += 1
                            gen.draft_accepted += accept
                        for token in new:
                            responses = gen.push(token)
                            if gen.done:
                                final = responses.pop()
                            yield from responses
                            if final is not None:
                                break
                        if accept and final is None:
                            continue
                        lease.rollback(base + r + 1)  # keep the rows whose tokens stand
                        pending = new
                        break
                    length.accepted(key, min(i + 1, len(drafts)), ok)
    finally:
        draft.close()
    yield final if final is not None else gen.finish(gen.finish_reason)
