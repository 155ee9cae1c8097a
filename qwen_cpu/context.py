"""What happens when a conversation or a generation fills the context (n_ctx positions).

The policy (on by default; `context_shift=False`, CLI `--no-context-shift`, keeps the old
behaviour: a chat turn that does not fit is an error, a generation ends with "length"):

- before a chat turn, `fit_messages` drops the oldest turns (a user message with the replies that
  follow it), never the system prompt nor the newest user message, until the prompt leaves a
  quarter of the context for the answer;
- while an answer is generated and the cache is full, the stream asks its `Shift` for the tokens
  to continue from: `ChatShift` drops the oldest turn again and keeps the answer so far (when no
  turn is left to drop, the older half of the answer goes); `KeepStart` (plain prompts) keeps the
  first n_keep tokens and the newer half of the rest.

Exactness: the tokens kept are computed again at their new positions (the unchanged beginning,
the system prompt, comes from the cache through prefix reuse), so after a shift the model is
exactly where a fresh run over the kept tokens would be (tests/test_context.py compares the logits
with `Model.logits` of the kept tokens). Rotating the cached keys by the shift instead would skip
that computation but is not exact: the kept keys and values were computed attending to the
dropped tokens, and rotating f16 keys rounds them a second time. The cost: one prefill of at most
the kept tokens per shift, i.e. about half a context per half a context of new tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .errors import QwenCpuError

Encode = Callable[[list], list]  # chat messages -> prompt token ids


def drop_oldest_turn(messages: Sequence[dict]) -> list | None:
    """messages without their oldest turn (the oldest user message and everything up to the next
    user message), or None when only the newest turn is left."""
    users = [i for i, msg in enumerate(messages) if msg.get("role") == "user"]
    if len(users) < 2:
        return None
    return list(messages[:users[0]]) + list(messages[users[1]:])


def fit_messages(encode: Encode, messages: Sequence[dict], n_ctx: int) -> tuple[list, list[int]]:
    """(messages kept, their prompt ids): the oldest turns dropped until the prompt takes at most
    3/4 of n_ctx. Raises QwenCpuError when even the system prompt and the newest turn do not fit
    in n_ctx - 1 positions (one is needed for the answer)."""
    kept = list(messages)
    ids = encode(kept)
    while len(ids) > n_ctx - n_ctx // 4:
        fewer = drop_oldest_turn(kept)
        if fewer is None:
            break
        kept, ids = fewer, encode(fewer)
    if len(ids) >= n_ctx:
        raise QwenCpuError(f"the system prompt and the newest message take {len(ids)} tokens but the context "
                           f"holds {n_ctx} (n_ctx), leaving no room to answer")
    return kept, ids


class KeepStart:
    """The shift of a plain prompt: keep the first n_keep tokens (e.g. BOS, or an instruction) and
    the newer half of the others."""

    def __init__(self, n_keep: int = 0):
        self.n_keep = n_keep
        self.shifts = 0

    def __call__(self, tokens: list[int]) -> list[int] | None:
        """The tokens to continue from (ending with tokens[-1]), or None when nothing can go."""
        rest = len(tokens) - self.n_keep
        if rest < 2:
            return None
        self.shifts += 1
        return tokens[:self.n_keep] + tokens[self.n_keep + rest // 2:]


class ChatShift:
    """The shift of a chat answer: `messages` (the conversation whose rendering `prompt` the
    answer continues) loses its oldest turn; the answer so far is kept. `messages` and `prompt`
    follow the shifts, so the caller can carry on with the shortened conversation."""

    def __init__(self, encode: Encode, messages: Sequence[dict], prompt: Sequence[int]):
        self.encode, self.messages, self.prompt = encode, list(messages), list(prompt)
        self.shifts = 0

    def __call__(self, tokens: list[int]) -> list[int] | None:
        """tokens: the cache's tokens and the newest one (the prompt, then the answer so far);
        returns the tokens to continue from, or None when nothing can go."""
        answer = tokens[len(self.prompt):]
        fewer = drop_oldest_turn(self.messages)
        if fewer is not None:
            prompt = self.encode(fewer)
            if len(prompt) + len(answer) < len(tokens):
                self.messages, self.prompt = fewer, prompt
                self.shifts += 1
                return prompt + answer
        kept = KeepStart(len(self.prompt))(tokens)  # no turn left: the older half of the answer goes
        if kept is not None:
            self.shifts += 1
        return kept
