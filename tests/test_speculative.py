"""Speculative decoding (qwen_cpu.speculative): prompt-lookup proposals, verification rows equal to
decode steps bit for bit, the cache rolled back, outputs equal to plain decoding token for token
(greedy, seeded, constrained, with stop strings and a context shift), clear errors for a draft
model of another vocabulary, and the CLI flag."""

import json
import subprocess
import sys

import numpy as np
import pytest

from _helpers import CWD, PYTHONPATH
from qwen_cpu import Model
from qwen_cpu.errors import QwenCpuError
from qwen_cpu.generate import collect
from qwen_cpu.speculative import DraftLength, Lookup

REPEAT = ("Repeat this text exactly.\n\nThe cache keeps the tokens of every position. A new prompt reuses "
          "the longest prefix it shares with them, so only the new tokens are computed.\n\nRepeated:\n"
          "The cache keeps the tokens")
PROMPTS = [REPEAT, "Once upon a time", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib("]


# ---- lookup proposals -----------------------------------------------------------------------------
def test_lookup_proposes_the_continuation_of_the_longest_latest_match():
    lk = Lookup(n_max=3, n_min=1)
    #          0  1  2  3  4  5  6  7  8  9
    tokens = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3]
    # suffix (1, 2, 3) occurred at 0..2: continuation 4, 5, 9 (beats the later 2-gram (2, 3) -> 7)
    assert lk.propose(tokens, 3) == ([4, 5, 9], 3)
    lk2 = Lookup(n_max=3, n_min=1)
    assert lk2.propose([5, 2, 3, 7, 6, 2, 3], 2) == ([7, 6], 2)  # only (2, 3) matches
    assert Lookup().propose([1, 2, 3, 4], 4) == ([], None)      # nothing repeats
    assert Lookup(n_min=1).propose([7, 1, 7], 2) == ([1, 7], 1)  # may run into the suffix itself


def test_lookup_latest_occurrence_and_incremental_index_match_a_fresh_one():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, 300).tolist()
    grown = Lookup()
    for end in range(1, len(tokens) + 1):
        got = grown.propose(tokens[:end], 5)
        assert got == Lookup().propose(tokens[:end], 5)
        # the reference: the longest n <= 4 whose latest earlier occurrence exists
        want, seen = ([], None), tokens[:end]
        for n in range(min(4, end), 0, -1):
            suffix = seen[end - n:]
            starts = [i for i in range(end - n) if seen[i:i + n] == suffix]
            if starts:
                at = starts[-1] + n
                want = (seen[at:at + 5], n)
                break
        assert got == want, end


def test_draft_length_drafts_only_when_it_pays():
    d = DraftLength(explores=False)
    assert d.choose("x", 5) == 0  # no decode step timed yet
    d.decode_time(0.010)
    d.verify_time(3, 0.012)        # 1 ms per extra row: cheap
    d.accepted("x", 10, 10)
    assert d.choose("x", 8) == 8
    d.accepted("y", 20, 0)         # never accepted: no draft
    assert d.choose("y", 8) == 0
    d.verify_time(3, 0.030)        # rows as dear as decode steps: not even a good draft pays much
    d.dt = 0.010
    assert d.choose("x", 8) == 0
    # a costly drafter is probed now and then while the estimate is bad, never when nothing could pay
    p = DraftLength(explores=True)
    p.decode_time(0.010)
    p.verify_time(2, 0.011)
    p.accepted("m", 20, 0)
    assert 0 < sum(p.choose("m", 4) for _ in range(100)) < 10
    p.draft_time(1, 0.010)         # a drafted token costs a decode step: no acceptance could pay
    assert sum(p.choose("m", 4) for _ in range(1000)) == 0


@pytest.fixture(params=["adaptive", "always"])
def policy(request, monkeypatch):
    """The draft length as chosen (on a path where verified rows cost about a decode step each,
    hardly any draft pays), or always every proposed token: the drafts then get checked."""
    if request.param == "always":
        monkeypatch.setattr(DraftLength, "choose", lambda self, key, available: available)
    return request.param


# ---- verification and rollback --------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol(smollm2_path):
    with Model.load(smollm2_path, n_ctx=512, n_threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def smol_draft(smollm2_path):
    with Model.load(smollm2_path, n_ctx=512, n_threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def tiny(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=256, n_threads=1) as m:
        yield m


@pytest.mark.parametrize("which", ["smol", "tiny"])
def test_verify_rows_are_decode_steps_and_rollback_forgets_them(which, request):
    m = request.getfixturevalue(which)
    ids = m.tokenize("The quick brown fox jumps over the lazy dog. The quick brown")
    toks = [101, 202, 303, 404, 505]
    with m.hold() as lease:
        lease.prefill(ids)
        steps = [lease.decode_step(t) for t in toks]
        lease.rollback(len(ids))
        rows = lease.verify(toks)
        assert rows.shape == (5, m.config.n_vocab)
        for i in range(5):
            assert np.array_equal(rows[i], steps[i]), i  # bit for bit
        # a rejected draft: roll back past toks[1]; continuing gives the logits of a cache that
        # never held toks[2:]
        lease.rollback(len(ids) + 2)
        assert lease.slot_tokens(0) == ids + toks[:2]
        after = lease.decode_step(999)
    assert np.array_equal(after, lease_free_reference(m, ids + toks[:2] + [999]))
    with pytest.raises(QwenCpuError, match="rollback"):
        with m.hold() as lease:
            lease.rollback(10**6)


def test_verify_rows_are_decode_steps_with_threads_at_depth(smollm2_path):
    """At 2 threads a decode step deep in the context splits each head's keys across the threads
    (from 2 * 512 keys on); a verification row must split its keys the same way, whatever the
    other rows of the pass, or it is not its decode step bit for bit (before: rows 1.. differed by
    up to 0.4 in a logit on this model)."""
    ids = [(i * 7919) % 40000 + 100 for i in range(1900)]
    toks = [101, 202, 303, 404]
    with Model.load(smollm2_path, n_ctx=2048, n_threads=2) as m, m.hold() as lease:
        lease.prefill(ids)
        steps = [lease.decode_step(t) for t in toks]
        lease.rollback(len(ids))
        rows = lease.verify(toks)
    for i in range(len(toks)):
        assert np.array_equal(rows[i], steps[i]), i


def lease_free_reference(m, ids):
    """The last logits of ids through a fresh cache: a prefill of all but the last, one decode step."""
    m.reset()
    with m.hold() as lease:
        lease.prefill(ids[:-1])
        return lease.decode_step(ids[-1])


# ---- the same output as plain decoding ------------------------------------------------------------
def run(m, prompt, **kw):
    m.reset()
    return collect(m.stream(prompt, **kw))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_lookup_greedy_and_seeded_equal_plain_decoding(smol, prompt, policy):
    for kw in (dict(temperature=0), dict(temperature=0.9, top_p=0.95, seed=5, repetition_penalty=1.1)):
        plain = run(smol, prompt, max_tokens=60, **kw)
        spec = run(smol, prompt, max_tokens=60, draft="lookup", **kw)
        assert spec.text == plain.text and spec.generation_tokens == plain.generation_tokens
        assert spec.finish_reason == plain.finish_reason
        assert spec.draft_accepted <= spec.draft_tokens


def test_lookup_accepts_drafts_on_a_copy_task(smol, monkeypatch):
    monkeypatch.setattr(DraftLength, "choose", lambda self, key, available: available)
    out = run(smol, REPEAT, max_tokens=60, temperature=0, draft="lookup")
    assert out.draft_accepted > 10, (out.draft_tokens, out.draft_accepted)


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_draft_model_equals_plain_decoding(smol, smol_draft, prompt, policy):
    plain = run(smol, prompt, max_tokens=40, temperature=0)
    spec = run(smol, prompt, max_tokens=40, temperature=0, draft=smol_draft)
    assert spec.text == plain.text
    if policy == "always":
        assert spec.draft_tokens > 0 and spec.draft_accepted == spec.draft_tokens  # its own twin drafts


def test_tiny_qwen_lookup_and_draft_model(tiny, tiny_qwen_gguf, policy):
    with Model.load(tiny_qwen_gguf, n_ctx=256, n_threads=1) as twin:
        for prompt in ["Hello there, hello there, hello", "1 2 3 4 5 1 2 3"]:
            plain = run(tiny, prompt, max_tokens=50, temperature=0)
            for draft in ("lookup", twin):
                spec = run(tiny, prompt, max_tokens=50, temperature=0, draft=draft)
                assert spec.text == plain.text and spec.generation_tokens == plain.generation_tokens


def test_stop_strings_constraint_and_context_shift(smol, smollm2_path, policy):
    kw = dict(temperature=0, draft="lookup")
    plain = run(smol, REPEAT, max_tokens=60, temperature=0, stop=["prefix"])
    spec = run(smol, REPEAT, max_tokens=60, stop=["prefix"], **kw)
    assert spec.text == plain.text and spec.finish_reason == plain.finish_reason == "stop"
    regex = r"(The cache keeps the tokens of every position\. )+"
    plain = run(smol, REPEAT, max_tokens=40, temperature=0, regex=regex)
    spec = run(smol, REPEAT, max_tokens=40, regex=regex, **kw)
    assert spec.text == plain.text
    with Model.load(smollm2_path, n_ctx=80, n_threads=1) as small:  # the context fills and shifts
        plain = run(small, REPEAT, max_tokens=120, temperature=0)
        spec = run(small, REPEAT, max_tokens=120, **kw)
        assert spec.text == plain.text and spec.generation_tokens == plain.generation_tokens == 120
        # after the answer the cache holds exactly what plain decoding leaves
        run(small, REPEAT, max_tokens=120, temperature=0)
        with small.hold() as lease:
            after_plain = lease.slot_tokens(0)
        run(small, REPEAT, max_tokens=120, **kw)
        with small.hold() as lease:
            assert lease.slot_tokens(0) == after_plain


def test_chat_usage_reports_drafts(smol, policy):
    msgs = [{"role": "user", "content": REPEAT}]
    smol.reset()
    plain = smol.chat(msgs, max_tokens=40, temperature=0)
    smol.reset()
    spec = smol.chat(msgs, max_tokens=40, temperature=0, draft="lookup")
    assert spec["choices"][0]["message"] == plain["choices"][0]["message"]
    assert spec["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]
    if policy == "always":
        details = spec["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] > 0 and details["rejected_prediction_tokens"] >= 0
    # a follow-up turn reuses the cache left by the drafted answer
    msgs2 = msgs + [plain["choices"][0]["message"], {"role": "user", "content": "Again."}]
    smol.reset()
    smol.chat(msgs, max_tokens=40, temperature=0)
    a = smol.chat(msgs2, max_tokens=20, temperature=0)
    smol.reset()
    smol.chat(msgs, max_tokens=40, temperature=0, draft="lookup")
    b = smol.chat(msgs2, max_tokens=20, temperature=0, draft="lookup")
    assert a["choices"][0]["message"] == b["choices"][0]["message"]


# ---- errors -----------------------------------------------------------------------------------------
def test_bad_drafts_are_clear_errors(smol, tiny):
    with pytest.raises(QwenCpuError, match="vocabulary"):
        smol.generate("Hi", max_tokens=4, draft=tiny)
    with pytest.raises(QwenCpuError, match="cannot draft for itself"):
        smol.generate("Hi", max_tokens=4, draft=smol)
    with pytest.raises(QwenCpuError, match="draft must be"):
        smol.generate("Hi", max_tokens=4, draft=3)
    with pytest.raises(QwenCpuError):
        smol.generate("Hi", max_tokens=4, draft="/nonexistent/model.gguf")


# ---- the command line -------------------------------------------------------------------------------
def cli(*args):
    return subprocess.run([sys.executable, "-m", "qwen_cpu.cli", *args], capture_output=True, text=True,
                          cwd=CWD, env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"}, timeout=300)


def test_cli_draft_flag(smollm2_path, tiny_qwen_gguf):
    base = ["generate", str(smollm2_path), REPEAT, "--raw", "--temp", "0", "-n", "30", "--json", "-t", "1"]
    plain = cli(*base)
    assert plain.returncode == 0, plain.stderr
    for draft in ("lookup", str(smollm2_path)):
        spec = cli(*base, "--draft", draft)
        assert spec.returncode == 0, spec.stderr
        a, b = json.loads(plain.stdout), json.loads(spec.stdout)
        assert b["choices"][0]["text"] == a["choices"][0]["text"]
        assert b["usage"]["completion_tokens"] == a["usage"]["completion_tokens"]
    bad = cli(*base, "--draft", str(tiny_qwen_gguf))
    assert bad.returncode != 0 and "vocabulary" in bad.stderr


# ---- the scheduler and the server ---------------------------------------------------------------------
def test_scheduler_with_drafts_equals_plain_decoding(smollm2_path, smol, tiny_qwen_gguf, policy):
    from qwen_cpu.generate import sampling_params
    from qwen_cpu.scheduler import Request, Scheduler

    prompts = [smol.tokenize(p, add_special=True) for p in PROMPTS]
    want = []
    for ids in prompts:
        smol.reset()
        want.append(collect(smol.stream(ids, max_tokens=40, temperature=0)).text)
    with Model.load(smollm2_path, n_ctx=512, n_threads=1, n_seq=2) as m:
        for draft in ("lookup", smollm2_path):
            with Scheduler(m, draft=draft) as s:
                handles = [s.submit(Request(prompt_ids=ids, max_tokens=40, params=sampling_params(temperature=0)))
                           for ids in prompts]
                got = [h.result() for h in handles]
            assert [r.text for r in got] == want
            assert all(r.generation_tokens == 40 or r.finish_reason == "stop" for r in got)
            if policy == "always":
                assert sum(r.draft_accepted for r in got) > 0
        with pytest.raises(QwenCpuError, match="vocabulary"):
            Scheduler(m, draft=tiny_qwen_gguf)


def test_server_draft_flag(smollm2_path, smol_model):
    from _serving import ServerProcess

    with ServerProcess(smollm2_path, "--draft", "lookup", "-t", "1") as srv:
        out = srv.client().completions.create(model=smollm2_path.name, prompt=REPEAT, max_tokens=30, temperature=0)
    smol_model.reset()
    assert out.choices[0].text == smol_model.generate(REPEAT, max_tokens=30, temperature=0)
    bad = subprocess.run([sys.executable, "-m", "qwen_cpu.cli", "serve", str(smollm2_path), "--port", "0",
                          "--draft", "/nonexistent/draft.gguf"], capture_output=True, text=True, cwd=CWD,
                         env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert bad.returncode != 0 and "draft.gguf" in bad.stderr


# ---- sampling: the model's distribution, whatever the drafts --------------------------------------
# chi-square's 0.999 quantile for 26 degrees of freedom (3 x 3 x 3 cells, minus one)
CHI2_999_DF26 = 54.05


def test_sampled_tokens_follow_the_models_distribution_with_drafts(tmp_path_factory, monkeypatch):
    """Tokens sampled (top_k 3) after a prompt with many seeds, every draft checked: the counts of
    the 27 triples of the first three tokens match the model's own processed distribution,
    p(t1) p(t2 | t1) p(t3 | t1 t2) computed here from its logits (softmax of logits / T over the top
    3, end tokens banned), by a chi-square test at 0.1%. The third token is the first one a draft can
    decide (drafting starts after a timed decode step), and each run goes on to a fourth so that it
    is drafted and checked. The draft model is the same weights in Q4_0: its greedy token is mostly
    the target's likeliest, so drafts are accepted and rejected; an acceptance rule that leaked the
    drafter's choice into the output (the likeliest token too often) fails the test."""
    from _checkpoints import make_gguf

    monkeypatch.setattr(DraftLength, "choose", lambda self, key, available: available)
    root = tmp_path_factory.mktemp("spec_dist")
    target_path = make_gguf(root / "target", qtype="f16", seed=1)
    draft_path = make_gguf(root / "draft", qtype="q4_0", seed=1)
    temperature, n = 0.5, 3000
    with Model.load(target_path, n_ctx=64, n_threads=1) as m, Model.load(draft_path, n_ctx=64, n_threads=1) as d:
        ids = m.tokenize("ab ab ab", add_special=True)
        ban = {t: float("-inf") for t in m.tokenizer.eos_ids}

        def processed(prefix):
            z = m.logits(ids + prefix)[-1].astype(np.float64) / temperature
            z[list(ban)] = -np.inf
            top = np.argsort(-z)[:3]
            p = np.exp(z[top] - z[top].max())
            return dict(zip(top.tolist(), p / p.sum()))

        expected = {(a, b, c): pa * pb * pc for a, pa in processed([]).items()
                    for b, pb in processed([a]).items() for c, pc in processed([a, b]).items()}
        assert len(expected) == 27
        counts = dict.fromkeys(expected, 0)
        drafted = accepted = 0
        for seed in range(n):
            m.reset()
            out = list(m.stream(ids, max_tokens=4, context_shift=False, draft=d, temperature=temperature, top_k=3,
                                top_p=1.0, min_p=0.0, repetition_penalty=1.0, logit_bias=ban, seed=seed))
            counts[tuple(r.token for r in out if r.token is not None)[:3]] += 1  # an impossible one: KeyError
            drafted, accepted = drafted + out[-1].draft_tokens, accepted + out[-1].draft_accepted
    assert drafted > n // 2 and 0 < accepted < drafted, (drafted, accepted)  # both outcomes exercised
    chi2 = sum((counts[c] - n * p) ** 2 / (n * p) for c, p in expected.items())
    assert chi2 < CHI2_999_DF26, (chi2, counts, {c: round(n * p) for c, p in expected.items()})
