"""Needle in a haystack on the real SmolLM2 model (trained for 8K positions), issue #17: three facts
at depths 10%, 50% and 90% of a ~7K-token filler, each retrieved by greedy decoding, with each KV
cache type. The haystack and questions are bench/needle.py's (its docstring says why this form);
one ~7K-token prefill per cache type serves the three depths (the questions reuse the cached
haystack), which is most of this file's time."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import needle  # noqa: E402

from qwen_cpu import Model  # noqa: E402


@pytest.mark.parametrize("kv_type", ["f16", "q8_0", "q4_0"])
def test_facts_at_three_depths_of_7k_tokens_are_retrieved(smollm2_path, kv_type):
    with Model.load(smollm2_path, n_ctx=needle.N_CTX, n_threads=2, kv_type=kv_type) as m:
        text = needle.haystack(m.tokenize, 7000)
        answers = [needle.ask(m, text, n) for n in needle.NEEDLES]
        assert m.n_past > 7000
    # Retrieved: the answer holds the word's first 6 letters, which occur nowhere else in the prompt.
    # The q4_0 cache is at this 135M model's limit: with plain rows it missed one fact in each of two
    # runs, not the same one ("PINEAPP" for PINEAPPLE at 10%, "Anna." for the cat at 50%); with rows
    # Hadamard-rotated (csrc/hadamard.h) it found all three in the one run since ("PINEAPPELE."), so
    # it must still find two.
    found = [n.word[:6] in answer.upper() for n, answer in zip(needle.NEEDLES, answers)]
    assert sum(found) >= (2 if kv_type == "q4_0" else 3), (kv_type, answers)
