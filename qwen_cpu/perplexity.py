"""Perplexity of a model on a text, and KL divergence against a reference model's predictions.

Strided evaluation, as llama.cpp's perplexity tool and the HF guide do it: windows of n_ctx
tokens start every `stride` tokens; each window scores only the tokens the previous window did not
(the first window scores all but its first token), so every scored token sees at least
n_ctx - stride tokens of context (except near the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .errors import QwenCpuError
from .sampler import log_softmax


@dataclass
class PerplexityResult:
    perplexity: float
    n_scored: int  # tokens whose probability was scored
    mean_nll: float  # nats per token
    kl_mean: float | None = None  # mean KL(reference || model) per token, nats
    kl_max: float | None = None
    top1_agreement: float | None = None  # share of positions where both models' argmax agree


def windows(n_tokens: int, n_ctx: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(start, end, first_scored) of each window: tokens [start, end) are run and the predictions
    of tokens first_scored .. end-1 are scored (each token is scored exactly once)."""
    if n_ctx < 2 or not 0 < stride <= n_ctx:
        raise QwenCpuError(f"need n_ctx >= 2 and 0 < stride <= n_ctx (got n_ctx={n_ctx}, stride={stride})")
    scored_up_to = 1  # token 0 has no prediction
    start = 0
    while scored_up_to < n_tokens:
        end = min(start + n_ctx, n_tokens)
        yield start, end, scored_up_to
        scored_up_to = end
        start = max(0, min(start + stride, n_tokens - n_ctx))
        if end == n_tokens:
            break


def perplexity(model, ids: Sequence[int], n_ctx: int, stride: int, reference=None) -> PerplexityResult:
    """Perplexity of `ids` under `model`; with `reference` (another Model with the same vocabulary)
    also the KL divergence of the model's next-token distributions from the reference's."""
    ids = list(ids)
    if len(ids) < 2:
        raise QwenCpuError("the text must hold at least 2 tokens")
    if n_ctx > model.n_ctx:
        raise QwenCpuError(f"window of {n_ctx} tokens exceeds the model's context of {model.n_ctx}")
    if reference is not None:
        if reference.config.n_vocab != model.config.n_vocab:
            raise QwenCpuError(f"the reference model has a vocabulary of {reference.config.n_vocab} tokens, "
                               f"this model {model.config.n_vocab}: KL divergence needs the same vocabulary")
        if n_ctx > reference.n_ctx:
            raise QwenCpuError(f"window of {n_ctx} tokens exceeds the reference model's context of {reference.n_ctx}")
    nll, n, kls, agree = 0.0, 0, [], 0
    for start, end, first in windows(len(ids), n_ctx, stride):
        window = ids[start:end]
        logp = log_softmax(model.logits(window))  # row i predicts token start + i + 1
        rows = np.arange(first - 1 - start, end - 1 - start)
        targets = np.asarray(ids[first:end])
        nll -= float(logp[rows, targets].sum())
        n += len(rows)
        if reference is not None:
            ref = log_softmax(reference.logits(window))[rows]
            ours = logp[rows]
            kls.append((np.exp(ref) * (ref - ours)).sum(axis=-1))
            agree += int((ref.argmax(-1) == ours.argmax(-1)).sum())
    mean = nll / n
    out = PerplexityResult(perplexity=math.exp(mean), n_scored=n, mean_nll=mean)
    if reference is not None:
        kl = np.concatenate(kls)
        out.kl_mean, out.kl_max, out.top1_agreement = float(kl.mean()), float(kl.max()), agree / n
    return out
