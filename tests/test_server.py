"""The HTTP server (qwen_cpu/server) through the official `openai` client and plain httpx, against
`qwen-cpu serve` processes started here on ephemeral loopback ports. Answers are compared with
what the Python API (`Model.chat`, `Model.generate`, `Model.embed`) gives for the same request."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from _serving import ServerProcess, name, sse_events

from qwen_cpu import Model, QwenCpuError
from qwen_cpu.generate import sampling_params
from qwen_cpu.server.app import close_service, create_app

KEY = "test-key-0123"
GOLDEN = Path(__file__).parent / "data" / "golden"
QUESTIONS = ["What is the capital of France?", "Name three colours.", "What is 2 + 2?", "Say hello.",
             "What do bees make?", "Name a large ocean.", "How many legs has a spider?", "What is ice?"]


# ---- servers and reference models ---------------------------------------------------------------
@pytest.fixture(scope="module")
def smol(smollm2_path):
    """SmolLM2 with 4 slots."""
    with ServerProcess(smollm2_path, "--parallel", "4", "-t", "2") as srv:
        yield srv


@pytest.fixture(scope="module")
def tiny(tiny_qwen_gguf):
    """The Qwen2.5-shaped model with one slot, a queue of one, an API key, 2048 positions and a
    50 kB body limit: the limits are reached quickly here. No warm-up (--no-warmup): its first
    request makes the first decode step itself."""
    with ServerProcess(tiny_qwen_gguf, "--parallel", "1", "--queue", "1", "-c", "2048", "--max-body", "50000",
                       "-t", "1", "--no-warmup", api_key=KEY) as srv:
        yield srv


def no_eos(model) -> dict[str, float]:
    """A logit_bias that bans every end token: the answer runs to max_tokens."""
    return {str(t): -100.0 for t in model.tokenizer.eos_ids}


# ---- the OpenAI endpoints against the Python API ------------------------------------------------
def test_models_health_and_page(smol, smollm2_path):
    models = smol.client().models.list().data
    assert [m.id for m in models] == [smollm2_path.name]
    assert httpx.get(smol.url + "/health").json() == {"status": "ok"}
    page = httpx.get(smol.url + "/")
    assert page.status_code == 200 and "<textarea" in page.text and "/static/chat.js" in page.text
    assert "fetch(" in httpx.get(smol.url + "/static/chat.js").text
    assert smol.url.startswith("http://127.0.0.1:")  # the default bind address


@pytest.mark.parametrize("server, reference", [("smol", "smol_model"), ("tiny", "tiny_model")])
def test_chat_equals_model_chat(server, reference, request):
    srv, model = request.getfixturevalue(server), request.getfixturevalue(reference)
    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "What is the capital of France?"}]
    expected = model.chat(messages, temperature=0, max_tokens=24)
    got = srv.client().chat.completions.create(model=name(srv), messages=messages, temperature=0, max_tokens=24)
    assert got.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert got.choices[0].finish_reason == expected["choices"][0]["finish_reason"]
    assert got.usage.model_dump() == {**expected["usage"], "completion_tokens_details": None,
                                      "prompt_tokens_details": None}
    # streamed: the same text in pieces, the finish reason, then a usage chunk
    chunks = list(srv.client().chat.completions.create(
        model=name(srv), messages=messages, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected["choices"][0]["message"]["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [expected["choices"][0]["finish_reason"]]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == expected["usage"]["total_tokens"]
    assert len({c.id for c in chunks}) == 1


def test_completions_equal_model_generate(smol, smol_model):
    prompt = "The three primary colours are"
    expected = smol_model.generate(prompt, max_tokens=20, temperature=0)
    client = smol.client()
    got = client.completions.create(model=name(smol), prompt=prompt, max_tokens=20, temperature=0)
    assert got.object == "text_completion" and got.choices[0].text == expected
    streamed = client.completions.create(model=name(smol), prompt=prompt, max_tokens=20, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected
    ids = smol_model.tokenize(prompt, add_special=True)  # a prompt given as token ids
    assert client.completions.create(model=name(smol), prompt=ids, max_tokens=20,
                                     temperature=0).choices[0].text == expected


def test_embeddings_equal_model_embed(smol, smol_model):
    texts = ["a cat sat on the mat", "Paris is in France"]
    got = smol.client().embeddings.create(model=name(smol), input=texts)  # the client asks for base64
    assert [d.index for d in got.data] == [0, 1]
    for d, text in zip(got.data, texts):
        np.testing.assert_allclose(d.embedding, smol_model.embed(text), atol=1e-5)
    plain = httpx.post(smol.url + "/v1/embeddings", json={"model": name(smol), "input": texts[0],
                                                          "encoding_format": "float"}).json()
    np.testing.assert_allclose(plain["data"][0]["embedding"], smol_model.embed(texts[0]), atol=1e-5)
    assert plain["usage"]["prompt_tokens"] == len(smol_model.tokenize(texts[0]))


def test_logprobs_are_the_models(smol, smol_model):
    from qwen_cpu.chat import encode_chat
    from qwen_cpu.sampler import log_softmax

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    got = smol.client().chat.completions.create(model=name(smol), messages=messages, temperature=0,
                                                max_tokens=4, logprobs=True, top_logprobs=3)
    entries = got.choices[0].logprobs.content
    assert len(entries) >= 1 and all(len(e.top_logprobs) == 3 for e in entries)
    ids = encode_chat(smol_model.tokenizer, messages)
    expected = log_softmax(smol_model.logits(ids)[-1])
    best = np.argsort(-expected)[:3]
    first = entries[0]
    assert first.token == smol_model.tokenizer.token_to_piece(int(best[0]))
    assert first.logprob == pytest.approx(float(expected[best[0]]), abs=2e-3)
    assert [t.logprob for t in first.top_logprobs] == pytest.approx([float(expected[i]) for i in best], abs=2e-3)
    assert "".join(e.token for e in entries).startswith(got.choices[0].message.content[:3])


def test_sampling_fields(smol, smol_model):
    client, model = smol.client(), name(smol)
    messages = [{"role": "user", "content": "Write a sentence about the sea."}]

    def ask(**kw):
        return client.chat.completions.create(model=model, messages=messages, max_tokens=16, **kw).choices[0]

    # A prompt seen for the first time on both sides: repeating one would reuse its cached prefix,
    # computing the last prompt token alone, whose slightly different logits may change a draw.
    sampled = dict(temperature=0.9, top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=0.5)
    fresh = [{"role": "user", "content": "Write a sentence about the moon."}]
    smol_model.reset()
    expected = smol_model.chat(fresh, max_tokens=16, **sampled)["choices"][0]["message"]["content"]
    got = client.chat.completions.create(model=model, messages=fresh, max_tokens=16, **sampled)
    assert got.choices[0].message.content == expected
    greedy = ask(temperature=0).message.content
    first = smol_model.tokenize(greedy)[0]
    assert not ask(temperature=0, logit_bias={str(first): -100}).message.content.startswith(greedy[:4])
    stopped = ask(temperature=0, stop=[greedy[5:8]])
    assert stopped.finish_reason == "stop" and stopped.message.content == greedy[:greedy.index(greedy[5:8])]
    capped = ask(temperature=0, max_completion_tokens=3)
    assert capped.finish_reason == "length"


# ---- several users at once -----------------------------------------------------------------------
def test_eight_streams_on_four_slots_equal_sequential(smol):
    client, model = smol.client(), name(smol)

    def stream(question: str) -> tuple[str, str]:
        chunks = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                                temperature=0, max_tokens=20, stream=True)
        parts, finish = [], None
        for c in chunks:
            parts.append(c.choices[0].delta.content or "")
            finish = c.choices[0].finish_reason or finish
        return "".join(parts), finish

    sequential = [stream(q) for q in QUESTIONS]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(stream, QUESTIONS))
    assert together == sequential
    assert all(finish in ("stop", "length") for _, finish in together)
    smol.wait_idle()


def test_client_disconnect_frees_the_slot(smol, smol_model):
    body = {"model": name(smol), "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 3000, "logit_bias": no_eos(smol_model), "stream": True}
    with httpx.stream("POST", smol.url + "/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(8):
            next(lines)
    # the connection is closed: the server cancels the generation at its next step
    smol.wait_idle(timeout=5)
    with pytest.raises(httpx.ReadTimeout):  # a non-streamed request whose client gives up
        httpx.post(smol.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=1.0)
    smol.wait_idle(timeout=5)
    m = smol.metrics()
    assert m["qwen_cpu_n_seq"] == 4 and m["qwen_cpu_requests_cancelled_total"] >= 2


def test_a_request_that_cannot_be_sampled_ends_alone(smol, smol_model):
    # Every token banned (JSON's -Infinity, which the bias accepts as a ban): the step's sampling of
    # that sequence fails. It alone ends with the reason; a stream running beside it goes on, and
    # the server keeps serving (before 78f2c0e it stopped the step thread: every stream ended and
    # every later request was refused).
    user = [{"role": "user", "content": "Hi"}]
    ban_all = "{" + ", ".join(f'"{t}": -Infinity' for t in range(smol_model.config.n_vocab)) + "}"
    running = {"model": name(smol), "messages": user, "max_tokens": 40, "logit_bias": no_eos(smol_model),
               "stream": True, "temperature": 0}
    with httpx.stream("POST", smol.url + "/v1/chat/completions", json=running, timeout=60) as r:
        lines = r.iter_lines()
        first = next(x for x in lines if x.startswith("data:"))
        bad = ('{"model": "%s", "messages": [{"role": "user", "content": "Hi"}], "logit_bias": %s}'
               % (name(smol), ban_all)).encode()
        assert "every token was removed" in error(smol, "/v1/chat/completions", 400, content=bad)
        events = sse_events([first, *lines])
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length"
    assert "error" not in json.dumps(events)
    got = smol.client().chat.completions.create(model=name(smol), messages=user, max_tokens=4)
    assert got.choices[0].message.content


def test_metrics_text(smol):
    text = httpx.get(smol.url + "/metrics").text
    for needle in ('qwen_cpu_http_requests_total{endpoint="/v1/chat/completions",status="200"}',
                   "# TYPE qwen_cpu_tokens_per_second gauge", "# TYPE qwen_cpu_tokens_generated_total counter",
                   "qwen_cpu_queue_depth 0", "qwen_cpu_slots_busy", "qwen_cpu_prompt_tokens_total"):
        assert needle in text


def test_queue_full_is_429(smollm2_path, smol_model):
    """One slot and a queue of one: a third request while two are in is refused."""
    with ServerProcess(smollm2_path, "--parallel", "1", "--queue", "1", "-t", "1") as srv:
        body = {"model": smollm2_path.name, "prompt": "Once", "max_tokens": 2000, "stream": True,
                "logit_bias": no_eos(smol_model)}
        statuses = []

        def queued():  # its first token comes once the running one has left the slot
            with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as r:
                statuses.append(r.status_code)
                statuses.append(json.loads(next(r.iter_lines())[5:])["object"])

        with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as running:
            lines = running.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)
            waiting = threading.Thread(target=queued)
            waiting.start()
            deadline = time.monotonic() + 5
            while srv.metrics()["qwen_cpu_queue_depth"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            with pytest.raises(openai.RateLimitError, match="busy"):
                srv.client().completions.create(model=smollm2_path.name, prompt="Hi", max_tokens=2)
        waiting.join(30)
        assert statuses == [200, "text_completion"]
        srv.wait_idle(timeout=10)


# ---- errors --------------------------------------------------------------------------------------
def error(srv, path: str, status: int, *, content=None, json_body=None, headers=None) -> str:
    r = httpx.post(srv.url + path, content=content, json=json_body, headers={**srv.headers(), **(headers or {})},
                   timeout=30)
    assert r.status_code == status, r.text
    return r.json()["error"]["message"]


def test_bad_requests(smol):
    chat, model = "/v1/chat/completions", name(smol)
    user = [{"role": "user", "content": "Hi"}]
    assert "not valid JSON" in error(smol, chat, 400, content=b'{"model": ')
    assert "messages.0.content" in error(smol, chat, 400, json_body={"model": model, "messages": [{"role": "user",
                                                                                                  "content": 3}]})
    assert "messages: Field required" in error(smol, chat, 400, json_body={"model": model})
    assert "max_tokens" in error(smol, chat, 400, json_body={"model": model, "messages": user, "max_tokens": "many"})
    with pytest.raises(QwenCpuError) as python_api:  # the same check, the same message as the Python API's
        sampling_params(temperature=-1)
    assert error(smol, chat, 400, json_body={"model": model, "messages": user, "temperature": -1}) == \
        str(python_api.value)
    assert "n = 2" in error(smol, chat, 400, json_body={"model": model, "messages": user, "n": 2})
    assert "tools[0] must be" in error(smol, chat, 400, json_body={  # more in test_server_tools.py
        "model": model, "messages": user, "tools": [{"type": "fn", "function": {"name": "f"}}]})
    assert "logit_bias" in error(smol, chat, 400, json_body={"model": model, "messages": user,
                                                             "logit_bias": {"x": 1}})
    assert "does not exist" in error(smol, chat, 404, json_body={"model": "gpt-4", "messages": user})
    with pytest.raises(openai.NotFoundError):
        smol.client().chat.completions.create(model="gpt-4", messages=user)
    assert "batch of 2 prompts" in error(smol, "/v1/completions", 400, json_body={"model": model,
                                                                                  "prompt": ["a", "b"]})
    assert "empty" in error(smol, "/v1/embeddings", 400, json_body={"model": model, "input": ""})


def test_context_limits(tiny, tiny_model):
    long_prompt = "hello " * 3000
    msg = error(tiny, "/v1/completions", 400, json_body={"model": name(tiny), "prompt": long_prompt})
    assert "context holds 2048" in msg
    prompt = "hello " * 1990
    n_prompt = len(tiny_model.tokenize(prompt, add_special=True))
    got = tiny.client().completions.create(model=name(tiny), prompt=prompt, max_tokens=100000,
                                           logit_bias=no_eos(tiny_model))
    assert got.choices[0].finish_reason == "length"
    # max_tokens capped by the context: tokens until it is full, and one more sampled from the last position
    assert got.usage.completion_tokens == 2048 - n_prompt + 1


def test_api_key_body_limit_and_no_cors(tiny):
    url = tiny.url + "/v1/models"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "API key" in httpx.get(url, headers={"Authorization": f"Bearer {KEY}x"}).json()["error"]["message"]
    assert httpx.get(url, headers=tiny.headers()).status_code == 200
    assert httpx.get(tiny.url + "/health").status_code == 200  # health and the page need no key
    assert httpx.get(tiny.url + "/").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=tiny.url + "/v1", api_key="wrong", max_retries=0).models.list()
    big = json.dumps({"model": name(tiny), "prompt": "x" * 60000}).encode()
    assert "limit of 50000 bytes" in error(tiny, "/v1/completions", 413, content=big)
    chunked = error(tiny, "/v1/completions", 413, content=iter([big[:30000], big[30000:]]))  # no Content-Length
    assert "limit of 50000 bytes" in chunked
    origin = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in httpx.options(tiny.url + "/v1/completions", headers=origin).headers
    assert "access-control-allow-origin" not in httpx.get(url, headers={**tiny.headers(), **origin}).headers


def test_warm_up_makes_the_repacked_copies_before_serving():
    """The server's warm-up step (as llama-server's warm-up run) makes the repacked weight copies
    of the first decode step (csrc/repack.h) before the first request, whose first token would
    otherwise wait for them; --no-warmup leaves them to that request."""
    path = GOLDEN / "qwen2-h256-tied.q4_0.gguf"
    with Model.load(path, n_threads=1) as m:
        pending = m._net.repacks_pending  # 0 on a path without repacked Q4_0 kernels (sse42, scalar)
    for warmup in (True, False):
        app = create_app(path, n_threads=1, warmup=warmup)
        try:
            assert app.state.service.model._net.repacks_pending == (0 if warmup else pending)
        finally:
            close_service(app)


def test_sigint_ends_streams_and_exits(tiny_qwen_gguf, tiny_model):
    with ServerProcess(tiny_qwen_gguf, "-t", "1") as srv:
        body = {"model": tiny_qwen_gguf.name, "prompt": "Once", "max_tokens": 3000, "stream": True,
                "logit_bias": no_eos(tiny_model)}
        events = []

        def read():
            with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as r:
                lines = r.iter_lines()
                events.append(next(lines))
                srv.signal(signal.SIGINT)
                events.extend(sse_events(lines))

        t = threading.Thread(target=read)
        t.start()
        t.join(30)
        assert srv.wait(20) == 0
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "cancelled"
