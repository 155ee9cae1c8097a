"""Offline batch work without HTTP: a list of prompts through one Scheduler, as many at a time as
the model has cache slots (`Model.load(..., n_seq=N)`).

    with Model.load(path, n_seq=4) as m:
        for r in m.generate_batch(["Once upon a time", "def fib(n):"], max_tokens=64, temperature=0):
            print(r.text, r.finish_reason)
        vectors = m.embed_batch(["a sentence", "another one"])     # (2, n_embd)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .generate import Response, sampling_params
from .scheduler import Request, Scheduler


def _prompt_ids(model, prompt) -> list[int]:
    """A prompt as token ids: a string (plain completion, BOS where the vocabulary asks for it),
    a list of chat messages (the file's chat template), or token ids."""
    if isinstance(prompt, str):
        return model.tokenize(prompt, add_special=True)
    if prompt and all(isinstance(m, dict) for m in prompt):
        from .chat import encode_chat

        return encode_chat(model.tokenizer, prompt)
    return list(prompt)


def generate_batch(model, prompts: Sequence, max_tokens: int = 256, stop: Sequence[str] = (),
                   logprobs: int | None = None, **sampling: Any) -> list[Response]:
    """One Response per prompt, in order, with the whole text and the finish reason. sampling:
    SamplingParams fields over the model's defaults, the same for every prompt (a seed too: identical prompts then sample
    identically)."""
    params = sampling_params(model, **sampling)
    requests = [Request(prompt_ids=_prompt_ids(model, p), max_tokens=max_tokens, params=params, stop=stop,
                        logprobs=logprobs) for p in prompts]
    with Scheduler(model, max_queue=max(len(requests), 1)) as s:
        handles = [s.submit(r) for r in requests]
        return [h.result() for h in handles]


def embed_batch(model, texts: Sequence, pooling: str = "mean") -> np.ndarray:
    """Embeddings (len(texts), n_embd) float32 of strings or token-id lists (Model.embed's each)."""
    ids = [model.tokenize(t) if isinstance(t, str) else list(t) for t in texts]
    with Scheduler(model, max_queue=max(len(ids), 1)) as s:
        futures = [s.embed_async(i, pooling) for i in ids]
        return np.stack([f.result() for f in futures]) if futures else np.zeros((0, model.config.n_embd), np.float32)
