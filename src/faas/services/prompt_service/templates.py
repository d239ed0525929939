"""Compiling and rendering prompt templates in the sandbox (sandbox.py), within a render
budget (budget.py), and checking variables against a template's JSON Schema. Every failure of
a template is a 422 that says what and where."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jsonschema import exceptions as schema_exceptions
from jsonschema import validators

from faas.services.prompt_service.budget import RenderAborted, RenderBudget
from faas.services.prompt_service.sandbox import MAX_VALUE_CHARS, PromptSandbox, ValueTooLarge
from faas.shared.exceptions import DependencyUnavailable, ValidationFailed

MAX_TEMPLATE_CHARS = 100_000
TEMPLATE_FILENAME = "<template>"
_UNDEFINED_RE = re.compile(r"^'([^']+)' is undefined$")

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
