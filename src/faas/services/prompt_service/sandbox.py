"""The Jinja2 sandbox prompts are compiled and rendered in.

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
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined
from jinja2 import nodes as jinja_nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

MAX_VALUE_CHARS = 1_000_000
MAX_POWER_BITS = 100_000
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
