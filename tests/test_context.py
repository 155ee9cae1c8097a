"""Context full (qwen_cpu/context.py): which turns and tokens are kept, and that continuing after a
shift is exact: the stream's next tokens are those of a fresh run over the kept tokens (greedy, on
the real SmolLM2 model); the chat keeps its system prompt; context_shift=False keeps the old
behaviour (an error for a chat that outgrew the context, "length" for a generation)."""

import numpy as np
import pytest
from click.testing import CliRunner

from qwen_cpu import cli
from qwen_cpu.chat import encode_chat
from qwen_cpu.context import ChatShift, KeepStart, drop_oldest_turn, fit_messages
from qwen_cpu.errors import QwenCpuError
from qwen_cpu.generate import sampling_params, stream
from qwen_cpu import Model

SYS = {"role": "system", "content": "S"}


def _u(i):
    return {"role": "user", "content": f"question {i}"}


def _a(i):
    return {"role": "assistant", "content": f"answer {i}"}


def test_drop_oldest_turn_keeps_the_system_prompt_and_the_newest_turn():
    conv = [SYS, _u(1), _a(1), _u(2), _a(2), _u(3)]
    assert drop_oldest_turn(conv) == [SYS, _u(2), _a(2), _u(3)]
    assert drop_oldest_turn([SYS, _u(2), _a(2), _u(3)]) == [SYS, _u(3)]
    assert drop_oldest_turn([SYS, _u(3)]) is None
    assert drop_oldest_turn([_u(1), _u(2)]) == [_u(2)]


def fake_encode(messages):  # 10 tokens a message, ids telling which message
    return [k for k, _ in enumerate(messages) for _ in range(10)]


def test_fit_messages_leaves_a_quarter_of_the_context_for_the_answer():
    conv = [SYS, _u(1), _a(1), _u(2), _a(2), _u(3)]  # 60 tokens
    assert fit_messages(fake_encode, conv, 80) == (conv, fake_encode(conv))
    kept, ids = fit_messages(fake_encode, conv, 60)  # room 45: 4 messages (40)
    assert kept == [SYS, _u(2), _a(2), _u(3)] and len(ids) == 40
    kept, _ = fit_messages(fake_encode, conv, 24)  # even 2 messages exceed 3/4, but fit: kept
    assert kept == [SYS, _u(3)]
    with pytest.raises(QwenCpuError, match="no room to answer"):
        fit_messages(fake_encode, conv, 20)


def test_keep_start_and_chat_shift():
    assert KeepStart(1)(list(range(11))) == [0, 6, 7, 8, 9, 10]
    assert KeepStart(10)(list(range(11))) is None
    conv = [SYS, _u(1), _a(1), _u(2)]
    prompt = fake_encode(conv)  # 40 tokens
    shift = ChatShift(fake_encode, conv, prompt)
    tokens = prompt + [100, 101, 102]
    assert shift(tokens) == fake_encode([SYS, _u(2)]) + [100, 101, 102]
    assert shift.messages == [SYS, _u(2)] and shift.shifts == 1
    # nothing left to drop: the older half of the answer goes, the prompt stays
    assert shift(shift.prompt + [100, 101, 102, 103]) == shift.prompt + [102, 103]


@pytest.fixture(scope="module")
def small(smollm2_path):
    with Model.load(smollm2_path, n_ctx=96, n_threads=2) as m:
        yield m


class Recording(KeepStart):
    """KeepStart that records what it keeps."""

    def __init__(self, n_keep):
        super().__init__(n_keep)
        self.kept = []

    def __call__(self, tokens):
        out = super().__call__(tokens)
        self.kept.append(out)
        return out


def test_generation_past_the_context_continues_exactly(small, smollm2_path):
    prompt = small.tokenize("Once upon a time, in a land far away, there lived", add_special=True)
    shift = Recording(4)
    # no end token: only max_tokens ends it, whatever the path's greedy text (avx2 reaches an EOS)
    out = list(stream(small, prompt, max_tokens=200, params=sampling_params(temperature=0), context_shift=shift,
                      stop_tokens=[]))
    tokens = [r.token for r in out if r.token is not None]
    assert out[-1].finish_reason == "length" and len(tokens) == 200  # max_tokens, not the context, ended it
    assert len(shift.kept) >= 3
    # After each shift the stream went on exactly as a fresh run over the kept tokens: its next
    # token is their logits' argmax, computed from an empty cache in another model.
    history = prompt + tokens
    with Model.load(smollm2_path, n_ctx=96, n_threads=2) as fresh:
        for kept in shift.kept:
            at = _find(history, kept[4:])  # where the kept tail ends in the whole text
            logits = fresh.logits(kept)[-1]
            assert int(np.argmax(logits)) == history[at]
        with small.hold() as lease:
            last_tokens, _ = lease.read_slot(0)
            # the cache holds the kept start and the newest tokens, position by position
            assert last_tokens[:4] == prompt[:4] and last_tokens[4:] == history[len(history) - len(last_tokens) + 3:-1]
            # the shift's step itself: from a full cache, the kept tokens' logits (first 4 reused)
            # equal a fresh run's to float rounding
            lease.prefill(history[:96])
            kept = shift.kept[0]
            got = lease.prefill(kept)
        want = fresh.logits(kept)[-1]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def _find(history, tail):
    """Index just past the first occurrence of tail in history."""
    n = len(tail)
    for i in range(len(history) - n + 1):
        if history[i:i + n] == tail:
            return i + n
    raise AssertionError("kept tokens are not a piece of the text")


def test_without_shift_a_generation_ends_at_the_context(small):
    prompt = small.tokenize("Once upon a time", add_special=True)
    out = list(stream(small, prompt, max_tokens=500, params=sampling_params(temperature=0)))
    assert out[-1].finish_reason == "length" and out[-1].generation_tokens == 96 - len(prompt) + 1
    r = list(small.stream("Once upon a time", max_tokens=150, temperature=0))
    assert r[-1].generation_tokens == 150  # Model.stream shifts by default
    r = list(small.stream("Once upon a time", max_tokens=150, temperature=0, context_shift=False))
    assert r[-1].generation_tokens < 96


def test_chat_keeps_the_system_prompt_and_drops_the_oldest_turns(small):
    system = {"role": "system", "content": "You are a pirate."}
    conv = [system]
    for q in ("Tell me about ships.", "And about the sea?", "What do pirates eat?", "Where do they sleep?"):
        conv.append({"role": "user", "content": q})
        out = small.chat(conv, max_tokens=30, temperature=0)
        conv.append(out["choices"][0]["message"])
    assert len(encode_chat(small.tokenizer, conv)) > 96  # the conversation outgrew the context
    with small.hold() as lease:
        cached, _ = lease.read_slot(0)
    assert cached[:len(encode_chat(small.tokenizer, [system], add_generation_prompt=False))] == \
        encode_chat(small.tokenizer, [system], add_generation_prompt=False)
    conv.append({"role": "user", "content": "Goodbye!"})
    with pytest.raises(QwenCpuError, match="context holds 96"):
        small.chat(conv, max_tokens=30, temperature=0, context_shift=False)


def test_cli_chat_drops_old_turns_or_keeps_the_error(smollm2_path):
    lines = "\n".join(f"Tell me fact number {i} about the moon." for i in range(5)) + "\n"
    r = CliRunner().invoke(cli.main, ["chat", str(smollm2_path), "--temp", "0", "-n", "40", "-c", "128"], input=lines)
    assert r.exit_code == 0, r.output
    assert "messages were dropped" in r.output or "context full while answering" in r.output
    assert "error" not in r.output
    r = CliRunner().invoke(cli.main, ["chat", str(smollm2_path), "--temp", "0", "-n", "40", "-c", "128",
                                      "--no-context-shift"], input=lines)
    assert r.exit_code == 0 and "error: the prompt has" in r.output
