"""The scheduler (continuous batching over a lease's forward_runs) and the batch entry points, on the
real SmolLM2-135M-Instruct and on the Qwen2.5-shaped random model: requests run together give the
tokens they give one at a time through Model.stream; queue, cancellation, close, prefix reuse,
embeddings and logprobs."""

import asyncio
import threading
import time

import numpy as np
import pytest

from qwen_cpu import Model, QwenCpuError
from qwen_cpu.chat import encode_chat
from qwen_cpu.generate import sampling_params, stream
from qwen_cpu.sampler import log_softmax
from qwen_cpu.scheduler import QueueFull, Request, Scheduler

QUESTIONS = ["What is the capital of France? Answer in one sentence.", "Name three colours.", "What is 2 + 2?", "Say hello in Spanish.",
             "What do bees make?", "Name a planet.", "What is water made of?", "Who wrote Hamlet?"]
GREEDY = sampling_params(temperature=0)


@pytest.fixture(scope="module")
def smol(smollm2_path):
    with Model.load(smollm2_path, n_ctx=512, n_seq=4) as m:
        yield m


def chat_ids(m, question):
    return encode_chat(m.tokenizer, [{"role": "user", "content": question}])


def one_at_a_time(m, prompts, max_tokens, **kw):
    """(token ids, text, finish reason) per prompt through generate.stream, from an empty cache."""
    out = []
    for ids in prompts:
        m.reset()
        rs = list(stream(m, ids, max_tokens=max_tokens, params=GREEDY, **kw))
        out.append(([r.token for r in rs if r.token is not None], "".join(r.text for r in rs), rs[-1].finish_reason))
    return out


def together(m, prompts, max_tokens, n_seq=None, **kw):
    with Scheduler(m) as s:
        handles = [s.submit(Request(prompt_ids=ids, max_tokens=max_tokens, params=GREEDY, **kw)) for ids in prompts]
        out = []
        for h in handles:
            rs = list(h)
            out.append(([r.token for r in rs if r.token is not None], "".join(r.text for r in rs), rs[-1].finish_reason))
        assert s.stats()["slots_busy"] == 0
    return out


def test_eight_requests_on_four_slots_equal_one_at_a_time(smol):
    """8 requests on 4 slots: the later ones are admitted (their prompts read) beside the running
    decodes. Decode rows go through the one-row kernels and prompt rows through the prefill kernels
    either way, so the greedy tokens agree exactly (README: Serving several requests)."""
    prompts = [chat_ids(smol, q) for q in QUESTIONS]
    ref = one_at_a_time(smol, prompts, 24)
    got = together(smol, prompts, 24)
    assert got == ref
    assert any(finish == "stop" for _, _, finish in got) and "Paris" in got[0][1]


def test_requests_together_on_the_qwen_shaped_model(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=128, n_seq=3) as m:
        prompts = [m.tokenize(t) for t in ["Hello there", "The quick brown fox", "1 2 3", "def main():", "Paris is"]]
        ref = one_at_a_time(m, prompts, 12, stop_tokens=[])
        got = together(m, prompts, 12, stop_tokens=[])
        assert got == ref and all(len(toks) == 12 and f == "length" for toks, _, f in got)


def test_generate_and_embed_batch(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=128, n_seq=2) as m:
        prompts = ["Hello there", "The quick brown fox", "1 2 3"]
        ref = [m.generate(p, max_tokens=8, temperature=0) for p in prompts]
        got = m.generate_batch(prompts, max_tokens=8, temperature=0)
        assert [r.text for r in got] == ref and all(r.finish_reason for r in got)
        vectors = m.embed_batch(prompts + [[1, 2, 3]])
        assert vectors.shape == (4, m.config.n_embd)
        for v, p in zip(vectors, prompts + [[1, 2, 3]]):
            np.testing.assert_allclose(v, m.embed(p), rtol=0, atol=1e-6)


def test_cancel_frees_the_slot(smol):
    with Scheduler(smol) as s:
        ids = chat_ids(smol, "Tell me a long story about a dragon.")
        handles = [s.submit(Request(prompt_ids=ids, max_tokens=400, params=GREEDY, stop_tokens=[])) for _ in range(4)]
        first = iter(handles[0])
        next(first), next(first)
        assert s.stats()["slots_busy"] == 4
        handles[0].cancel()
        rest = list(first)
        assert rest[-1].finish_reason == "cancelled" and len(rest) < 50
        # the freed slot takes a new request while the other three still run
        r = s.submit(Request(prompt_ids=chat_ids(smol, "What is 2 + 2?"), max_tokens=8, params=GREEDY)).result()
        assert r.finish_reason in ("stop", "length") and r.text
        stats = s.stats()
        assert stats["slots_busy"] == 3 and stats["requests_cancelled"] == 1
        for h in handles[1:]:
            h.cancel()
        assert all(list(h)[-1].finish_reason == "cancelled" for h in handles[1:])
        assert s.stats()["slots_busy"] == 0


def test_queue_full_and_a_queued_request_cancelled(smol):
    ids = chat_ids(smol, "Count to one hundred.")
    with Scheduler(smol, max_queue=2) as s:
        running, streams = [], []  # (an iterator dropped before the end would cancel its request)
        for _ in range(4):  # one at a time: the queue holds 2
            running.append(s.submit(Request(prompt_ids=ids, max_tokens=400, params=GREEDY, stop_tokens=[])))
            streams.append(iter(running[-1]))
            next(streams[-1])
        assert s.stats()["slots_busy"] == 4
        queued = [s.submit(Request(prompt_ids=ids, max_tokens=4, params=GREEDY)) for _ in range(2)]
        assert s.stats()["queue_depth"] == 2
        with pytest.raises(QueueFull, match=r"queue is full \(2 waiting\)"):
            s.submit(Request(prompt_ids=ids, max_tokens=4))
        queued[0].cancel()
        rs = list(queued[0])
        assert [r.finish_reason for r in rs] == ["cancelled"] and rs[0].generation_tokens == 0
        for h in running:
            h.cancel()
        assert all(list(it)[-1].finish_reason == "cancelled" for it in streams)
        assert queued[1].result().generation_tokens == 4


def test_close_ends_running_and_queued_streams(smol):
    s = Scheduler(smol, max_queue=8)
    ids = chat_ids(smol, "Tell me a long story.")
    handles = [s.submit(Request(prompt_ids=ids, max_tokens=400, params=GREEDY, stop_tokens=[])) for _ in range(6)]
    first = iter(handles[0])
    next(first)
    with pytest.raises(QwenCpuError, match="belong to a Scheduler"):
        smol.generate("Hello", max_tokens=2)
    s.close()
    assert list(first)[-1].finish_reason == "cancelled"
    assert all(list(h)[-1].finish_reason == "cancelled" for h in handles[1:])
    with pytest.raises(QwenCpuError, match="closed"):
        s.submit(Request(prompt_ids=ids))
    assert smol.generate("Hello", max_tokens=2, temperature=0)  # the model is free again


def test_follow_up_turn_reuses_its_slot_and_a_busy_slot_shares_its_prefix(smol):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with Scheduler(smol) as s:
        first = s.submit(Request(prompt_ids=encode_chat(smol.tokenizer, messages), max_tokens=32, params=GREEDY)).result()
        follow = messages + [{"role": "assistant", "content": first.text},
                             {"role": "user", "content": "And of Italy?"}]
        ids = encode_chat(smol.tokenizer, follow)
        before = s.stats()["prompt_tokens_cached_total"]
        r = s.submit(Request(prompt_ids=ids, max_tokens=8, params=GREEDY)).result()
        assert r.prompt_tokens == len(ids) and r.prompt_cached >= first.prompt_tokens + first.generation_tokens - 2
        assert r.prompt_tokens - r.prompt_cached < 20  # only the new turn was computed
        assert s.stats()["prompt_tokens_cached_total"] - before == r.prompt_cached
        # a long prompt running in one slot: a request extending it starts from a copy of its cache
        base = smol.tokenize("Once upon a time " * 40)
        long = s.submit(Request(prompt_ids=base, max_tokens=300, params=GREEDY, stop_tokens=[]))
        long_stream = iter(long)
        next(long_stream)
        other = s.submit(Request(prompt_ids=base + smol.tokenize(" there was"), max_tokens=2, params=GREEDY)).result()
        assert other.prompt_cached >= len(base)
        long.cancel()


def test_long_prompt_is_read_in_chunks_while_others_stream(smol):
    stamps = {"a": [], "b": []}

    def consume(h, key):
        for r in h:
            stamps[key].append(time.perf_counter())

    with Scheduler(smol, prompt_chunk=16) as s:
        a = s.submit(Request(prompt_ids=chat_ids(smol, "Tell me a story."), max_tokens=200, params=GREEDY,
                             stop_tokens=[]))
        ta = threading.Thread(target=consume, args=(a, "a"))
        ta.start()
        while len(stamps["a"]) < 2:
            time.sleep(0.01)
        b = s.submit(Request(prompt_ids=smol.tokenize("word " * 150), max_tokens=2, params=GREEDY))
        consume(b, "b")
        a.cancel()
        ta.join()
    # b's 150 prompt tokens took >= 9 steps of 16, each also giving a a token
    assert sum(1 for t in stamps["a"] if t < stamps["b"][0]) >= 2 + 8


def test_logprobs_are_the_model_distribution(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=64, n_seq=2) as m:
        ids = m.tokenize("The quick brown fox")
        with Scheduler(m) as s:
            rs = list(s.submit(Request(prompt_ids=ids, max_tokens=5, params=GREEDY, logprobs=3, stop_tokens=[])))
        tokens = [r.token for r in rs if r.token is not None]
        ref = m.logits(ids + tokens[:-1])[len(ids) - 1:]
        for r, row in zip(rs, ref):
            lp = log_softmax(row)
            assert abs(r.logprob - lp[r.token]) < 1e-4
            assert [t for t, _ in r.top_logprobs] == list(np.argsort(-lp)[:3])
            assert r.top_logprobs[0][0] == r.token  # greedy
        plain = m.stream(ids, max_tokens=2, temperature=0)
        assert all(r.logprob is None and r.top_logprobs is None for r in plain)


def test_a_failing_sample_ends_its_request_alone(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=64, n_seq=2) as m:
        ids = m.tokenize("Hello there")
        ban_all = sampling_params(temperature=0.8, logit_bias={t: -np.inf for t in range(m.config.n_vocab)})
        with Scheduler(m) as s:
            alone = [r.token for r in s.submit(Request(prompt_ids=ids, max_tokens=6, params=GREEDY, stop_tokens=[]))]
            good = s.submit(Request(prompt_ids=ids, max_tokens=6, params=GREEDY, stop_tokens=[]))
            bad = s.submit(Request(prompt_ids=ids, max_tokens=6, params=ban_all))
            with pytest.raises(QwenCpuError, match="every token was removed"):
                list(bad)
            assert [r.token for r in good] == alone  # the request beside it is untouched
            assert [r.token for r in s.submit(Request(prompt_ids=ids, max_tokens=6, params=GREEDY,
                                                      stop_tokens=[]))] == alone


def test_async_iteration(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=64, n_seq=2) as m:
        ids = m.tokenize("Hello there")
        with Scheduler(m) as s:
            sync = [r.token for r in s.submit(Request(prompt_ids=ids, max_tokens=6, params=GREEDY, stop_tokens=[]))]

            async def collect():
                hs = [s.submit(Request(prompt_ids=ids, max_tokens=6, params=GREEDY, stop_tokens=[])) for _ in range(2)]
                return await asyncio.gather(*[_tokens(h) for h in hs])

            assert asyncio.run(collect()) == [sync, sync]
            assert s.embed(ids).shape == (m.config.n_embd,)


async def _tokens(h):
    return [r.token async for r in h.aiter()]


def test_bad_requests_are_clear_errors(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=16, n_seq=1) as m:
        with Scheduler(m) as s:
            for ids, message in [([], "prompt token ids must not be empty"),
                                 ([1, 2, 10**7], r"prompt token ids\[2\] = 10000000 is outside the vocabulary"),
                                 (list(range(16)), "context holds 16"), ([1.5], r"\[0\] must be an integer")]:
                with pytest.raises(QwenCpuError, match=message):
                    s.submit(Request(prompt_ids=ids))
            with pytest.raises(QwenCpuError, match="logprobs must be an integer in 0..20"):
                s.submit(Request(prompt_ids=[1], logprobs=21))
            with pytest.raises(QwenCpuError, match="unknown pooling"):
                s.embed([1], pooling="max")
            with pytest.raises(QwenCpuError, match="belong to a Scheduler"):
                Scheduler(m)
        with pytest.raises(QwenCpuError, match="n_seq"):
            Model.load(tiny_qwen_gguf, n_seq=0)
