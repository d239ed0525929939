"""Agent tools: the `Tool` protocol, argument validation and error capture (`call_tool`), the
built-in tools and tenant-declared HTTP tools.

Every tool acts for `ToolContext.identity` only: service calls carry that identity, and HTTP
tools reach nothing but the hosts of `ToolContext.http_allowlist`, through the same SSRF checks
as URL ingestion (`resolve_public`): the connection goes to the address that was checked,
every redirect hop is checked again, and size and time are bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote, urljoin, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema.validators import Draft202012Validator, validator_for
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from faas.runtime import ServiceClients
from faas.services.agent_service.calculator import CalculatorError, evaluate
from faas.services.ingestion_service.fetch import MAX_REDIRECTS, resolve_public
from faas.shared.context import (
    Identity,
    RequestContext,
    current_context,
    new_id,
    reset_context,
    set_context,
)
from faas.shared.exceptions import FaaSError, ValidationFailed
from faas.shared.http_client import raise_for_error

MAX_ARGUMENTS_CHARS = 100_000
RAG_TEXT_CHARS = 800
USER_AGENT = "faas-agent"
NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$"
# Service answers the model should hear about (bad arguments, missing or foreign resources);
# 401, 429 and 5xx are the platform's problem and propagate to the agent runtime.
TOOL_ERROR_STATUSES = frozenset({400, 403, 404, 406, 409, 413, 415, 422})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class ToolContext:
    identity: Identity
    agent_id: str
    depth: int
    clients: ServiceClients
    call_agent: Callable[[str, str, int], Awaitable[str]]
    http_allowlist: Sequence[str]
    max_depth: int = 3
    timeout_s: float = 10.0
    max_response_bytes: int = 256 * 1024


class ToolError(Exception):
    """A tool failed in a way the model should hear about (fed back as the tool result)."""


class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any: ...


def openai_tool_spec(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def _validator(schema: dict[str, Any]) -> Any:
    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema)


async def call_tool(tool: Tool, arguments_json: str, ctx: ToolContext) -> tuple[Any, str | None]:
    """(result, None) or (None, message for the model). Raises only for platform failures
    (5xx, 401, 429 from services) and bugs."""
    if len(arguments_json) > MAX_ARGUMENTS_CHARS:
        return None, f"arguments longer than {MAX_ARGUMENTS_CHARS} characters"
    try:
        args = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON: {exc}"
    if not isinstance(args, dict):
        return None, "arguments must be a JSON object"
    error = jsonschema_exceptions.best_match(_validator(tool.parameters).iter_errors(args))
    if error is not None:
        return None, f"invalid arguments at {error.json_path}: {error.message}"
    try:
        async with asyncio.timeout(ctx.timeout_s):
            result = await tool.run(args, ctx)
    except ToolError as exc:
        return None, str(exc) or type(exc).__name__
    except TimeoutError:
        return None, f"{tool.name} timed out after {ctx.timeout_s:g} s"
    except FaaSError as exc:
        if exc.status_code in TOOL_ERROR_STATUSES:
            return None, exc.message
        raise
    return result, None


@contextmanager
def _acting_as(identity: Identity) -> Iterator[None]:
    """Service calls forward the request context's identity: make it the tool's."""
    current = current_context()
    if current is not None and current.identity == identity:
        yield
        return
    if current is not None:
        replaced = current.with_identity(identity)
    else:
        replaced = RequestContext(correlation_id=new_id(), request_id=new_id(), identity=identity)
    token = set_context(replaced)
    try:
        yield
    finally:
        reset_context(token)


def _data(response: httpx.Response, service: str) -> Any:
    raise_for_error(response, service)
    body = response.json()
    return body.get("data") if isinstance(body, dict) else None


# -- built-in tools --------------------------------------------------------------------------


class CalculatorTool:
    name = "calculator"
    description = (
        "Evaluate an arithmetic expression exactly: numbers, + - * / // % ** and parentheses, "
        "functions sqrt, log, log10, exp, sin, cos, tan, abs, round, min, max, floor, ceil, "
        "constants pi and e."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 500}},
        "required": ["expression"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        expression = str(args["expression"])
        try:
            result = evaluate(expression)
        except CalculatorError as exc:
            raise ToolError(str(exc)) from exc
        return {"expression": expression, "result": result}


class CurrentTimeTool:
    name = "current_time"
    description = "The current date and time, in an IANA time zone (default UTC)."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "IANA zone such as Europe/Paris",
            }
        },
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        name = str(args.get("timezone") or "UTC")
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolError(f"unknown time zone {name!r}; use an IANA name like UTC") from exc
        now = datetime.now(zone)
        return {"timezone": name, "time": now.isoformat(), "weekday": now.strftime("%A")}


class RagSearchTool:
    name = "rag_search"
    description = "Search the tenant's documents (hybrid keyword and vector search)."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 8000},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
            "collection": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
        },
        "required": ["query"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        body: dict[str, Any] = {
            "query_text": args["query"],
            "top_k": int(args.get("top_k", 5)),
            "mode": "hybrid",
        }
        if args.get("collection"):
            body["collection"] = args["collection"]
        with _acting_as(ctx.identity):
            response = await ctx.clients.get("rag").post("/api/v1/rag/search", json=body)
        data = _data(response, "rag") or {}
        return [
            {
                "title": hit.get("title"),
                "text": str(hit.get("text") or "")[:RAG_TEXT_CHARS],
                "document_id": hit.get("document_id"),
                "score": hit.get("score"),
            }
            for hit in data.get("results") or []
        ]


CACHE_KEY = {"type": "string", "pattern": r"^[A-Za-z0-9._:@-]{1,256}$"}


def _namespace(ctx: ToolContext) -> str:
    return f"agent-{ctx.agent_id}"


class CacheGetTool:
    name = "cache_get"
    description = "Read a value this agent stored earlier with cache_set."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"key": CACHE_KEY},
        "required": ["key"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        key = str(args["key"])
        with _acting_as(ctx.identity):
            response = await ctx.clients.get("cache").get(
                f"/api/v1/cache/{quote(key, safe='')}", params={"namespace": _namespace(ctx)}
            )
        data = _data(response, "cache") or {}
        return {"key": key, "found": bool(data.get("found")), "value": data.get("value")}


class CacheSetTool:
    name = "cache_set"
    description = "Store a JSON value under a key for this agent, optionally with a TTL."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "key": CACHE_KEY,
            "value": {"description": "any JSON value"},
            "ttl_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 30 * 24 * 3600},
        },
        "required": ["key", "value"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        body: dict[str, Any] = {
            "key": args["key"],
            "value": args["value"],
            "namespace": _namespace(ctx),
        }
        if args.get("ttl_s") is not None:
            body["ttl_s"] = args["ttl_s"]
        with _acting_as(ctx.identity):
            response = await ctx.clients.get("cache").post("/api/v1/cache", json=body)
        data = _data(response, "cache") or {}
        return {"key": args["key"], "stored": True, "ttl_s": data.get("ttl_s")}


class CallAgentTool:
    name = "call_agent"
    description = "Delegate a task to another agent of this tenant and get its final answer."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "agent_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "task": {"type": "string", "minLength": 1, "maxLength": 20000},
        },
        "required": ["agent_id", "task"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        if ctx.depth >= ctx.max_depth:
            raise ToolError(
                f"delegation depth limit reached ({ctx.max_depth}); answer without call_agent"
            )
        answer = await ctx.call_agent(str(args["agent_id"]), str(args["task"]), ctx.depth + 1)
        return {"agent_id": args["agent_id"], "answer": answer}


# -- HTTP ------------------------------------------------------------------------------------


def _split_allowlist(entries: Sequence[str]) -> tuple[set[str], list[Network]]:
    hosts: set[str] = set()
    networks: list[Network] = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower().rstrip("."))
    return hosts, networks


async def _checked_target(url: str, allowlist: Sequence[str]) -> tuple[str, str, int, Address]:
    """(scheme, host, port, address to connect to) for an allow-listed URL, else ToolError.

    A host entry admits that name, but its addresses must still be public (a name can be made to
    resolve anywhere); an IP or CIDR entry admits the addresses it contains, private included.
    """
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    hosts, networks = _split_allowlist(allowlist)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if host not in hosts and (
        not networks or (literal is not None and not any(literal in n for n in networks))
    ):
        # Refused without a DNS lookup.
        raise ToolError(f"{host or url!r} is not in this agent's http allow-list")
    try:
        scheme, _, port, address = await resolve_public(url, [str(n) for n in networks])
    except ValidationFailed as exc:
        if "addresses" in exc.details:
            raise ToolError(
                f"{host} resolves to a private, loopback or link-local address that the http "
                "allow-list does not cover"
            ) from exc
        raise ToolError(exc.message) from exc
    if host not in hosts and not any(address in n for n in networks):
        raise ToolError(f"{host!r} is not in this agent's http allow-list")
    return scheme, host, port, address


# A declared tool's host is resolved once when it is created; a resolver this slow leaves the
# judgement to the calls, which check every time anyway.
DECLARED_HOST_TIMEOUT_S = 5.0


async def check_declared_url(url: str, allowlist: Sequence[str]) -> None:
    """Refuses (422 naming `url_template`) a tool URL whose host is, or now resolves to, a
    loopback, private, link-local or metadata address outside the allow-list's networks: the
    rule `_checked_target` applies to each call, applied once more when the tool is declared.
    A name that does not resolve yet is left to the calls."""
    _, networks = _split_allowlist(allowlist)
    try:
        async with asyncio.timeout(DECLARED_HOST_TIMEOUT_S):
            await resolve_public(url, [str(n) for n in networks])
    except TimeoutError:
        return
    except ValidationFailed as exc:
        if "addresses" not in exc.details:
            return
        host = urlsplit(url).hostname
        raise ValidationFailed(
            f"url_template: {host} is or resolves to a private, loopback or link-local address "
            f"({', '.join(exc.details['addresses'])}); only networks listed in "
            "FAAS_AGENT_HTTP_ALLOWLIST may be reached",
            details={"field": "url_template", "addresses": exc.details["addresses"]},
        ) from exc


REDIRECT_TO_GET = frozenset({301, 302, 303})


async def http_fetch(
    ctx: ToolContext,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    content_type: str | None = None,
) -> dict[str, Any]:
    """One bounded HTTP exchange for a tool: allow-listed and SSRF-checked hop by hop, pinned
    to the checked address, at most `max_response_bytes` read (`truncated` says if more)."""
    current, extra = url, dict(headers or {})
    origin = urlsplit(url)[:2]
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, address = await _checked_target(current, ctx.http_allowlist)
        parts = urlsplit(current)
        if urlsplit(current)[:2] != origin:
            extra = {}  # never carry the tenant's credentials to another origin
        ip_host = f"[{address}]" if address.version == 6 else str(address)
        pinned = parts._replace(netloc=f"{ip_host}:{port}").geturl()
        send_headers = {
            **extra,
            "Host": parts.netloc.rpartition("@")[2],
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
        }
        if content is not None and content_type:
            send_headers["Content-Type"] = content_type
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        async with httpx.AsyncClient(
            timeout=ctx.timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            request = client.build_request(
                method, pinned, headers=send_headers, content=content, extensions=extensions
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise ToolError(f"{method} {current} failed: {type(exc).__name__}") from exc
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise ToolError(f"{current} redirected without a Location")
                    current = urljoin(current, location)
                    if response.status_code in REDIRECT_TO_GET and method not in ("GET", "HEAD"):
                        method, content = "GET", None
                    continue
                encoding = response.headers.get("content-encoding", "identity").lower()
                if encoding not in ("identity", ""):
                    raise ToolError(f"{current} answered with unsupported encoding {encoding}")
                body = bytearray()
                truncated = False
                async for block in response.aiter_raw():
                    body += block
                    if len(body) > ctx.max_response_bytes:
                        truncated = True
                        del body[ctx.max_response_bytes :]
                        break
                charset = response.charset_encoding or "utf-8"
                try:
                    text = bytes(body).decode(charset, errors="replace")
                except LookupError:
                    text = bytes(body).decode("utf-8", errors="replace")
                return {
                    "status": response.status_code,
                    "content_type": response.headers.get("content-type"),
                    "url": current,
                    "text": text,
                    "truncated": truncated,
                }
            finally:
                await response.aclose()
    raise ToolError(f"{url} redirected more than {MAX_REDIRECTS} times")


class HttpRequestTool:
    name = "http_request"
    description = (
        "Fetch an http(s) URL on one of the hosts this agent is allowed to reach; returns the "
        "status, content type and (truncated) text of the answer."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": 4096},
            "method": {"type": "string", "enum": ["GET", "POST"], "default": "GET"},
            "body": {"description": "request body: a string is sent as text, else as JSON"},
        },
        "required": ["url"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        method = str(args.get("method") or "GET")
        content: bytes | None = None
        content_type: str | None = None
        if method == "POST" and "body" in args:
            body = args["body"]
            if isinstance(body, str):
                content, content_type = body.encode(), "text/plain; charset=utf-8"
            else:
                content, content_type = json.dumps(body).encode(), "application/json"
        return await http_fetch(
            ctx, method, str(args["url"]), content=content, content_type=content_type
        )


# -- declarative HTTP tools ------------------------------------------------------------------

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
        "x-tenant-id",
        "x-user-id",
    }
)


def _placeholders(template: str, what: str) -> list[str]:
    names = PLACEHOLDER.findall(template)
    for name in names:
        if not PLACEHOLDER_NAME.match(name):
            raise ValueError(f"{what}: {{{name}}} is not a valid placeholder")
    if "{" in PLACEHOLDER.sub("", template) or "}" in PLACEHOLDER.sub("", template):
        raise ValueError(f"{what}: unbalanced braces")
    return names


def not_builtin(name: str) -> str:
    """A tenant tool's name, which cannot be a built-in tool's."""
    if name in BUILTIN_TOOLS:
        raise ValueError(f"{name!r} is the name of a built-in tool")
    return name


def object_schema(value: dict[str, Any]) -> dict[str, Any]:
    """A tool's `parameters`: a valid JSON Schema of "type": "object"."""
    try:
        validator_for(value, default=Draft202012Validator).check_schema(value)
    except jsonschema_exceptions.SchemaError as exc:
        raise ValueError(f"parameters is not a valid JSON Schema: {exc.message}") from exc
    if value.get("type") != "object":
        raise ValueError('parameters must be a JSON Schema of "type": "object"')
    return value


class HttpToolSpec(BaseModel):
    """A tenant-declared tool that calls one HTTP endpoint. `{param}` placeholders in the URL
    (path and query, never the host) and header values are filled from the arguments, URL
    values percent-encoded; for POST and PUT the other arguments are the JSON body."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "http",
                    "name": "order_status",
                    "description": "The status of an order, by its id",
                    "parameters": {
                        "type": "object",
                        "properties": {"order_id": {"type": "string"}},
                        "required": ["order_id"],
                    },
                    "method": "GET",
                    "url_template": "https://shop.internal/api/orders/{order_id}",
                }
            ]
        }
    )

    kind: Literal["http"] = "http"
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1, max_length=1024)
    parameters: dict[str, Any]
    method: Literal["GET", "POST", "PUT", "DELETE"] = "GET"
    url_template: str = Field(min_length=1, max_length=2048)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        return not_builtin(value)

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return object_schema(value)

    @field_validator("url_template")
    @classmethod
    def _url(cls, value: str) -> str:
        _placeholders(value, "url_template")
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

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in FORBIDDEN_HEADERS:
                raise ValueError(f"the {name} header cannot be set")
            if "\r" in header or "\n" in header:
                raise ValueError(f"the {name} header value contains a line break")
            names = _placeholders(header, f"header {name}")
            if names and name.lower() == "authorization":
                raise ValueError("the Authorization header cannot contain placeholders")
        return value

    @model_validator(mode="after")
    def _placeholders_declared(self) -> HttpToolSpec:
        used = set(_placeholders(self.url_template, "url_template"))
        for name, header in self.headers.items():
            used |= set(_placeholders(header, f"header {name}"))
        properties = self.parameters.get("properties") or {}
        required = set(self.parameters.get("required") or [])
        missing = sorted(n for n in used if n not in properties or n not in required)
        if missing:
            raise ValueError(
                f"placeholders {missing} must be declared as required properties of parameters"
            )
        return self


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class DeclarativeHttpTool:
    def __init__(self, spec: HttpToolSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.parameters = spec.parameters

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        spec = self.spec
        used: set[str] = set()

        def fill(template: str, encode: bool) -> str:
            def one(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in args:
                    raise ToolError(f"missing argument {name!r}")
                used.add(name)
                value = _text(args[name])
                if encode:
                    return quote(value, safe="")
                if not value.isascii() or not value.isprintable():
                    raise ToolError(f"argument {name!r} must be printable ASCII in a header")
                return value

            return PLACEHOLDER.sub(one, template)

        url = fill(spec.url_template, True)
        headers = {name: fill(value, False) for name, value in spec.headers.items()}
        content: bytes | None = None
        content_type: str | None = None
        if spec.method in ("POST", "PUT"):
            rest = {k: v for k, v in args.items() if k not in used}
            content, content_type = json.dumps(rest).encode(), "application/json"
        return await http_fetch(
            ctx, spec.method, url, headers=headers, content=content, content_type=content_type
        )


def declarative_http_tool(spec: HttpToolSpec) -> Tool:
    return DeclarativeHttpTool(spec)


BUILTIN_TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        CalculatorTool(),
        CurrentTimeTool(),
        RagSearchTool(),
        CacheGetTool(),
        CacheSetTool(),
        HttpRequestTool(),
        CallAgentTool(),
    )
}
