"""The sandbox chat templates run in: jinja2's ImmutableSandboxedEnvironment, a check of the parsed
template before anything runs, and limits on what one render may spend.

Templates come from model files, so they are untrusted code. Before anything runs, the parsed
template is refused if it reaches for an attribute or item whose name starts with "_"
(`__class__`, `__globals__`, ...) or imports/includes/extends another file; dynamic attempts that
slip past the check fail at render time (the sandbox).

Limits, per render (a TemplateLimit naming the template, within about MAX_CPU_SECONDS):
  - CPU time of the rendering thread (MAX_CPU_SECONDS) and loop iterations plus calls (MAX_STEPS);
  - the size of every string, list or integer an operation builds (MAX_STR characters, MAX_ITEMS
    elements, MAX_INT_BITS bits), checked BEFORE the operations whose result size is set by an
    argument (`*`, `**`, `%` and `format` widths, `ljust`/`center`/`zfill`/`indent` widths,
    `replace`, `join`, `tojson` indent, `batch`/`slice` counts) and after every other one;
  - all characters and elements built during the render together (MAX_ALLOC), and the output
    (MAX_STR), so a loop that keeps building cannot grow memory past a few tens of MB;
  - data nested deeper than MAX_DEPTH (caller data and template-built data alike).
`lipsum` (a lorem-ipsum generator no chat template needs) is removed.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import json
import re
import string
import time
from collections.abc import Mapping

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from .errors import QwenCpuError

MAX_CPU_SECONDS = 0.5    # of the rendering thread: real templates take milliseconds
MAX_STEPS = 1 << 20      # loop iterations + calls + operations
MAX_STR = 1 << 23        # characters of one string built, and of the rendered prompt (8 Mi)
MAX_ITEMS = 1 << 20      # elements of one list / dict built
MAX_WIDTH = 1 << 16      # a width, indent or count argument
MAX_INT_BITS = 1 << 13   # an integer built by arithmetic
MAX_ALLOC = 1 << 26      # characters + elements built during one render, all together
MAX_DEPTH = 64           # nesting of lists and dicts
MAX_TOJSON_INDENT = 16
MAX_SOURCE = 1 << 20     # characters of a template's source


class TemplateLimit(SecurityError):
    """A render went past one of the limits above."""


class _Budget:
    """What one render has spent (the current one is in _BUDGET, per thread and task)."""

    def __init__(self):
        self.cpu_end = time.thread_time() + MAX_CPU_SECONDS
        self.steps = 0
        self.alloc = 0

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise TemplateLimit(f"more than {MAX_STEPS} loop iterations and calls")
        if (self.steps & 63 == 0 or n > 1) and time.thread_time() > self.cpu_end:
            raise TemplateLimit(f"rendering took more than {MAX_CPU_SECONDS} s of CPU time")

    def charge(self, n: int) -> None:
        self.alloc += n
        if self.alloc > MAX_ALLOC:
            raise TemplateLimit(f"more than {MAX_ALLOC} characters and elements built in one render")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("qwen_cpu_template_budget",
                                                                         default=None)


def _step(n: int = 1) -> None:
    b = _BUDGET.get()
    if b is not None:
        b.step(n)


def _account(value) -> None:
    """Check the size of a value an operation built and charge it to the render."""
    b = _BUDGET.get()
    if b is None:
        return
    if isinstance(value, str):
        if len(value) > MAX_STR:
            raise TemplateLimit(f"a string of more than {MAX_STR} characters")
        b.charge(len(value))
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        if len(value) > MAX_ITEMS:
            raise TemplateLimit(f"a list or dict of more than {MAX_ITEMS} elements")
        b.charge(len(value))
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimit(f"an integer of more than {MAX_INT_BITS} bits")


def text_size(value, indent: int = 0, limit: int = MAX_STR) -> int:
    """An upper estimate of len(str(value)) or len(json.dumps(value, indent=indent)), walked
    lazily without building anything; TemplateLimit as soon as it passes `limit`, or past
    MAX_DEPTH levels (so a structure that contains itself is an error, not a hang)."""
    total, seen = 0, 0
    stack = [iter((value,))]                 # one iterator per open container; depth = len - 1
    while stack:
        v = next(stack[-1], _END)
        if v is _END:
            stack.pop()
            continue
        seen += 1
        if seen & 1023 == 0:
            _step(64)
        if isinstance(v, str):
            total += 2 + len(v) * (6 if indent else 1)     # json escapes: at most \uXXXX per char
        elif v is None or isinstance(v, (bool, float)):
            total += 24
        elif isinstance(v, int):
            total += 2 + v.bit_length() // 3
        elif isinstance(v, (Mapping, Namespace, list, tuple, set, frozenset)):
            if len(stack) > MAX_DEPTH:
                raise TemplateLimit(f"data nested more than {MAX_DEPTH} levels deep")
            if isinstance(v, Namespace):
                v = getattr(v, "_Namespace__attrs", {})
            total += 2 + (4 + indent * len(stack)) * (len(v) + 1)
            stack.append(iter(x for kv in v.items() for x in kv) if isinstance(v, Mapping) else iter(v))
        else:
            total += 64                                   # a macro, loop or undefined: a short repr
        if total > limit:
            raise TemplateLimit(f"a value whose text would exceed {limit} characters")
    return total


_END = object()


# ---- checks of arguments that set a result's size ------------------------------------------

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_width(what: str, width) -> None:
    if isinstance(width, int) and width > MAX_WIDTH:
        raise TemplateLimit(f"{what} {width} is larger than {MAX_WIDTH}")


def _check_percent(fmt: str, args) -> None:
    """`fmt % args`: widths and precisions bounded, the arguments' text bounded."""
    for m in _PERCENT_SPEC.finditer(fmt):
        for n in m.groups():
            if n == "*":
                raise TemplateLimit("'*' widths in % formatting are not supported")
            if n is not None:
                _check_width("a % format width", int(n))
    n_fields = fmt.count("%") + 1
    if len(fmt) + n_fields * text_size(args) > MAX_STR:
        raise TemplateLimit(f"% formatting would build more than {MAX_STR} characters")


def _check_format(fmt: str, args, kwargs) -> None:
    """`fmt.format(*args, **kwargs)`: every format spec's numbers bounded, the fields' text bounded."""
    try:
        fields = [f for f in string.Formatter().parse(fmt) if f[1] is not None]
    except ValueError:
        return                                         # format() will raise it
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise TemplateLimit("nested fields in a format spec are not supported")
        for n in re.findall(r"\d+", spec or ""):
            _check_width("a format width", int(n))
    if len(fmt) + len(fields) * text_size((args, kwargs)) > MAX_STR:
        raise TemplateLimit(f"format() would build more than {MAX_STR} characters")


def _check_replace(s: str, old, new, count=-1) -> None:
    if isinstance(old, str) and isinstance(new, str):
        hits = len(s) + 1 if old == "" else s.count(old)
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        if len(s) + hits * len(new) > MAX_STR:
            raise TemplateLimit(f"replace() would build more than {MAX_STR} characters")


def _joined(sep: str, items) -> list:
    """The items of a join, listed and checked: their text and the separators within MAX_STR."""
    items = list(items)
    if len(items) > MAX_ITEMS:
        raise TemplateLimit(f"a join of more than {MAX_ITEMS} items")
    if text_size(items) + len(sep) * len(items) > MAX_STR:
        raise TemplateLimit(f"join() would build more than {MAX_STR} characters")
    return items


def _check_str_method(s: str, name: str, args: tuple, kwargs: dict) -> tuple:
    """Pre-check a call of str method `name` on s; returns the (possibly listed) args."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_width(f"{name}() width", first)
    elif name == "expandtabs" and isinstance(first, int):
        _check_width("expandtabs() tab size", first)
    elif name in ("format", "format_map"):
        _check_format(s, args, kwargs)
    elif name == "replace" and len(args) >= 2:
        _check_replace(s, *args[:3])
    elif name == "join" and args:
        return (_joined(s, args[0]),) + args[1:]
    elif name == "translate" and isinstance(first, Mapping):
        longest = max((len(v) for v in first.values() if isinstance(v, str)), default=1)
        if len(s) * longest > MAX_STR:
            raise TemplateLimit(f"translate() would build more than {MAX_STR} characters")
    return args


# ---- filters ------------------------------------------------------------------------------------

def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """`tojson` as HF templates expect it: json.dumps(ensure_ascii=False), optional indent,
    separators, sort_keys; the indent bounded and the output size estimated first."""
    width = len(indent) if isinstance(indent, str) else (indent or 0)
    if not isinstance(width, int) or width > MAX_TOJSON_INDENT:
        raise TemplateLimit(f"tojson indent {indent!r} is larger than {MAX_TOJSON_INDENT}")
    text_size(value, indent=max(width, 1))
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _filter_check(name: str, args: tuple, kwargs: dict) -> tuple:
    """Pre-check a filter call (args without the pass_context argument); returns the args."""
    value = args[0] if args else None
    rest = list(args[1:]) + list(kwargs.values())
    first = rest[0] if rest else None
    if name == "center":
        _check_width("center width", first)
    elif name == "indent":
        width = len(first) if isinstance(first, str) else first
        _check_width("indent width", width)
        if isinstance(value, str) and isinstance(width, int) and len(value) + value.count("\n") * width > MAX_STR:
            raise TemplateLimit(f"indent would build more than {MAX_STR} characters")
    elif name in ("batch", "slice"):
        _check_width(f"{name} count", first)
    elif name == "format" and isinstance(value, str):
        _check_percent(value, tuple(rest))
    elif name == "replace" and isinstance(value, str) and len(rest) >= 2:
        _check_replace(value, *rest[:3])
    elif name == "join" and value is not None:
        return (_joined(first if isinstance(first, str) else "", value),) + args[1:]
    elif name in ("string", "pprint"):
        text_size(value)
    elif name == "list" and isinstance(value, str) and len(value) > MAX_ITEMS:
        raise TemplateLimit(f"a list of more than {MAX_ITEMS} elements")
    elif name == "sum" and not all(isinstance(x, (int, float)) or x is None for x in rest):
        raise TemplateLimit("sum() of anything but numbers is not supported")
    return args


def _limited(name: str, f):
    """Filter f with its pre-check, a step charged and its result accounted."""
    skip = 1 if jinja2.utils._PassArg.from_obj(f) is not None else 0

    @functools.wraps(f)
    def limited(*args, **kwargs):
        _step()
        # checked even outside a render: jinja2 calls filters on constants while compiling
        args = args[:skip] + _filter_check(name, args[skip:], kwargs)
        result = f(*args, **kwargs)
        _account(result)
        return result

    return limited


def _loop_items(iterable, static_chars=0):
    """A for loop's iterable, one step (and the loop body's own text) charged per iteration."""
    b = _BUDGET.get()
    for item in iterable:
        if b is not None:
            b.step()
            b.charge(static_chars)
        yield item


def _as_text(value) -> str:
    """An operand of `~`, converted after its size was estimated."""
    if not isinstance(value, str):
        text_size(value)
        value = str(value)
    _account(value)
    return value


def _finalize(value):
    if _BUDGET.get() is not None:
        if isinstance(value, str):
            _account(value)
        else:
            text_size(value)
    return value


def _raise_exception(message):
    raise TemplateError(str(message))


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(str(fmt))


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (marks assistant text in HF templates): renders
    its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def unsafe_undefined(self, obj, attribute):
        # The default returns an Undefined that prints as "": fail loudly instead.
        raise SecurityError(f"access to attribute {attribute!r} of a "
                            f"{type(obj).__name__} object is not allowed")

    def call_binop(self, context, operator, left, right):
        _step()
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(left.bit_length(), 1) * right > MAX_INT_BITS and abs(left) > 1:
                raise TemplateLimit(f"an integer of more than {MAX_INT_BITS} bits")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple)) and isinstance(n, int)
                        and len(seq) * n > (MAX_STR if isinstance(seq, str) else MAX_ITEMS)):
                    raise TemplateLimit("repetition too large")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        result = super().call_binop(context, operator, left, right)
        _account(result)
        return result

    def call(__self, __context, __obj, *args, **kwargs):  # jinja2's signature (names it cannot clash with)
        _step()
        target = getattr(__obj, "__wrapped__", __obj)
        if isinstance(getattr(target, "__self__", None), str):
            args = _check_str_method(target.__self__, getattr(target, "__name__", ""), args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _account(result)
        return result

    def getitem(self, obj, argument):
        result = super().getitem(obj, argument)
        if isinstance(argument, slice):             # a slice is a copy
            _account(result)
        return result


def make_env() -> _Sandbox:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, finalize=_finalize,
                   extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.filters = {name: _limited(name, f) for name, f in env.filters.items()}
    env.filters["qc_loop_items"] = _loop_items
    env.filters["qc_as_text"] = _as_text
    env.globals.pop("lipsum", None)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


ENV = make_env()


def _body_text(body: list) -> int:
    """Characters of template text directly in a loop body (nested loops charge their own)."""
    total, stack = 0, list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif not isinstance(node, nodes.For):
            stack.extend(node.iter_child_nodes())
    return total


def check_and_instrument(tree: nodes.Template) -> nodes.Template:
    """Refuse templates that reach for private attributes or other files (QwenCpuError); then
    route every loop's iterable and every `~` operand through the counting filters."""
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
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "qc_loop_items", [nodes.Const(_body_text(loop.body))], [],
                                 None, None, lineno=loop.lineno)
    for concat in tree.find_all(nodes.Concat):
        concat.nodes = [nodes.Filter(n, "qc_as_text", [], [], None, None, lineno=concat.lineno)
                        for n in concat.nodes]
    return tree


def compile_template(source: str) -> jinja2.Template:
    """Parse, check, instrument and compile a template source (QwenCpuError when refused)."""
    if len(source) > MAX_SOURCE:
        raise QwenCpuError(f"chat template of {len(source)} characters is longer than {MAX_SOURCE}")
    try:
        tree = ENV.parse(source)
    except TemplateError as e:
        raise QwenCpuError(f"chat template does not parse: {e}") from e
    tree = check_and_instrument(tree)
    try:
        return ENV.template_class.from_code(ENV, ENV.compile(tree), ENV.make_globals(None), None)
    except TemplateError as e:
        raise QwenCpuError(f"chat template does not compile: {e}") from e


def render(template: jinja2.Template, variables: dict) -> str:
    """The template's output under a fresh budget; every limit is a TemplateLimit."""
    token = _BUDGET.set(_Budget())
    try:
        parts, size = [], 0
        for piece in template.generate(**variables):
            size += len(piece)
            if size > MAX_STR:
                raise TemplateLimit(f"the rendered prompt is longer than {MAX_STR} characters")
            _step()
            parts.append(piece)
        return "".join(parts)
    finally:
        _BUDGET.reset(token)

