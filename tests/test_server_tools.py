"""Structured output and tool calls through the HTTP server: `response_format`, `tools` and
`tool_choice` sent with the official `openai` client to `qwen-cpu serve` processes on ephemeral
loopback ports. Outputs are checked with `jsonschema`, streamed deltas accumulated by the openai
library's own stream state, and greedy answers compared with `Model.chat` for the same request."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest
from _helpers import TOOLS, WEATHER
from _serving import ServerProcess, name
from openai.lib.streaming.chat import ChatCompletionStreamState


PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 10},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
                         "address": {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                                     "required": ["zip"], "additionalProperties": False}},
          "required": ["name", "age", "tags", "address"], "additionalProperties": False}
SCHEMAS = [PERSON,
           {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "minItems": 2, "maxItems": 4},
           {"anyOf": [{"type": "boolean"}, {"type": "object", "properties": {"ok": {"const": 1}}, "required": ["ok"],
                                                "additionalProperties": False}]},
           {"type": "object", "properties": {"colour": {"enum": ["red", "green"]}, "n": {"type": "number",
                                                                                        "minimum": 0, "maximum": 1}},
            "required": ["colour"], "additionalProperties": False}]
# Strings bounded and objects closed: a model that knows nothing would otherwise write until max_tokens.
ASK = [{"role": "user", "content": "Describe a person as JSON."}]


def fmt(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


@pytest.fixture(scope="module")
def tiny(tiny_qwen_gguf):
    """The random-weight Qwen2.5-shaped model (real vocabulary) with two slots."""
    with ServerProcess(tiny_qwen_gguf, "--parallel", "2", "-c", "2048", "-t", "1") as srv:
        yield srv


@pytest.fixture(scope="module")
def smol(smollm2_path):
    with ServerProcess(smollm2_path, "--parallel", "2", "-t", "2") as srv:
        yield srv


def accumulate(chunks):
    """The streamed chunks folded by the openai library's own stream state -> its final choice."""
    state = ChatCompletionStreamState()
    for c in chunks:
        if c.choices:  # not the usage chunk
            list(state.handle_chunk(c))
    return state.get_final_completion().choices[0]


def calls_of(message):
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


# ---- response_format ----------------------------------------------------------------------------
def test_json_schema_plain_and_streamed_random_model(tiny):
    """A model that knows nothing, sampling at temperature 1: every answer validates."""
    client = tiny.client()
    for i, schema in enumerate(SCHEMAS):
        kwargs = dict(model=name(tiny), messages=ASK, response_format=fmt(schema), temperature=1.0, seed=i,
                      max_tokens=300)
        got = client.chat.completions.create(**kwargs).choices[0]
        assert got.finish_reason == "stop"
        jsonschema.validate(json.loads(got.message.content), schema)
        streamed = accumulate(client.chat.completions.create(stream=True, **kwargs))
        assert streamed.finish_reason == "stop" and streamed.message.content == got.message.content


def test_json_object_and_schema_on_smollm2(smol):
    client = smol.client()
    got = client.chat.completions.create(model=name(smol), messages=[{"role": "user", "content": "Describe a cat as a small JSON object with its name and age."}],
                                         response_format={"type": "json_object"}, temperature=0, max_tokens=120)
    assert got.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(got.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "country"]}
    streamed = accumulate(client.chat.completions.create(
        model=name(smol), messages=[{"role": "user", "content": "Name a city and its country."}],
        response_format=fmt(schema), temperature=0, max_tokens=80, stream=True))
    assert streamed.finish_reason == "stop"
    jsonschema.validate(json.loads(streamed.message.content), schema)


def test_completions_response_format(tiny):
    schema = SCHEMAS[1]
    got = tiny.client().completions.create(model=name(tiny), prompt="Numbers:", max_tokens=100, temperature=1.0,
                                           seed=3, extra_body={"response_format": fmt(schema)})
    assert got.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(got.choices[0].text), schema)


def test_greedy_answers_equal_model_chat(tiny, tiny_model):
    client = tiny.client()
    expected = tiny_model.chat(ASK, response_format=fmt(PERSON), temperature=0, max_tokens=300)
    got = client.chat.completions.create(model=name(tiny), messages=ASK, response_format=fmt(PERSON),
                                         temperature=0, max_tokens=300)
    assert got.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert got.usage.completion_tokens == expected["usage"]["completion_tokens"]
    ask = [{"role": "user", "content": "Weather in Oslo, and 2 + 3?"}]
    # one call: greedy, a model that knows nothing would repeat calls until max_tokens
    expected = tiny_model.chat(ask, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=0,
                               max_tokens=200)
    got = client.chat.completions.create(model=name(tiny), messages=ask, tools=TOOLS, tool_choice="required",
                                         parallel_tool_calls=False, temperature=0, max_tokens=200)
    assert got.choices[0].finish_reason == expected["choices"][0]["finish_reason"] == "tool_calls"
    assert calls_of(got.choices[0].message) == [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                                                for c in expected["choices"][0]["message"]["tool_calls"]]


def test_concurrent_constrained_requests_each_valid(tiny):
    """Two slots, six requests with their own schemas: each answer follows its own."""
    client = tiny.client()

    def ask(i):
        schema = SCHEMAS[i % len(SCHEMAS)]
        r = client.chat.completions.create(model=name(tiny), messages=ASK, response_format=fmt(schema),
                                           temperature=1.0, seed=100 + i, max_tokens=300)
        return schema, r.choices[0]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(ask, range(6)))
    for schema, choice in results:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), schema)


# ---- tool calls ---------------------------------------------------------------------------------
@pytest.mark.parametrize("server", ["tiny", "smol"])
def test_tool_choice_required_plain_and_streamed(server, request):
    srv = request.getfixturevalue(server)
    kwargs = dict(model=name(srv), messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                  tools=TOOLS, tool_choice="required", temperature=1.0 if server == "tiny" else 0, seed=7,
                  max_tokens=600)
    client = srv.client()
    got = client.chat.completions.create(**kwargs).choices[0]
    streamed = accumulate(client.chat.completions.create(stream=True, **kwargs))
    for choice in (got, streamed):
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert call.type == "function" and call.id.startswith("call_")
            fn = next(t["function"] for t in TOOLS if t["function"]["name"] == call.function.name)
            jsonschema.validate(json.loads(call.function.arguments), fn["parameters"])
    assert calls_of(streamed.message) == calls_of(got.message)
    named = client.chat.completions.create(**{**kwargs, "tool_choice": {"type": "function",
                                                                         "function": {"name": "add"}}}).choices[0]
    assert [n for n, _ in calls_of(named.message)] == ["add"]


def test_call_result_answer_loop(smol, smol_model):
    """call -> tool result -> answer through the server, each turn equal to Model.chat's."""
    client = smol.client()
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=name(smol), messages=messages, tools=[WEATHER],
                                           tool_choice="required", temperature=0, max_tokens=100).choices[0]
    expected = smol_model.chat(messages, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=100)
    assert calls_of(first.message) == [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                                       for c in expected["choices"][0]["message"]["tool_calls"]]
    call = first.message.tool_calls[0]
    messages += [first.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 18, "sky": "clear"})}]
    answer = client.chat.completions.create(model=name(smol), messages=messages, tools=[WEATHER],
                                            temperature=0, max_tokens=40).choices[0]
    assert answer.finish_reason in ("stop", "length") and answer.message.content
    reference = smol_model.chat(messages, tools=[WEATHER], temperature=0, max_tokens=40)["choices"][0]
    assert answer.message.content == reference["message"]["content"]
    assert answer.finish_reason == reference["finish_reason"]


# ---- errors, before any computation -------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (dict(response_format=fmt({"type": "strin"})), "invalid JSON schema"),
    (dict(response_format={"type": "yaml"}), "response_format type 'yaml' is not supported"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "fly"}}),
     "tool_choice names function 'fly', which is not among the tools"),
    (dict(tool_choice="required"), "tool_choice needs tools"),
    (dict(tools=[{"type": "function", "function": {"description": "no name"}}]), "tools[0].function.name"),
    (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "cannot be combined"),
])
def test_bad_requests_are_400_with_the_librarys_message(tiny, options, message):
    with pytest.raises(openai.BadRequestError) as e:
        tiny.client().chat.completions.create(model=name(tiny), messages=ASK, max_tokens=5, **options)
    assert e.value.status_code == 400 and message in e.value.body["message"]


def test_bad_response_format_on_completions_is_400(tiny):
    r = httpx.post(tiny.url + "/v1/completions", json={"model": name(tiny), "prompt": "x",
                                                       "response_format": fmt({"type": "strin"})})
    assert r.status_code == 400 and "invalid JSON schema" in r.json()["error"]["message"]
