"""Tool calls (qwen_cpu/tools.py): Qwen2.5-format answers parsed into OpenAI tool_calls, whole and
streamed (split at every character; the chunks accumulated by the `openai` library's own stream
state), tool_choice enforced with a grammar (checked with `jsonschema`), and the next turn rendered
back through the Qwen2.5 template as a plain jinja2 environment renders it."""

import json

import jinja2
import jsonschema
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from qwen_cpu import Model, QwenCpuError, tools
from qwen_cpu.chat import encode_chat

from _helpers import ADD, TOOLS, WEATHER
from conftest import DATA


# Answers in the format Qwen2.5 writes (its chat template's instructions and model card), with the
# content and calls (name, arguments) each must give.
RECORDED = [
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
     None, [("get_weather", {"city": "Paris", "unit": "celsius"})]),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>',
     None, [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]),
    ('Let me check the weather and do the sum.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
     '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>',
     "Let me check the weather and do the sum.", [("get_weather", {"city": "Oslo"}), ("add", {"a": 2, "b": 3})]),
    ('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 41}}\n',            # closing tag cut off
     None, [("add", {"a": 1, "b": 41})]),
    ('  <tool_call>{"name":"add","arguments":{"a":7,"b":8}}</tool_call>  \n\n <tool_call> \n{"name": "add", '
     '"arguments": "{\\"a\\": 1, \\"b\\": 2}"} </tool_call>\n',                  # spacing; arguments as a string
     None, [("add", {"a": 7, "b": 8}), ("add", {"a": 1, "b": 2})]),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par\n</tool_call>',   # broken JSON: content
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par\n</tool_call>', []),
    ('Use <b>bold</b> and a < b; the tag <tool_call is not closed',                 # no call at all
     'Use <b>bold</b> and a < b; the tag <tool_call is not closed', []),
    ('The answer is 42.\n', 'The answer is 42.\n', []),
    ('Sure.\n\n<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>\nDone, ask again <tool',
     "Sure.\nDone, ask again <tool", [("get_weather", {})]),
]


def calls_of(tool_calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tool_calls]


@pytest.mark.parametrize("text, content, calls", RECORDED)
def test_recorded_answers_parse_into_openai_tool_calls(text, content, calls):
    message, finish = tools.chat_message(text, "stop")
    assert message["content"] == content
    assert calls_of(message.get("tool_calls", [])) == calls
    assert finish == ("tool_calls" if calls else "stop")
    for call in message.get("tool_calls", []):
        assert call["type"] == "function" and call["id"].startswith("call_")
    ids = [c["id"] for c in message.get("tool_calls", [])]
    assert len(set(ids)) == len(ids)


def chunk(delta, finish=None):
    return ChatCompletionChunk.model_validate(
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def accumulate(pieces):
    """Stream `pieces` through a ToolCallStream and the openai library's chunk accumulator:
    -> (content or None, [(name, arguments)], finish_reason)."""
    parser = tools.ToolCallStream()
    state = ChatCompletionStreamState()
    list(state.handle_chunk(chunk({"role": "assistant"})))
    for piece in pieces:
        for delta in parser.push(piece):
            list(state.handle_chunk(chunk(delta)))
    for delta in parser.finish():
        list(state.handle_chunk(chunk(delta)))
    list(state.handle_chunk(chunk({}, tools.finish_reason("stop", len(parser.calls)))))
    choice = state.get_final_completion().choices[0]
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []]
    return choice.message.content, calls, choice.finish_reason


@pytest.mark.parametrize("text, content, calls", RECORDED)
def test_streamed_answers_give_the_same_message_split_anywhere(text, content, calls):
    finish = "tool_calls" if calls else "stop"
    assert accumulate(list(text)) == (content, calls, finish)                  # one character at a time
    for i in range(len(text) + 1):
        assert accumulate([text[:i], text[i:]]) == (content, calls, finish), i


def test_a_call_is_never_streamed_as_content():
    text = RECORDED[2][0]
    parser = tools.ToolCallStream()
    deltas = [d for ch in text for d in parser.push(ch)] + parser.finish()
    assert not any("<" in d.get("content", "") for d in deltas)


@pytest.fixture(scope="module")
def tiny(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=2048) as m:
        yield m


def closed(schema):
    return tools.closed_schema(schema)


@pytest.mark.parametrize("choice, several", [("required", True), ({"type": "function", "function": {"name": "add"}}, False)])
def test_tool_choice_gives_valid_calls_from_a_random_model(tiny, choice, several):
    schemas = {t["function"]["name"]: closed(t["function"]["parameters"]) for t in TOOLS}
    for seed in range(4):
        out = tiny.chat([{"role": "user", "content": "What is 2 + 3?"}], tools=TOOLS, tool_choice=choice,
                        temperature=1.0, seed=seed, max_tokens=300)
        ChatCompletion.model_validate(out)
        choice0 = out["choices"][0]
        assert choice0["finish_reason"] == "tool_calls" and choice0["message"]["content"] is None
        calls = calls_of(choice0["message"]["tool_calls"])
        assert calls and (several or len(calls) == 1)
        for name, args in calls:
            assert name in schemas if several else name == "add"
            jsonschema.validate(args, schemas[name])


def test_streamed_chat_gives_the_same_calls(tiny):
    kwargs = dict(tools=TOOLS, tool_choice="required", temperature=1.0, seed=5, max_tokens=300)
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    whole = tiny.chat(messages, **kwargs)["choices"][0]
    state = ChatCompletionStreamState()
    for c in tiny.chat(messages, stream=True, **kwargs):
        list(state.handle_chunk(ChatCompletionChunk.model_validate(c)))
    streamed = state.get_final_completion().choices[0]
    assert streamed.finish_reason == whole["finish_reason"] == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in streamed.message.tool_calls] == \
        calls_of(whole["message"]["tool_calls"])


def reference_render(messages, tools_):
    """The Qwen2.5 template rendered the way Hugging Face renders chat templates (plain jinja2,
    trim_blocks/lstrip_blocks, tojson = json.dumps), arguments given as dicts."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda v, **kw: json.dumps(v, ensure_ascii=False, **kw)
    source = (DATA / "qwen2.5-chat-template.jinja").read_text(encoding="utf-8")
    return env.from_string(source).render(messages=messages, tools=tools_, add_generation_prompt=True)


def test_call_result_answer_turn_renders_through_the_qwen_template(tiny):
    args = {"city": "Paris", "unit": "celsius"}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    rendered, rendered_tools = tools.template_messages(messages, TOOLS, tiny.tokenizer.chat_template)
    ids = encode_chat(tiny.tokenizer, rendered, tools=rendered_tools)
    as_dicts = [messages[0], {**messages[1], "tool_calls": [{**messages[1]["tool_calls"][0], "function": {
        "name": "get_weather", "arguments": args}}]}, messages[2]]
    text = tiny.tokenizer.decode(ids)
    assert text == reference_render(as_dicts, TOOLS)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>' in text
    assert '<tool_response>\n{"temperature": 21}\n</tool_response>' in text
    out = tiny.chat(messages, tools=TOOLS, temperature=0, max_tokens=8)
    assert out["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    assert out["usage"]["prompt_tokens"] == len(ids)


def test_tool_choice_none_renders_no_tools(tiny):
    rendered, rendered_tools = tools.template_messages([{"role": "user", "content": "hi"}],
                                                       tools.prepare(tiny.tokenizer, TOOLS, "none").tools,
                                                       tiny.tokenizer.chat_template)
    assert rendered_tools is None and "<tools>" not in tiny.tokenizer.decode(encode_chat(tiny.tokenizer, rendered))


BAD = [
    (dict(tool_choice="required"), "tool_choice needs tools"),
    (dict(tools=[{"type": "function"}]), r"tools\[0\]"),
    (dict(tools=[{"type": "function", "function": {"name": ""}}]), "name"),
    (dict(tools=[ADD, ADD]), "twice"),
    (dict(tools=TOOLS, tool_choice="sometimes"), "tool_choice must be"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": "add"}), "tool_choice must be"),
    (dict(tools=[], tool_choice="required"), "tool_choice needs tools"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "not among the tools"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "strin"}}}],
          tool_choice="required"), "tool call grammar"),
    (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "cannot be combined"),
]


@pytest.mark.parametrize("options, message", BAD)
def test_bad_tools_are_an_error_before_any_computation(tiny, options, message):
    before = tiny.n_evaluated
    with pytest.raises(QwenCpuError, match=message):
        tiny.chat([{"role": "user", "content": "hi"}], **options)
    bad_args = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "add", "arguments": "{oops"}}]}]
    with pytest.raises(QwenCpuError, match="not valid JSON"):
        tiny.chat(bad_args, tools=TOOLS)
    assert tiny.n_evaluated == before


def test_real_model_required_call_then_answer(smollm2_path):
    """SmolLM2's template ignores `tools`: the tools go into its system prompt as text."""
    messages = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    with Model.load(smollm2_path, n_ctx=1024) as m:
        out = m.chat(messages, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, temperature=0,
                     max_tokens=64)
        ChatCompletion.model_validate(out)
        message = out["choices"][0]["message"]
        assert out["choices"][0]["finish_reason"] == "tool_calls"
        [(name, args)] = calls_of(message["tool_calls"])
        assert name == "get_weather" and args["city"] == "Paris"
        jsonschema.validate(args, closed(WEATHER["function"]["parameters"]))
        messages += [message, {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"],
                               "content": '{"temperature_c": 21, "sky": "sunny"}'}]
        answer = m.chat(messages, tools=[WEATHER], temperature=0, max_tokens=48)
        assert "21" in answer["choices"][0]["message"]["content"]
