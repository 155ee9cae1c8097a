"""Chat templates: render a model's Jinja `chat_template` safely and tokenize the result safely.

Templates come from model files, so they are untrusted code. They run in jinja2's
`ImmutableSandboxedEnvironment`, and before anything runs the parsed template is checked: no
attribute or item whose name starts with "_" (`__class__`, `__globals__`, ...), no
import/include/extends. Dynamic attempts that slip past the check fail at render time. Every failure
is a QwenCpuError.

The environment matches what Hugging Face templates are written against: `trim_blocks`,
`lstrip_blocks`, the loop-controls extension (`break`/`continue`), a no-op `{% generation %}` block,
`raise_exception(msg)`, `strftime_now(fmt)`, and `tojson` as `json.dumps(ensure_ascii=False)` with
optional `indent`, `separators`, `sort_keys`.

Special-token safety. Markup from the template may contain control tokens (`<|im_start|>`); message
content may only ever produce ordinary text. Before rendering, every control-token text inside any
message or tool string is fenced with two Unicode noncharacters (U+FDD0 ... U+FDD1); after
rendering, only unfenced control-token texts become control tokens and the fences are removed. The
text between two control tokens is then tokenized in one piece, so benign prompts tokenize exactly
as the rendered string would. U+FDD0 / U+FDD1 already present in input strings become U+FFFD.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from dataclasses import dataclass

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import QwenCpuError

# A plain ChatML template, used when a model file has none (our own, not any model's).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_FENCE_OPEN, _FENCE_CLOSE = "\ufdd0", "\ufdd1"
_MAX_REPEAT = 1 << 20   # largest string/list a template may build with `*`


@dataclass(frozen=True)
class Segment:
    """One piece of a rendered prompt: a control token (`special=True`, `text` is its literal
    text) or ordinary text to tokenize without special-token parsing."""

    text: str
    special: bool


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (marks assistant text in HF templates): renders
    its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def unsafe_undefined(self, obj, attribute):
        # The default returns an Undefined that prints as "": fail loudly instead.
        raise SecurityError(f"access to attribute {attribute!r} of a "
                            f"{type(obj).__name__} object is not allowed")

    def call_binop(self, context, operator, left, right):
        # Keep `'x' * 10**9` and `9 ** 10**9` from eating the machine.
        if operator == "**" and isinstance(right, int) and abs(right) > 1024:
            raise SecurityError("exponent too large in chat template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    if len(seq) * n > _MAX_REPEAT:
                        raise SecurityError("repetition too large in chat template")
        return super().call_binop(context, operator, left, right)


def _raise_exception(message):
    raise TemplateError(str(message))


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(str(fmt))


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


def _make_env() -> _Sandbox:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True,
                   extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _make_env()


def _check_ast(tree: nodes.Template) -> None:
    """Reject, before anything runs, templates that reach for private attributes or other files."""
    for node in tree.find_all((nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
        raise QwenCpuError(f"chat template line {node.lineno}: {type(node).__name__.lower()} "
                           "statements are not allowed")
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem):
            name = node.arg.value if isinstance(node.arg, nodes.Const) else None
        else:   # x | attr('name')
            first = node.args[0] if node.name == "attr" and node.args else None
            name = first.value if isinstance(first, nodes.Const) else None
        if isinstance(name, str) and name.startswith("_"):
            raise QwenCpuError(f"chat template line {node.lineno}: access to {name!r} "
                               "is not allowed")


class ChatTemplate:
    """A compiled, checked chat template.

    `ChatTemplate(source, bos_token="", eos_token="")`; `source=None` selects CHATML_TEMPLATE.
    `render(...) -> str` gives the prompt text; `render_segments(...)` gives it as Segments.
    """

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
        self.source = CHATML_TEMPLATE if source is None else source
        if not isinstance(self.source, str):
            raise QwenCpuError(f"chat template must be a str, got {type(self.source).__name__}")
        try:
            tree = _ENV.parse(self.source)
        except TemplateError as e:
            raise QwenCpuError(f"chat template does not parse: {e}") from e
        _check_ast(tree)
        try:
            self._template = _ENV.from_string(self.source)
        except TemplateError as e:
            raise QwenCpuError(f"chat template does not compile: {e}") from e
        self.bos_token, self.eos_token = bos_token, eos_token

    def render(self, messages, add_generation_prompt: bool = True, tools=None, **extra) -> str:
        """Render OpenAI-shaped `messages` ([{"role", "content", ...}]) and optional `tools`.

        Content given as a list of {"type": "text", "text": ...} parts is joined into one string.
        Extra keyword arguments become template variables. Returns the prompt text exactly as
        the template writes it.
        """
        return self._render(_normalize_messages(messages), add_generation_prompt, tools, extra)

    def render_segments(self, messages, special_tokens, add_generation_prompt: bool = True,
                        tools=None, **extra) -> list[Segment]:
        """Render and split into Segments: control-token texts written by the template itself
        (members of `special_tokens`) vs. ordinary text. Control-token texts inside message content,
        tool calls or tool definitions stay ordinary text."""
        specials = sorted({t for t in special_tokens if t}, key=len, reverse=True)
        msgs = _fence(_normalize_messages(messages), specials)
        fenced_tools = _fence(tools, specials) if tools is not None else None
        fenced_extra = {k: _fence(v, specials) for k, v in extra.items()}
        text = self._render(msgs, add_generation_prompt, fenced_tools, fenced_extra)
        return _split_segments(text, specials)

    def _render(self, messages, add_generation_prompt, tools, extra) -> str:
        variables = dict(extra)
        variables.update(messages=messages, add_generation_prompt=bool(add_generation_prompt),
                         bos_token=self.bos_token, eos_token=self.eos_token)
        if tools is not None:
            variables["tools"] = tools
        try:
            return self._template.render(**variables)
        except SecurityError as e:
            raise QwenCpuError(f"chat template blocked: {e}") from e
        except TemplateError as e:
            raise QwenCpuError(f"chat template failed: {e}") from e
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
                RecursionError) as e:
            raise QwenCpuError(f"chat template failed on these messages: "
                               f"{type(e).__name__}: {e}") from e


def _normalize_messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)):
        raise QwenCpuError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise QwenCpuError(f"messages[{i}] must be a dict with a str 'role'")
        m = dict(m)
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    raise QwenCpuError(f"messages[{i}]: only text content parts are supported")
                parts.append(str(part.get("text", "")))
            m["content"] = "".join(parts)
        elif content is not None and not isinstance(content, str):
            raise QwenCpuError(f"messages[{i}]['content'] must be a str, a list of text parts "
                               "or None")
        out.append(m)
    return out


def _fence(value, specials: list[str]):
    """Copy of `value` (nested dicts/lists/strs) with each control-token text fenced."""
    if isinstance(value, str):
        value = value.replace(_FENCE_OPEN, "\ufffd").replace(_FENCE_CLOSE, "\ufffd")
        if specials and any(s in value for s in specials):
            pattern = "|".join(re.escape(s) for s in specials)
            value = re.sub(pattern, lambda mt: _FENCE_OPEN + mt.group(0) + _FENCE_CLOSE, value)
        return value
    if isinstance(value, dict):
        return {k: _fence(v, specials) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fence(v, specials) for v in value]
    return value


def _split_segments(text: str, specials: list[str]) -> list[Segment]:
    """Split rendered text at unfenced control-token texts; drop fences; merge adjacent text.

    A control-token text with a fence on either side counts as fenced, so a template that slices
    off one fence (`content[1:]`) still cannot turn user text into a control token.
    """
    segments: list[Segment] = []
    pending: list[str] = []
    pos = 0
    if specials:
        pattern = (f"({re.escape(_FENCE_OPEN)})?(" + "|".join(re.escape(s) for s in specials)
                   + f")({re.escape(_FENCE_CLOSE)})?")
        for mt in re.finditer(pattern, text):
            pending.append(text[pos:mt.start()])
            if mt.group(1) or mt.group(3):
                pending.append(mt.group(2))            # fenced: stays text
            else:
                segments.append(Segment("".join(pending), False))
                segments.append(Segment(mt.group(2), True))
                pending = []
            pos = mt.end()
    pending.append(text[pos:])
    segments.append(Segment("".join(pending), False))
    clean = [Segment(s.text.replace(_FENCE_OPEN, "").replace(_FENCE_CLOSE, ""), s.special)
             for s in segments]
    return [s for s in clean if s.special or s.text]


@functools.lru_cache(maxsize=16)
def _compiled(source: str | None, bos_token: str, eos_token: str) -> ChatTemplate:
    """Parsing and checking a template takes milliseconds: do it once per source."""
    return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token)


def encode_chat(tokenizer, messages, template=None, add_generation_prompt: bool = True,
                tools=None, **extra) -> list[int]:
    """Token ids of a chat prompt.

    template: a ChatTemplate, a template source str, or None for the tokenizer's own
    `chat_template` (ChatML when it has none). Markup control tokens become their ids; message
    content is tokenized with special tokens not recognised. BOS is added only by the template
    itself (HF convention), never by the tokenizer.
    """
    if not isinstance(template, ChatTemplate):
        source = template if template is not None else tokenizer.chat_template

        def token_text(i):
            return tokenizer.id_to_token(i) if i is not None else ""

        template = _compiled(source, token_text(tokenizer.bos_id), token_text(tokenizer.eos_id))
    segments = template.render_segments(messages, tokenizer.special_tokens,
                                        add_generation_prompt=add_generation_prompt,
                                        tools=tools, **extra)
    ids: list[int] = []
    for seg in segments:
        if seg.special:
            ids.append(tokenizer.special_tokens[seg.text])
        else:
            ids.extend(tokenizer.encode(seg.text, parse_special=False))
    return ids
