"""Book-keeping of what the KV cache holds: the token ids at positions 0 .. n_past-1.

The cache itself (per layer (n_kv_head, n_ctx) rows of its K and V types) lives in the C++ model; this
object decides which positions a new request can reuse, so that a chat turn, or a prompt that
shares a prefix with the previous one, only computes its new tokens.
"""

from __future__ import annotations

from typing import Sequence


class KVCache:
    def __init__(self, n_ctx: int):
        self.n_ctx = n_ctx
        self.tokens: list[int] = []  # token at each cached position

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def reusable_prefix(self, ids: Sequence[int]) -> int:
        """How many leading ids are already cached. At most len(ids) - 1: the last prompt token
        is always recomputed, because its logits are needed and are not cached."""
        n = 0
        limit = min(len(self.tokens), len(ids) - 1)
        while n < limit and self.tokens[n] == ids[n]:
            n += 1
        return n

    def truncate(self, n: int) -> None:
        """Forget positions n and above (their slots are overwritten by the next tokens)."""
        del self.tokens[n:]

    def append(self, ids: Sequence[int]) -> None:
        self.tokens.extend(int(i) for i in ids)

    def clear(self) -> None:
        self.tokens.clear()
