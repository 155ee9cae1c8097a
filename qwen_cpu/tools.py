"""Tool calls in Qwen2.5's format (Hermes style), returned as OpenAI `tool_calls`.

The model sees the `tools` through its chat template (Qwen2.5's lists them in the system prompt)
and calls them by answering with one or more blocks

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Request side: `prepare_chat` turns an OpenAI-style request into prompt ids, a Grammar and whether to
parse calls; within it, `prepare` decides what the template renders and, for tool_choice "required" or a
named function, builds the Grammar that makes the answer a valid call (arguments matching the
function's JSON schema); `template_messages` puts earlier calls and results into the form templates
expect (arguments as a dict), and describes the tools in the system prompt for templates that
ignore `tools`. Response side: `ToolCallStream` splits streamed text into content and tool-call
deltas, `chat_message` does the same for a whole answer.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from . import constrain
from .errors import QwenCpuError

OPEN, CLOSE = "<tool_call>", "</tool_call>"


# ---- request side -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ChatRequest:
    """A chat request ready to run. prompt_ids: the rendered prompt. grammar: what the answer must
    follow (`grammar.constraint()` per generation), or None. tool_calls: parse the answer's
    <tool_call> blocks (`chat_message`, `ToolCallStream`)."""

    prompt_ids: list[int]
    grammar: constrain.Grammar | None
    tool_calls: bool
    tools: list[dict] | None  # the tools the template renders (for encode_messages)


def prepare_chat(tokenizer, messages: Any, *, tools: Any = None, tool_choice: Any = None,
                 parallel_tool_calls: bool = True, response_format: Mapping | None = None, json_schema: Any = None,
                 regex: str | None = None, grammar: str | None = None,
                 template_name: str = "chat template", template_kwargs: Mapping | None = None) -> ChatRequest:
    """Everything an OpenAI-style chat request needs before generation, every option checked
    (QwenCpuError naming it) before anything runs: the prompt through the tokenizer's chat template
    with the tools and earlier calls (`template_messages`), and the Grammar of the tool_choice or of
    response_format / json_schema / regex / grammar (at most one source). template_name: how
    template errors name the template; template_kwargs: more template variables (e.g. Qwen3's
    enable_thinking), chat.check_template_kwargs."""
    plan = prepare(tokenizer, tools, tool_choice, parallel_tool_calls)
    g = constrain.from_options(tokenizer, response_format=response_format, json_schema=json_schema, regex=regex,
                               grammar=grammar)
    if g is not None and plan.grammar is not None:
        raise QwenCpuError("tool_choice 'required' or a named function cannot be combined with "
                           "response_format, json_schema, regex or grammar")
    return ChatRequest(encode_messages(tokenizer, messages, plan.tools, template_name, template_kwargs), g or plan.grammar,
                       plan.parse, plan.tools)


def encode_messages(tokenizer, messages: Any, tools: list[dict] | None,
                    template_name: str = "chat template", template_kwargs: Mapping | None = None) -> list[int]:
    """Prompt ids of messages with `tools` (a ToolPlan's), through `template_messages` and the
    tokenizer's chat template (with the variables template_kwargs)."""
    from .chat import check_template_kwargs, encode_chat

    extra = check_template_kwargs(template_kwargs)
    messages, rendered_tools = template_messages(messages, tools, tokenizer.chat_template)
    return encode_chat(tokenizer, messages, tools=rendered_tools, template_name=template_name, **extra)


@dataclass(frozen=True)
class ToolPlan:
    """tools: what the template renders (None: no tools). grammar: the call format enforced
    (tool_choice "required" or a named function), else None. parse: look for tool calls in the answer."""

    tools: list[dict] | None
    grammar: constrain.Grammar | None
    parse: bool


def check_tools(tools: Any) -> list[dict]:
    """`tools` as given if it is a list of OpenAI function tools
    ({"type": "function", "function": {"name", "description"?, "parameters"?}}); else QwenCpuError."""
    if not isinstance(tools, (list, tuple)) or not tools:
        raise QwenCpuError("tools must be a non-empty list of {\"type\": \"function\", \"function\": {...}}")
    names = set()
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not (isinstance(tool, Mapping) and tool.get("type") == "function" and isinstance(fn, Mapping)):
            raise QwenCpuError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise QwenCpuError(f"tools[{i}].function.name must be a non-empty str")
        if name in names:
            raise QwenCpuError(f"tools[{i}]: function {name!r} is defined twice")
        names.add(name)
        params = fn.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            raise QwenCpuError(f"tools[{i}].function.parameters must be a JSON schema object")
    return list(tools)


def prepare(tokenizer, tools: Any = None, tool_choice: Any = None, parallel_tool_calls: bool = True) -> ToolPlan:
    """What a request with OpenAI `tools` / `tool_choice` needs. tool_choice: "auto" (the default
    with tools: the model decides), "none" (no tools rendered, nothing parsed), "required" (one or
    more calls, several only if parallel_tool_calls), or {"type": "function", "function": {"name"}}
    (exactly one call to that function). The Grammar is compiled here: a bad schema fails now."""
    if tools is None or (isinstance(tools, (list, tuple)) and not tools):  # [] as OpenAI clients may send
        if tool_choice not in (None, "none"):
            raise QwenCpuError("tool_choice needs tools")
        return ToolPlan(None, None, False)
    tools = check_tools(tools)
    choice = "auto" if tool_choice is None else tool_choice
    if choice == "none":
        return ToolPlan(None, None, False)
    if choice == "auto":
        return ToolPlan(tools, None, True)
    if choice == "required":
        return ToolPlan(tools, call_grammar(tokenizer, [t["function"] for t in tools], several=parallel_tool_calls), True)
    fn = choice.get("function") if isinstance(choice, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not (isinstance(choice, Mapping) and choice.get("type") == "function" and isinstance(name, str)):
        raise QwenCpuError("tool_choice must be 'auto', 'none', 'required' or "
                           "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    chosen = [t["function"] for t in tools if t["function"]["name"] == name]
    if not chosen:
        raise QwenCpuError(f"tool_choice names function {name!r}, which is not among the tools")
    return ToolPlan(tools, call_grammar(tokenizer, chosen, several=False), True)


def call_grammar(tokenizer, functions: Sequence[Mapping], several: bool) -> constrain.Grammar:
    """A Grammar for <tool_call> blocks calling one of `functions` (OpenAI function dicts) with
    arguments valid under each one's "parameters" schema; one block, or one or more if `several`.
    An object schema that does not say whether other keys are allowed gets none (as OpenAI's strict
    mode requires): a call's arguments are the ones declared."""
    schema = {
        "anyOf": [{"type": "object",
                   "properties": {"name": {"const": f["name"]},
                                  "arguments": closed_schema(f.get("parameters") or {"type": "object"})},
                   "required": ["name", "arguments"], "additionalProperties": False}
                  for f in functions],
        "x-guidance": constrain.JSON_OPTIONS,
    }
    repeat = ' ("\\n" call)*' if several else ""
    lark = (f"start: call{repeat}\n"
            f"call: {json.dumps(OPEN + chr(10))} call_json {json.dumps(chr(10) + CLOSE)}\n"
            f"call_json: %json {json.dumps(schema)}\n")
    return constrain.from_grammar(tokenizer, lark, "tool call grammar (check the functions' parameters schemas)")


def closed_schema(schema: Any) -> Any:
    """A copy of a JSON schema with "additionalProperties": false in every object schema that has
    "properties" and says nothing about other keys."""
    if isinstance(schema, Mapping):
        named = ("properties", "patternProperties", "$defs", "definitions")  # maps of name -> schema
        out = {}
        for k, v in schema.items():
            named_map = k in named and isinstance(v, Mapping)
            out[k] = {n: closed_schema(s) for n, s in v.items()} if named_map else closed_schema(v)
        if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed_schema(v) for v in schema]
    return schema


def template_messages(messages: Any, tools: list[dict] | None, template: str | None) -> tuple[list, list | None]:
    """(messages, tools) to render with `template` (a chat template source; None: ChatML).
    Assistant tool_calls get their "arguments" JSON string as a dict, which is what templates
    (Qwen2.5's `tojson`) expect. A template that never mentions `tools` instead gets the Qwen2.5
    format in plain messages: the tools described in the system prompt, calls written as
    <tool_call> blocks in the assistant's content, results as <tool_response> blocks in user turns."""
    if not isinstance(messages, (list, tuple)):
        raise QwenCpuError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Mapping) and m.get("tool_calls"):
            m = {**m, "tool_calls": [_call_for_template(c, f"messages[{i}].tool_calls[{j}]")
                                     for j, c in enumerate(m["tool_calls"])]}
        out.append(m)
    if template is not None and "tools" in template:
        return out, tools
    return _plain_messages(out, tools), None


def _call_for_template(call: Any, where: str) -> dict:
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise QwenCpuError(f"{where} must be {{\"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            raise QwenCpuError(f"{where}.function.arguments is not valid JSON: {args[:80]!r}") from None
    return {**call, "function": {**fn, "arguments": args}}


def _plain_messages(messages: list, tools: list[dict] | None) -> list[dict]:
    out: list[dict] = []
    if tools:
        described = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        note = ("You can call functions to answer. Their signatures, one per line:\n<tools>\n" + described +
                "\n</tools>\nTo call a function, answer with its name and arguments as a JSON object in "
                f"{OPEN}{CLOSE} tags:\n{OPEN}\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n{CLOSE}")
        first = messages[0] if messages else None
        if isinstance(first, Mapping) and first.get("role") == "system" and isinstance(first.get("content"), str):
            out.append({**first, "content": first["content"] + "\n\n" + note})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": note})
    results_at = None  # index in `out` of the user turn collecting consecutive tool results
    for m in messages:
        if isinstance(m, Mapping) and m.get("role") == "assistant" and m.get("tool_calls"):
            blocks = [f"{OPEN}\n" + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                                                 ensure_ascii=False) + f"\n{CLOSE}" for c in m["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join(([m["content"]] if m.get("content") else []) + blocks)})
        elif isinstance(m, Mapping) and m.get("role") == "tool":
            block = f"<tool_response>\n{_text(m.get('content'))}\n</tool_response>"
            if results_at is not None and results_at == len(out) - 1:
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + block}
            else:
                out.append({"role": "user", "content": block})
                results_at = len(out) - 1
        else:
            out.append(m)  # anything malformed is named by chat.py
    return out


def _text(content: Any) -> str:
    """A message's content as one str (text parts joined; None -> "")."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


# ---- response side ----------------------------------------------------------------------------

def parse_call(body: str) -> dict | None:
    """The OpenAI tool call (with a new id) in the text between <tool_call> tags, or None when it
    is not a JSON object with a str "name" (and "arguments" an object or a JSON string)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", {})
    if isinstance(args, str):
        try:
            json.loads(args)
        except ValueError:
            return None
    else:
        args = json.dumps(args, ensure_ascii=False)
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": obj["name"], "arguments": args}}


class ToolCallStream:
    """Splits a model's streamed answer into OpenAI chat deltas: {"content": ...} for text and
    {"tool_calls": [{"index", "id", "type", "function": {"name", "arguments"}}]} for each
    <tool_call> block once it is complete (so `arguments` arrives whole, in one delta).

    push(text) -> list of delta dicts; finish() -> the last ones (a block missing its closing tag
    at the end is still parsed). Text that may be the start of a <tool_call> tag is held back;
    whitespace before a call, and at the end after one, is dropped; a block whose JSON does not
    parse stays content, exactly as written. `calls` lists the calls so far.
    """

    def __init__(self):
        self.calls: list[dict] = []
        self._buf = ""         # text not yet classified
        self._space = ""       # trailing whitespace of the content, held until more content comes
        self._in_call = False  # inside <tool_call> ... (the opening tag consumed)
        self._done = False

    def push(self, text: str) -> list[dict]:
        if self._done:
            raise QwenCpuError("ToolCallStream: push after finish")
        self._buf += text
        out: list[dict] = []
        while True:
            if self._in_call:
                end = self._buf.find(CLOSE)
                if end < 0:
                    return out
                self._block(self._buf[:end], CLOSE, out)
                self._buf, self._in_call = self._buf[end + len(CLOSE):], False
            else:
                start = self._buf.find(OPEN)
                if start < 0:
                    keep = _partial_tag(self._buf)
                    self._content(self._buf[:len(self._buf) - keep], out)
                    self._buf = self._buf[len(self._buf) - keep:]
                    return out
                self._content(self._buf[:start], out)
                self._buf, self._in_call = self._buf[start + len(OPEN):], True

    def finish(self) -> list[dict]:
        """The remaining deltas at the end of the answer."""
        out: list[dict] = []
        if not self._done:
            self._done = True
            if self._in_call:
                self._block(self._buf, "", out)
            else:
                self._content(self._buf, out)
            if self._space and not self.calls:
                out.append({"content": self._space})
            self._buf, self._space = "", ""
        return out

    def _content(self, text: str, out: list[dict]) -> None:
        if not text:
            return
        body = text.rstrip()
        if body:
            out.append({"content": self._space + body})
            self._space = ""
        self._space += text[len(body):]

    def _block(self, body: str, close: str, out: list[dict]) -> None:
        call = parse_call(body)
        if call is None:  # not a call after all: the text as written
            out.append({"content": self._space + OPEN + body + close})
        else:
            out.append({"tool_calls": [{"index": len(self.calls), **call}]})
            self.calls.append(call)
        self._space = ""


def _partial_tag(text: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of <tool_call>."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:n]):
            return n
    return 0


def finish_reason(reason: str | None, n_calls: int) -> str | None:
    """OpenAI's finish_reason for an answer with n_calls tool calls: "tool_calls" when it ended
    normally ("stop") with calls; otherwise `reason` unchanged."""
    return "tool_calls" if n_calls and reason == "stop" else reason


def chat_message(text: str, reason: str | None) -> tuple[dict, str | None]:
    """(OpenAI assistant message, finish_reason) for a whole answer: content (None when there is
    only whitespace besides the calls) and, when there are any, tool_calls."""
    parser = ToolCallStream()
    deltas = parser.push(text) + parser.finish()
    content = "".join(d.get("content", "") for d in deltas)
    message: dict = {"role": "assistant", "content": content if content or not parser.calls else None}
    if parser.calls:
        message["tool_calls"] = parser.calls
    return message, finish_reason(reason, len(parser.calls))
