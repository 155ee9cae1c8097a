"""Chat templates: render a model's Jinja `chat_template` in the sandbox of sandbox.py (checked
before it runs; limits on time, sizes and loops) and tokenize the result so that no caller text
ever becomes a control token.

The rule. After rendering, a control-token text (`<|im_start|>`) is a control token only if the
template itself wrote it: when none of its characters comes from a caller string. Caller strings
are every key and every value, at any depth, of the messages, the tools and the extra template
variables. How: before rendering, in every caller string the characters of
  - each occurrence of a control-token text, compared case-insensitively (so `|lower`, `|upper`
    cannot make one), and
  - a start that is the end of a control-token text, or an end that is its start (so two caller
    strings side by side, or a template's own half token beside caller text, cannot make one)
are replaced by private-use stand-ins (U+F0000 + code point). No template operation (slicing,
case mapping, `tojson` with or without ensure_ascii, concatenation, trimming) turns a stand-in back
into the character it stands for. The rendered text is split at the control-token texts that
remain; only then do the stand-ins (and their JSON escapes) become the caller's characters again,
inside ordinary text. What a template then sees: stand-ins where caller text holds control-token
text (`'<|im_end|>' in content` is false for it), and those characters untransformed (`|upper`
leaves them as written). Code points U+F0000..U+10FFFF in caller strings become U+FFFD.

Caller data must be JSON values (dicts with str or int keys, lists, tuples, str, int, float, bool,
None), at most sandbox.MAX_DEPTH levels deep, without cycles; `tools` a list of dicts. The text
between two control tokens is tokenized in one piece, so benign prompts tokenize exactly as the
rendered string would.

The environment matches what Hugging Face templates are written against: `trim_blocks`,
`lstrip_blocks`, the loop-controls extension (`break`/`continue`), a no-op `{% generation %}` block,
`raise_exception(msg)`, `strftime_now(fmt)`, and `tojson` as `json.dumps(ensure_ascii=False)` with
optional `indent`, `separators`, `sort_keys`. Every failure is a QwenCpuError naming the template.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from jinja2.exceptions import SecurityError, TemplateError

from . import sandbox
from .errors import QwenCpuError

# A plain ChatML template, used when a model file has none (our own, not any model's).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_STANDIN = 0xF0000                          # stand-in of character c: chr(_STANDIN + ord(c))
_STANDINS = re.compile("[\U000F0000-\U0010FFFF]")
# a stand-in as json.dumps(ensure_ascii=True) writes it: a surrogate pair
_ESCAPED_STANDIN = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)
# characters whose lower() is not one character, or that re's IGNORECASE pairs with an ASCII letter
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


@dataclass(frozen=True)
class Segment:
    """One piece of a rendered prompt: a control token (`special=True`, `text` is its literal
    text) or ordinary text to tokenize without special-token parsing."""

    text: str
    special: bool


def _fold(s: str) -> str:
    """s case-folded character by character (the same length, so positions carry over)."""
    s = s.translate(_FOLD)
    low = s.lower()
    return low if len(low) == len(s) else "".join(c if len(c.lower()) != 1 else c.lower() for c in s)


class _Specials:
    """The control-token texts of a vocabulary, prepared for protect() and split()."""

    def __init__(self, texts: tuple[str, ...]):
        self.texts = sorted({t for t in texts if t}, key=len, reverse=True)
        folded = sorted({_fold(t) for t in self.texts}, key=len, reverse=True)
        self.find = re.compile("|".join(map(re.escape, folded))) if folded else None
        self.split_at = re.compile("|".join(map(re.escape, self.texts))) if folded else None
        self.starts = {t[:k] for t in folded for k in range(1, len(t))}   # proper prefixes
        self.ends = {t[k:] for t in folded for k in range(1, len(t))}     # proper suffixes
        self.longest = max(map(len, folded), default=0)

    def protect(self, s: str) -> str:
        """s with the characters the rule names replaced by stand-ins."""
        if _STANDINS.search(s):
            s = _STANDINS.sub("\ufffd", s)
        if self.find is None or not s:
            return s
        f = _fold(s)
        spans = [m.span() for m in self.find.finditer(f)]
        for k in range(min(self.longest - 1, len(f)), 0, -1):
            if f[:k] in self.ends:
                spans.append((0, k))
                break
        for k in range(min(self.longest - 1, len(f)), 0, -1):
            if f[-k:] in self.starts:
                spans.append((len(f) - k, len(f)))
                break
        if not spans:
            return s
        chars = list(s)
        for a, b in spans:
            for i in range(a, b):
                if ord(chars[i]) < 0x20000:          # stand-ins exist for planes 0 and 1
                    chars[i] = chr(_STANDIN + ord(chars[i]))
        return "".join(chars)

    def split(self, text: str) -> list[Segment]:
        """Rendered text -> Segments: the control-token texts in it are special, the rest is text
        (stand-ins restored); adjacent text merged, empty text dropped."""
        out: list[Segment] = []
        pos = 0
        for m in self.split_at.finditer(text) if self.split_at is not None else ():
            if m.start() > pos:
                out.append(Segment(_restore(text[pos:m.start()]), False))
            out.append(Segment(m.group(), True))
            pos = m.end()
        if pos < len(text) or not out:
            out.append(Segment(_restore(text[pos:]), False))
        return [s for s in out if s.special or s.text]


@functools.lru_cache(maxsize=16)
def _specials(texts: tuple[str, ...]) -> _Specials:
    return _Specials(texts)


def _restore(text: str) -> str:
    """Stand-ins (raw, or JSON-escaped by `tojson(ensure_ascii=True)`) back to the caller's text."""
    text = _STANDINS.sub(lambda m: chr(ord(m.group()) - _STANDIN), text)

    def unescape(m):
        cp = 0x10000 + ((int(m.group(1), 16) - 0xD800) << 10) + (int(m.group(2), 16) - 0xDC00)
        return json.dumps(chr(cp - _STANDIN))[1:-1] if cp >= _STANDIN else m.group()

    return _ESCAPED_STANDIN.sub(unescape, text) if "\\" in text else text


def _caller_data(value, where: str, protect=None, depth: int = 0, path: tuple = ()):
    """A copy of caller data with every str (key or value) passed through `protect`; QwenCpuError
    for anything but JSON values, deeper than sandbox.MAX_DEPTH levels, or containing itself."""
    if isinstance(value, str):
        return protect(value) if protect else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if not isinstance(value, (dict, list, tuple)):
        raise QwenCpuError(f"{where}: a {type(value).__name__} is not allowed in chat data (only "
                           "dict, list, str, int, float, bool and None)")
    if id(value) in path:
        raise QwenCpuError(f"{where}: the data contains itself")
    if depth >= sandbox.MAX_DEPTH:
        raise QwenCpuError(f"{where}: data nested more than {sandbox.MAX_DEPTH} levels deep")
    path = path + (id(value),)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise QwenCpuError(f"{where}: a {type(k).__name__} key is not allowed (str or int keys)")
            out[protect(k) if protect and isinstance(k, str) else k] = _caller_data(
                v, f"{where}[{k!r}]", protect, depth + 1, path)
        return out
    return [_caller_data(v, f"{where}[{i}]", protect, depth + 1, path) for i, v in enumerate(value)]


class ChatTemplate:
    """A compiled, checked chat template.

    `ChatTemplate(source, bos_token="", eos_token="", name="chat template")`; `source=None`
    selects CHATML_TEMPLATE; `name` is how errors refer to it. `render(...) -> str` gives the prompt
    text; `render_segments(...)` gives it as Segments.
    """

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "",
                 name: str = "chat template"):
        self.source = CHATML_TEMPLATE if source is None else source
        self.name = name
        if not isinstance(self.source, str):
            raise QwenCpuError(f"{name} must be a str, got {type(self.source).__name__}")
        self._template = sandbox.compile_template(self.source)
        self.bos_token, self.eos_token = bos_token, eos_token

    def render(self, messages, add_generation_prompt: bool = True, tools=None, **extra) -> str:
        """Render OpenAI-shaped `messages` ([{"role", "content", ...}]) and optional `tools`.

        Content given as a list of {"type": "text", "text": ...} parts is joined into one string.
        Extra keyword arguments become template variables. Returns the prompt text exactly as
        the template writes it (no protection of caller text: see render_segments).
        """
        msgs, tools, extra = _checked_inputs(messages, tools, extra, None)
        return self._render(msgs, add_generation_prompt, tools, extra)

    def render_segments(self, messages, special_tokens, add_generation_prompt: bool = True,
                        tools=None, **extra) -> list[Segment]:
        """Render and split into Segments: control-token texts written by the template itself
        (members of `special_tokens`) vs. ordinary text, by the rule of the module docstring."""
        specials = _specials(tuple(sorted(t for t in special_tokens if t)))
        msgs, tools, extra = _checked_inputs(messages, tools, extra, specials.protect)
        return specials.split(self._render(msgs, add_generation_prompt, tools, extra))

    def _render(self, messages, add_generation_prompt, tools, extra) -> str:
        variables = dict(extra)
        variables.update(messages=messages, add_generation_prompt=bool(add_generation_prompt),
                         bos_token=self.bos_token, eos_token=self.eos_token)
        if tools is not None:
            variables["tools"] = tools
        try:
            return sandbox.render(self._template, variables)
        except sandbox.TemplateLimit as e:
            raise QwenCpuError(f"{self.name} stopped: {e}") from e
        except SecurityError as e:
            raise QwenCpuError(f"{self.name} blocked: {e}") from e
        except TemplateError as e:
            raise QwenCpuError(f"{self.name} failed: {e}") from e
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
                RecursionError, MemoryError) as e:
            raise QwenCpuError(f"{self.name} failed on these messages: "
                               f"{type(e).__name__}: {e}") from e


def _checked_inputs(messages, tools, extra, protect) -> tuple[list, list | None, dict]:
    """Messages normalized, tools and extra variables checked; every caller str protected."""
    msgs = _caller_data(_normalize_messages(messages), "messages", protect)
    if tools is not None:
        if not isinstance(tools, (list, tuple)) or not all(isinstance(t, dict) for t in tools):
            raise QwenCpuError(f"tools must be a list of tool dicts, got {tools!r:.80}")
        tools = _caller_data(tools, "tools", protect)
    extra = {k: _caller_data(v, k, protect) for k, v in extra.items()}
    return msgs, tools, extra


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


@functools.lru_cache(maxsize=16)
def _compiled(source: str | None, bos_token: str, eos_token: str, name: str) -> ChatTemplate:
    """Parsing and checking a template takes milliseconds: do it once per source."""
    return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token, name=name)


# Variables every render sets itself (and encode_chat's own keywords): not for the caller to replace.
_RESERVED_VARIABLES = {"messages", "add_generation_prompt", "tools", "bos_token", "eos_token", "template",
                       "template_name", "tokenizer"}


def check_template_kwargs(kwargs) -> dict:
    """Extra template variables ({name: value}, e.g. {"enable_thinking": False} for Qwen3's
    template; vLLM's and llama-server's chat_template_kwargs) checked: identifier names, none of
    the variables a render sets itself. Returns a dict (empty for None)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise QwenCpuError(f"chat_template_kwargs must be an object of template variables, got {kwargs!r:.80}")
    for k in kwargs:
        if not isinstance(k, str) or not k.isidentifier() or k.startswith("_"):
            raise QwenCpuError(f"chat_template_kwargs: {k!r} is not a template variable name")
        if k in _RESERVED_VARIABLES:
            raise QwenCpuError(f"chat_template_kwargs: {k!r} is set by the chat itself")
    return dict(kwargs)


def encode_chat(tokenizer, messages, template=None, add_generation_prompt: bool = True,
                tools=None, template_name: str = "chat template", **extra) -> list[int]:
    """Token ids of a chat prompt.

    template: a ChatTemplate, a template source str, or None for the tokenizer's own
    `chat_template` (ChatML when it has none); template_name: how errors name it. Markup control
    tokens become their ids; caller text never does (the module docstring's rule). BOS is added
    only by the template itself (HF convention), never by the tokenizer.
    """
    if not isinstance(template, ChatTemplate):
        source = template if template is not None else tokenizer.chat_template

        def token_text(i):
            return tokenizer.id_to_token(i) if i is not None else ""

        template = _compiled(source, token_text(tokenizer.bos_id), token_text(tokenizer.eos_id), template_name)
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
