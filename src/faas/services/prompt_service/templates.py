"""The Jinja2 sandbox prompts are compiled and rendered in, and the default templates.

Templates are untrusted text written by API callers. They run in an
`ImmutableSandboxedEnvironment` (no attribute starting with `_`, no mutation of lists or
dicts, sandboxed `str.format`) with `StrictUndefined` (a missing variable is an error, never an
empty string) and no globals but a bounded `range`. The sandbox bounds what a template may
touch; two more bounds make the work finite:

- the size of values: every operation that runs as one step of C code (`*`, `+`, `%`, `~`,
  a call, a filter, printing a value) is refused, before it runs, when its result or the text
  of its inputs would pass `MAX_VALUE_CHARS` — a list holding the same megabyte string a
  thousand times is small until it is printed;
- the number of steps, the time and the output of the whole render (budget.py).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2 import nodes as jinja_nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jsonschema import exceptions as schema_exceptions
from jsonschema import validators

from faas.services.prompt_service.budget import RenderAborted, RenderBudget
from faas.shared.exceptions import DependencyUnavailable, ValidationFailed

MAX_TEMPLATE_CHARS = 100_000
MAX_VALUE_CHARS = 1_000_000
MAX_POWER_BITS = 100_000
TEMPLATE_FILENAME = "<template>"
_UNDEFINED_RE = re.compile(r"^'([^']+)' is undefined$")
# A run of 7+ digits in a format string is a field width of a megabyte or more.
_HUGE_WIDTH_RE = re.compile(r"\d{7,}")
_CONTAINERS = (list, tuple, dict, set, frozenset)
_SIZED = (str, bytes, list, tuple)


class ValueTooLarge(SecurityError):
    """A single value (or the text it prints as) would pass MAX_VALUE_CHARS."""

    limit = "render_value_chars"


def _text_weight(value: Any, limit: int) -> int:
    """An upper-bound estimate of the characters `value` prints as (its strings' lengths plus
    one per item), walking containers; stops as soon as the total passes `limit`, so the walk
    costs at most `limit` steps whatever the value."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, _CONTAINERS):
            total += len(item) + 1
            if total > limit:
                return total
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
        else:
            total += 1
        if total > limit:
            return total
    return total


def _check_printable(value: Any) -> Any:
    if isinstance(value, _CONTAINERS) and _text_weight(value, MAX_VALUE_CHARS) > MAX_VALUE_CHARS:
        raise ValueTooLarge(f"a value that prints as more than {MAX_VALUE_CHARS} characters")
    return value


def _check_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for arg in (*args, *kwargs.values()):
        _check_printable(arg)


def _check_size(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple | dict) and len(value) > MAX_VALUE_CHARS:
        raise ValueTooLarge(f"a value of more than {MAX_VALUE_CHARS} items is not allowed")
    return value


def _check_width(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_CHARS:
        raise ValueTooLarge(f"a width or count above {MAX_VALUE_CHARS} is not allowed")


def _check_format(pattern: Any) -> None:
    if isinstance(pattern, str) and _HUGE_WIDTH_RE.search(pattern):
        raise ValueTooLarge("format widths of a million or more are not allowed")


# str methods that build a string as large as one of their integer arguments
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_FORMAT_METHODS = frozenset({"format", "format_map"})


def _check_str_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    if name in _WIDTH_METHODS:
        for arg in (*args, *kwargs.values()):
            _check_width(arg)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], args[1]
        if isinstance(new, str) and len(new) > len(old):
            grown = len(owner) + owner.count(old) * (len(new) - len(old))
            if grown > MAX_VALUE_CHARS:
                raise ValueTooLarge("the replacement would exceed the value limit")


def _guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja_pass_arg (pass_environment & co.)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_inputs(args, kwargs)
        if name in ("center", "indent"):
            for arg in (*args[1:], *kwargs.values()):
                _check_width(arg)
        elif name == "format" and args:
            _check_format(args[0])
        return _check_size(function(*args, **kwargs))

    return guarded


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `left <operator> right` before it runs when its result would be too large."""
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_POWER_BITS:
                raise ValueTooLarge("the product is too large")
            return
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int) and times > 1:
                if len(seq) * times > MAX_VALUE_CHARS:
                    raise ValueTooLarge("the repetition would exceed the value limit")
                if _text_weight(seq, MAX_VALUE_CHARS // times) * times > MAX_VALUE_CHARS:
                    raise ValueTooLarge("the repetition would exceed the value limit")
    elif operator == "**":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and (abs(right) > 1024 or max(left.bit_length(), 1) * abs(right) > MAX_POWER_BITS)
        ):
            raise ValueTooLarge("the power is too large")
    elif operator == "+":
        if (
            isinstance(left, _SIZED)
            and isinstance(right, _SIZED)
            and len(left) + len(right) > MAX_VALUE_CHARS
        ):
            raise ValueTooLarge("the sum would exceed the value limit")
    elif operator == "%" and isinstance(left, str):
        _check_format(left)
        if _text_weight(right, MAX_VALUE_CHARS) + len(left) > MAX_VALUE_CHARS:
            raise ValueTooLarge("the formatted string would exceed the value limit")


class _GuardedCodeGenerator(CodeGenerator):
    """`a ~ b` compiles to a call of the environment's `checked_concat`, which checks sizes first
    (Jinja's own `str_join` is one unchecked step of C code)."""

    def visit_Concat(self, node: jinja_nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class PromptSandbox(ImmutableSandboxedEnvironment):
    """The sandbox plus size limits on what a single step may build."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,
            finalize=_check_printable,  # applied to every `{{ }}` before it is printed
        )
        # No lipsum, cycler, joiner, namespace or dict: data comes from variables only.
        self.globals = {"range": safe_range}
        self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}

    def checked_concat(self, values: tuple[Any, ...]) -> str:
        parts: list[str] = []
        size = 0
        for value in values:
            text = value if isinstance(value, str) else str(_check_printable(value))
            size += len(text)
            if size > MAX_VALUE_CHARS:
                raise ValueTooLarge("the concatenation would exceed the value limit")
            parts.append(text)
        return "".join(parts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _check_size(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # The sandbox hands templates a wrapper of str.format, so check the pattern here.
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in _FORMAT_METHODS:
            _check_format(owner)
        return super().wrap_str_format(value)

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        _check_inputs(args, kwargs)
        _check_str_call(__obj, args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


_ENV = PromptSandbox()


@dataclass(frozen=True)
class Compiled:
    template: Template
    variables: frozenset[str]


def _line_of(exc: BaseException) -> int | None:
    """The template line a runtime error happened on: Jinja rewrites tracebacks so that
    template frames carry the template's file name and line numbers."""
    line = None
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _at(line: int | None) -> str:
    return f" (line {line})" if line else ""


def compile_template(source: str) -> Compiled:
    """Parse and compile `source`; a syntax error is a 422 naming its line."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise ValidationFailed(
            f"the template has {len(source)} characters; at most {MAX_TEMPLATE_CHARS} are allowed"
        )
    try:
        ast = _ENV.parse(source)
        template = _ENV.from_string(ast)
    except TemplateSyntaxError as exc:
        raise ValidationFailed(
            f"template syntax error on line {exc.lineno}: {exc.message}",
            details={"line": exc.lineno, "error": exc.message},
        ) from None
    except RecursionError:  # Jinja's parser and compiler recurse once per nesting level
        raise ValidationFailed(
            "the template nests expressions or blocks too deeply",
            details={"error": "nesting"},
        ) from None
    return Compiled(template, frozenset(meta.find_undeclared_variables(ast)))


def render(compiled: Compiled, variables: Mapping[str, Any], budget: RenderBudget) -> str:
    """Render in the sandbox within `budget`; every failure of the template is a 422 that
    says why and where (a spent budget: `details.limit` names the limit, `details.max` its
    value)."""
    parts: list[str] = []
    size = 0
    max_output = budget.limits.max_output_bytes
    try:
        with budget.enforced():
            for part in compiled.template.generate(dict(variables)):
                size += len(part) if part.isascii() else len(part.encode("utf-8", "replace"))
                if size > max_output:
                    raise RenderAborted("render_output_bytes", max_output)
                parts.append(part)
    except RenderAborted as exc:
        raise _aborted(exc, budget, compiled) from None
    except ValueTooLarge as exc:
        line = _line_of(exc)
        raise ValidationFailed(
            f"the template built a value too large{_at(line)}: {exc}",
            details={"limit": ValueTooLarge.limit, "max": MAX_VALUE_CHARS, "line": line},
        ) from None
    except SecurityError as exc:
        line = _line_of(exc)
        raise ValidationFailed(
            f"the template did something the sandbox forbids{_at(line)}: {exc}",
            details={"line": line, "error": "security"},
        ) from None
    except UndefinedError as exc:
        line = _line_of(exc)
        missing = _UNDEFINED_RE.match(str(exc))
        if missing:
            raise ValidationFailed(
                f"missing variable '{missing.group(1)}'{_at(line)}",
                details={"variable": missing.group(1), "line": line},
            ) from None
        raise ValidationFailed(
            f"undefined value in the template{_at(line)}: {exc}", details={"line": line}
        ) from None
    except Exception as exc:  # the template's own expressions: 1/0, int('x'), ...
        line = _line_of(exc)
        raise ValidationFailed(
            f"the template failed{_at(line)}: {type(exc).__name__}: {exc}",
            details={"line": line, "error": type(exc).__name__},
        ) from None
    return "".join(parts)


_LIMIT_TEXT = {
    "render_operations": "the template ran more than {max} operations",
    "render_timeout_s": "the template rendered for more than {max} s",
    "render_output_bytes": "the rendered prompt exceeds {max} bytes",
}


def _aborted(exc: RenderAborted, budget: RenderBudget, compiled: Compiled) -> Exception:
    if exc.limit == "stopped":
        return DependencyUnavailable(
            f"the render was stopped: {budget.stop_reason}", details={"limit": "stopped"}
        )
    # Jinja maps only `Exception`s back to template lines; this one carries a line of the
    # compiled Python code.
    line = _line_of(exc)
    if line is not None:
        line = compiled.template.get_corresponding_lineno(line)
    maximum = exc.maximum
    return ValidationFailed(
        _LIMIT_TEXT[exc.limit].format(max=maximum) + _at(line),
        details={"limit": exc.limit, "max": maximum, "line": line},
    )


# -- variables schemas ----------------------------------------------------------------------


def check_schema(schema: dict[str, Any]) -> None:
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except schema_exceptions.SchemaError as exc:
        raise ValidationFailed(
            f"variables_schema is not a valid JSON Schema: {exc.message}",
            details={"path": exc.json_path},
        ) from None


def validate_variables(schema: dict[str, Any] | None, variables: Mapping[str, Any]) -> None:
    """A 422 naming the JSON path of the first (best) schema violation."""
    if schema is None:
        return
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    error = schema_exceptions.best_match(cls(schema).iter_errors(dict(variables)))
    if error is not None:
        raise ValidationFailed(
            f"variables do not match the schema at {error.json_path}: {error.message}",
            details={"path": error.json_path, "error": error.message},
        )


# -- defaults -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefaultTemplate:
    name: str
    description: str
    content: str
    variables_schema: dict[str, Any]


_SOURCE_ITEM = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 1},
        "title": {"type": "string"},
        "text": {"type": "string"},
    },
    "required": ["n", "title", "text"],
}

_MESSAGE_ITEM = {
    "type": "object",
    "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
    "required": ["role", "content"],
}

DEFAULT_TEMPLATES: tuple[DefaultTemplate, ...] = (
    DefaultTemplate(
        name="rag.answer",
        description="Grounded answer from numbered sources, citing them as [n]",
        content=(
            "Answer the question using only the numbered sources below. Cite every claim with "
            "the number of its source in square brackets, like [1] or [2][3]. If the sources "
            "do not contain the answer, say that you could not find it in the documents; do "
            "not make anything up.\n"
            "\n"
            "Sources:\n"
            "{% for source in sources %}"
            "[{{ source.n }}] {{ source.title }}\n"
            "{{ source.text }}\n"
            "\n"
            "{% endfor %}"
            "Question: {{ question }}\n"
            "Answer:"
        ),
        variables_schema={
            "type": "object",
            "properties": {
                "question": {"type": "string", "minLength": 1},
                "sources": {"type": "array", "items": _SOURCE_ITEM},
            },
            "required": ["question", "sources"],
        },
    ),
    DefaultTemplate(
        name="agent.system",
        description="System prompt of a tool-using agent",
        content=(
            "You are {{ agent_name | default('a helpful assistant') }}. Work step by step and "
            "be concise.\n"
            "{% if instructions is defined %}\n{{ instructions }}\n{% endif %}"
            "{% if tools is defined and tools %}\n"
            "You can call these tools. Call a tool when it helps answer the request; never "
            "invent a tool's result.\n"
            "{% for tool in tools %}- {{ tool.name }}: {{ tool.description }}\n{% endfor %}"
            "{% endif %}"
            "\nIf you do not know the answer, say so instead of guessing."
        ),
        variables_schema={
            "type": "object",
            "properties": {
                "agent_name": {"type": "string"},
                "instructions": {"type": "string"},
                "tools": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "description": {"type": "string"},
                        },
                        "required": ["name", "description"],
                    },
                },
            },
        },
    ),
    DefaultTemplate(
        name="agent.summarize_memory",
        description="Summary of earlier conversation turns that replaces them in memory",
        content=(
            "Summarize the conversation below so that the summary can replace it in an "
            "assistant's memory. Keep facts, names, numbers, decisions, open questions and the "
            "user's preferences; leave out small talk. Write at most "
            "{{ max_words | default(150) }} words, in the third person, without a preamble.\n"
            "\n"
            "Conversation:\n"
            "{% for message in messages %}{{ message.role }}: {{ message.content }}\n"
            "{% endfor %}"
            "\nSummary:"
        ),
        variables_schema={
            "type": "object",
            "properties": {
                "messages": {"type": "array", "items": _MESSAGE_ITEM},
                "max_words": {"type": "integer", "minimum": 10, "maximum": 2000},
            },
            "required": ["messages"],
        },
    ),
)
