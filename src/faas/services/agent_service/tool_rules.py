"""The rules a tenant tool's declaration must pass (see `HttpToolSpec` and
`ExpressionToolSpec` in models.py), as annotated types the specs are built from."""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema.validators import Draft202012Validator, validator_for
from pydantic import AfterValidator, Field

from faas.shared.context import TENANT_HEADER, USER_HEADER

TOOL_NAME = r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$"
# The names of the built-in tools (tools/builtin.py), which a tenant tool cannot take.
BUILTIN_TOOL_NAMES = frozenset(
    {
        "calculator",
        "current_time",
        "rag_search",
        "cache_get",
        "cache_set",
        "http_request",
        "call_agent",
    }
)
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PLACEHOLDER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "cookie",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "proxy-authorization",
        "accept-encoding",
        TENANT_HEADER.lower(),
        USER_HEADER.lower(),
    }
)
VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
NUMERIC_TYPES = frozenset({"number", "integer"})


def placeholders(template: str, what: str) -> list[str]:
    """The `{name}` placeholders of a URL or header template."""
    names = PLACEHOLDER.findall(template)
    for name in names:
        if not PLACEHOLDER_NAME.match(name):
            raise ValueError(f"{what}: {{{name}}} is not a valid placeholder")
    if "{" in PLACEHOLDER.sub("", template) or "}" in PLACEHOLDER.sub("", template):
        raise ValueError(f"{what}: unbalanced braces")
    return names


def _not_builtin(name: str) -> str:
    if name in BUILTIN_TOOL_NAMES:
        raise ValueError(f"{name!r} is the name of a built-in tool")
    return name


def _object_schema(value: dict[str, Any]) -> dict[str, Any]:
    """A tool's `parameters`: a valid JSON Schema of "type": "object"."""
    try:
        validator_for(value, default=Draft202012Validator).check_schema(value)
    except jsonschema_exceptions.SchemaError as exc:
        raise ValueError(f"parameters is not a valid JSON Schema: {exc.message}") from exc
    if value.get("type") != "object":
        raise ValueError('parameters must be a JSON Schema of "type": "object"')
    return value


def _url_template(value: str) -> str:
    placeholders(value, "url_template")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("url_template must be an http or https URL")
    if not parts.netloc or "{" in parts.netloc or "}" in parts.netloc:
        raise ValueError("the host (and port) of url_template cannot contain placeholders")
    if "@" in parts.netloc:
        raise ValueError("url_template cannot carry credentials; use a header")
    if not parts.hostname:
        raise ValueError("url_template has no host")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked for it
    except ValueError as exc:
        raise ValueError(f"url_template: {exc}") from exc
    return value


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name, header in value.items():
        if not HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in FORBIDDEN_HEADERS:
            raise ValueError(f"the {name} header cannot be set")
        if "\r" in header or "\n" in header:
            raise ValueError(f"the {name} header value contains a line break")
        names = placeholders(header, f"header {name}")
        if names and name.lower() == "authorization":
            raise ValueError("the Authorization header cannot contain placeholders")
    return value


ToolName = Annotated[str, Field(pattern=TOOL_NAME), AfterValidator(_not_builtin)]
ToolDescription = Annotated[str, Field(min_length=1, max_length=1024)]
ObjectSchema = Annotated[dict[str, Any], AfterValidator(_object_schema)]
UrlTemplate = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_url_template)]
Headers = Annotated[dict[str, str], AfterValidator(_headers)]
# An MCP server's name, short enough that `<server>__<tool>` leaves room for the tool's name.
MCP_SERVER_NAME = r"^[a-z][a-z0-9_-]{0,31}$"


def _mcp_url(value: str) -> str:
    if "{" in value or "}" in value:
        raise ValueError("url cannot contain braces")
    try:
        return _url_template(value)
    except ValueError as exc:
        raise ValueError(str(exc).replace("url_template", "url")) from exc


McpUrl = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_mcp_url)]


def _numeric_parameters(value: dict[str, Any]) -> dict[str, Any]:
    """An expression's variables are its parameters: plain identifiers, numbers only."""
    for name, schema in (value.get("properties") or {}).items():
        if not VARIABLE.match(name) or keyword.iskeyword(name):
            raise ValueError(f"parameter {name!r} must be a plain identifier")
        kind = schema.get("type") if isinstance(schema, dict) else None
        if not isinstance(kind, str) or kind not in NUMERIC_TYPES:
            raise ValueError(f'parameter {name!r} must have "type": "number" or "integer"')
    return value


NumericParameters = Annotated[ObjectSchema, AfterValidator(_numeric_parameters)]
