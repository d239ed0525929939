"""The platform's one rule for what a request may carry, checked once at the edge.

faas stores what it accepts (SQLite, PostgreSQL, Redis, NATS) and sends it back as JSON
(orjson). Input that one of them cannot hold used to be accepted and then fail deep inside a
service as a 500. So every request is held to what all of them can carry, and refused with 422
naming the field otherwise:

- JSON bodies are strict JSON, nested at most 64 deep: no `NaN`/`Infinity`, no number that
  overflows a double (`1e999`), no integer outside 64 bits (-2**63 .. 2**64-1; orjson, which
  encodes every response, carries no more). Rejecting is the rule rather than carrying big
  integers as strings or floats: a silent change of a caller's number is worse than a clear
  error.
- No text holds NUL (U+0000): PostgreSQL refuses it in `text`, SQLite stores it; refusing it
  everywhere makes both databases behave the same.
- The URL path and query hold no control characters (C0 and DEL; a query value may hold tab
  and line breaks): ids and names end up in internal URLs, keys and log lines.

Integers that reach an integer column (offsets, versions) are bounded tighter by their own
schema (`MAX_DB_INT`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ValidationError

from faas.shared.exceptions import UndecodableBody, ValidationFailed

MIN_JSON_INT = -(2**63)
MAX_JSON_INT = 2**64 - 1
# Ids and names that other services put in URLs: no control characters (the URL rule below
# covers them in paths and queries; this covers them where they come in a body).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
# orjson encodes at most 254 levels; no request of ours needs a quarter of that.
MAX_JSON_DEPTH = 64
# The largest integer any integer column of ours holds (a PostgreSQL `integer`).
MAX_DB_INT = 2**31 - 1

# An integer literal of 19+ digits may be outside 64 bits (2**63 has 19 digits); strings that
# merely hold long digit runs match too and are then cleared by the exact check. Found by
# mapping digits to "0" and everything else to " " and searching for 19 zeros: ~2 ms a MB,
# where the regex `\d{19,}` took 17 ms a MB (held the GIL for 116 ms on a 6.8 MB body).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGITS = b"0" * 19
_NUL_ESCAPE = b"\\u0000"
_PATH_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUERY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

Path = tuple[str | int, ...]


def field_name(path: Path) -> str:
    """`("messages", 0, "content")` → `messages.0.content`; the body itself is `body`."""
    return ".".join(str(p) for p in path) or "body"


def _walk(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), key  # keys are text too (NUL checks)
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index))


def _refuse(path: Path, message: str, rule: str) -> ValidationFailed:
    field = field_name(path)
    return ValidationFailed(f"{field}: {message}", details={"field": field, "rule": rule})


def _check_exact(body: bytes) -> None:
    """The slow, exact pass: stdlib json keeps every integer and non-finite float as written."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return  # not JSON at all: the caller reports orjson's own message
    for path, item in _walk(value):
        if isinstance(item, float) and not math.isfinite(item):
            raise _refuse(path, "numbers must be finite (no NaN, Infinity or overflow)", "finite")
        if isinstance(item, int) and not MIN_JSON_INT <= item <= MAX_JSON_INT:
            raise _refuse(path, "integers must fit in 64 bits", "int64")


def _check_nul(value: Any) -> None:
    for path, item in _walk(value):
        if isinstance(item, str) and "\x00" in item:
            raise _refuse(path, "text must not contain NUL (\\u0000)", "no_nul")


def _check_depth(value: Any) -> None:
    """Iterative, so a body nested thousands deep cannot exhaust the interpreter's stack."""
    stack: list[tuple[Any, Path]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise _refuse(path, f"JSON nests at most {MAX_JSON_DEPTH} levels deep", "depth")
        if isinstance(item, dict):
            stack.extend((v, (*path, k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(item))


def check_json_body(body: bytes) -> Any:
    """The decoded body; `UndecodableBody` (400) when it is not JSON at all, `ValidationFailed`
    (422) naming the first field that breaks the rule."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        _check_exact(body)  # NaN, Infinity, 1e999: name the field
        raise UndecodableBody(
            f"request body is not valid JSON: {exc}", details={"field": "body", "rule": "json"}
        ) from exc
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
        _check_depth(value)  # only bodies with that many brackets can nest that deep
    if _LONG_DIGITS in body.translate(_DIGITS_ONLY):
        _check_exact(body)
    if _NUL_ESCAPE in body:
        _check_nul(value)
    return value


def check_url(path: str, query_string: bytes) -> None:
    """Refuse control characters in the (decoded) path and in query names and values."""
    if _PATH_CONTROL.search(path):
        raise _refuse(("path",), "control characters are not allowed", "no_control")
    if not query_string:
        return
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return  # the framework reports malformed queries itself
    for name, value in pairs:
        if _QUERY_CONTROL.search(name) or _QUERY_CONTROL.search(value):
            raise _refuse((name,), "control characters are not allowed", "no_control")


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any) -> M:
    """`model` built from `data` inside a service (a merge of stored and new values, say):
    a `ValidationFailed` naming the field, never a pydantic error escaping as a 500."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_name(tuple(first["loc"]))
        raise ValidationFailed(
            f"{field}: {first['msg']}", details={"field": field, "rule": first["type"]}
        ) from exc
