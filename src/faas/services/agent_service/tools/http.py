"""HTTP from agents: the built-in `http_request` and the tools a tenant declares with an
`HttpToolSpec`, both through the shared SSRF-pinned fetch behind the agent's allow-list.

FAAS_AGENT_HTTP_ALLOWLIST decides what may be reached: a host name entry admits that name,
whose addresses must still be public (a name can be made to resolve anywhere); an IP or CIDR
entry admits the addresses it contains, private ones included. A URL outside it is refused
before any DNS lookup."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from faas.services.agent_service.models import HttpToolSpec
from faas.services.agent_service.tool_rules import PLACEHOLDER
from faas.services.agent_service.tools.base import ToolContext, ToolError
from faas.shared.exceptions import UpstreamError, ValidationFailed
from faas.shared.pinned_fetch import (
    Address,
    Allowlist,
    Request,
    Target,
    UnsafeAddress,
    pinned_fetch,
    read_capped,
    resolve,
)

SETTING = "FAAS_AGENT_HTTP_ALLOWLIST"
USER_AGENT = "faas-agent"
# A declared tool's host is resolved once when it is created; a resolver this slow leaves the
# judgement to the calls, which check every time anyway.
DECLARED_HOST_TIMEOUT_S = 5.0


def _networks_only(allowlist: Allowlist) -> Allowlist:
    """What may be reached by address: the listed networks (listed names must stay public)."""
    return Allowlist(networks=allowlist.networks)


async def _checked_target(url: str, allowlist: Allowlist) -> Target:
    """The target of an allow-listed URL, else ToolError."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    listed = host in allowlist.hosts
    if not listed and (
        not allowlist.networks or (literal is not None and not allowlist.covers(literal))
    ):
        raise ToolError(f"{host or url!r} is not in this agent's http allow-list")
    try:
        target = await resolve(url, _networks_only(allowlist), setting=SETTING)
    except UnsafeAddress as exc:
        raise ToolError(
            f"{host} resolves to a private, loopback or link-local address that the http "
            "allow-list does not cover"
        ) from exc
    except ValidationFailed as exc:
        raise ToolError(exc.message) from exc
    if not listed and not allowlist.covers(target.address):
        raise ToolError(f"{host!r} is not in this agent's http allow-list")
    return target


async def allowed_target(url: str, allowlist: Sequence[str]) -> Target:
    """Where a connection to `url` may go under the allow-list (the checked address to pin),
    else ToolError saying why: the rule of every HTTP call an agent makes."""
    return await _checked_target(url, Allowlist.parse(allowlist))


async def check_declared_url(url: str, allowlist: Sequence[str]) -> None:
    """Refuses (422 naming `url_template`) a tool URL whose host is, or now resolves to, a
    loopback, private, link-local or metadata address outside the allow-list's networks: the
    rule each call applies, applied once more when the tool is declared. A name that does not
    resolve yet is left to the calls."""
    try:
        async with asyncio.timeout(DECLARED_HOST_TIMEOUT_S):
            await resolve(url, _networks_only(Allowlist.parse(allowlist)), setting=SETTING)
    except TimeoutError:
        return
    except UnsafeAddress as exc:
        raise ValidationFailed(
            f"url_template: {exc.host} is or resolves to a private, loopback or link-local "
            f"address ({', '.join(exc.addresses)}); only networks listed in {SETTING} may be "
            "reached",
            details={"field": "url_template", "addresses": exc.addresses},
        ) from exc
    except ValidationFailed:
        return


async def http_fetch(
    ctx: ToolContext,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    content_type: str | None = None,
) -> dict[str, Any]:
    """One bounded HTTP exchange for a tool, at most `max_response_bytes` read (`truncated`
    says if more). `headers` (the tenant's credentials) never follow a redirect elsewhere."""
    allowlist = Allowlist.parse(ctx.http_allowlist)

    async def check(hop: str) -> Target:
        return await _checked_target(hop, allowlist)

    async def read(final: str, response: httpx.Response) -> dict[str, Any]:
        body, truncated = await read_capped(final, response, ctx.max_response_bytes)
        try:
            text = body.decode(response.charset_encoding or "utf-8", errors="replace")
        except LookupError:
            text = body.decode("utf-8", errors="replace")
        return {
            "status": response.status_code,
            "content_type": response.headers.get("content-type"),
            "url": final,
            "text": text,
            "truncated": truncated,
        }

    request = Request(method, url, dict(headers or {}), content, content_type)
    try:
        return await pinned_fetch(
            request, check=check, read=read, user_agent=USER_AGENT, timeout_s=ctx.timeout_s
        )
    except UpstreamError as exc:
        raise ToolError(exc.message) from exc


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


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class DeclarativeHttpTool:
    """A tenant's `HttpToolSpec`: its templates filled from the arguments."""

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
