"""Tools an agent gets from the MCP servers its tenant registered (`mcp:<server>` in its tool
list): discovered with `tools/list` (kept `DISCOVERY_TTL_S`), offered to the model as
`<server>__<tool>` (OpenAI function names allow no dot), called with `tools/call`.

Every exchange goes through the same rules as the agent's HTTP tools: the server's URL must
pass FAAS_AGENT_HTTP_ALLOWLIST, its name is resolved once per exchange and the connection is
pinned to the checked address (Host and TLS name kept, no redirect followed, no proxy from
the environment); each exchange is bounded in time (`ToolContext.timeout_s` per call) and in
the bytes read (`ToolContext.max_response_bytes`). A server that hangs, fails or answers
garbage becomes a `ToolError` the model hears about, or, while listing, a 502 for the run:
never a crash of the process or a stalled event loop."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp_types as types
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema.validators import Draft202012Validator, validator_for
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

from faas.services.agent_service.mcp_servers import MCP_PREFIX, McpConnection, McpServers
from faas.services.agent_service.tools.base import Tool, ToolContext, ToolError
from faas.services.agent_service.tools.http import USER_AGENT, allowed_target
from faas.shared.context import Identity
from faas.shared.exceptions import UpstreamError
from faas.shared.pinned_fetch import Target

DISCOVERY_TTL_S = 30.0
LIST_TIMEOUT_S = 10.0
MAX_LIST_PAGES = 10
MAX_TOOLS_PER_SERVER = 64
MAX_CACHED_LISTINGS = 1024
# The exchange ends this much before the call's own deadline, so its error (naming the
# server) is the one the model hears rather than the generic tool timeout.
DEADLINE_MARGIN_S = 0.1
SEPARATOR = "__"
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_ERRORS = (MCPError, httpx2.HTTPError, OSError, ValueError, ExceptionGroup)


class _CappedStream(httpx2.AsyncByteStream):
    """A response body that stops with a read error past `limit` bytes."""

    def __init__(
        self, inner: httpx2.AsyncByteStream, limit: int, transport: PinnedTransport
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._transport = transport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for block in self._inner:
            seen += len(block)
            if seen > self._limit:
                # The SDK turns a failed read into its own vaguer error: the transport keeps
                # the reason for `mcp_session` to report.
                self._transport.overflow = f"answered more than {self._limit} bytes"
                raise httpx2.ReadError(self._transport.overflow)
            yield block

    async def aclose(self) -> None:
        await self._inner.aclose()


class PinnedTransport(httpx2.AsyncBaseTransport):
    """Sends every request of one MCP exchange to the checked address of the server's URL,
    and refuses any other origin."""

    def __init__(self, url: str, target: Target, max_bytes: int) -> None:
        self._origin = httpx2.URL(url)
        self._target = target
        self._max_bytes = max_bytes
        self._inner = httpx2.AsyncHTTPTransport(trust_env=False, retries=0)
        self.overflow: str | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if (url.scheme, url.host, url.port) != (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        ):
            raise httpx2.ConnectError(f"{url} is not the registered MCP server's origin")
        request.url = url.copy_with(host=str(self._target.address))
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": self._target.host}
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(stream, self._max_bytes, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True)
class Limits:
    allowlist: Sequence[str]
    timeout_s: float
    max_bytes: int


@asynccontextmanager
async def mcp_session(server: McpConnection, limits: Limits) -> AsyncIterator[ClientSession]:
    """An initialised MCP session with `server` over a pinned, bounded connection."""
    try:
        target = await allowed_target(server.url, limits.allowlist)
    except ToolError as exc:
        raise ToolError(f"MCP server {server.name!r}: {exc}") from exc
    transport = PinnedTransport(server.url, target, limits.max_bytes)
    client = httpx2.AsyncClient(
        transport=transport,
        headers={**server.headers, "User-Agent": USER_AGENT},
        timeout=limits.timeout_s,
        follow_redirects=False,
        trust_env=False,
    )
    try:
        async with (
            client,
            streamable_http_client(server.url, http_client=client) as (read, write),
            ClientSession(read, write, read_timeout_seconds=limits.timeout_s) as session,
        ):
            await session.initialize()
            yield session
    except _ERRORS as exc:
        if transport.overflow is not None:
            raise ToolError(f"MCP server {server.name!r} {transport.overflow}") from exc
        raise


def exposed_name(server: str, tool: str) -> str:
    """`<server>__<tool>`, with characters function names cannot hold replaced."""
    return _NAME_CHARS.sub("_", f"{server}{SEPARATOR}{tool}")[:64]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions[:3])
    return str(exc) or type(exc).__name__


def _result(server: str, tool: str, result: types.CallToolResult) -> Any:
    texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
    if result.is_error:
        raise ToolError(f"{server}{SEPARATOR}{tool} failed: {' '.join(texts) or 'no message'}")
    answer: dict[str, Any] = {"text": "\n".join(texts)}
    if result.structured_content is not None:
        answer["structured"] = result.structured_content
    return answer


class McpTool:
    """One tool of a registered MCP server, as an agent tool."""

    def __init__(self, server: McpConnection, tool: types.Tool, allowlist: Sequence[str]) -> None:
        self.server = server
        self.remote_name = tool.name
        self.name = exposed_name(server.name, tool.name)
        self.description = (tool.description or tool.title or tool.name)[:1024]
        self.allowlist = allowlist
        self.parameters: dict[str, Any] = dict(tool.input_schema)
        self.broken: str | None = None
        try:
            validator_for(self.parameters, default=Draft202012Validator).check_schema(
                self.parameters
            )
        except jsonschema_exceptions.SchemaError as exc:
            # The model still sees the tool; calling it says why it cannot run.
            self.broken = f"declares an invalid input schema ({exc.message})"
            self.parameters = {"type": "object"}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        label = f"MCP server {self.server.name!r}"
        if self.broken is not None:
            raise ToolError(f"{label}: tool {self.remote_name!r} {self.broken}")
        budget = max(ctx.timeout_s - DEADLINE_MARGIN_S, DEADLINE_MARGIN_S)
        limits = Limits(self.allowlist, budget, ctx.max_response_bytes)
        try:
            with anyio.fail_after(budget):
                async with mcp_session(self.server, limits) as session:
                    result = await session.call_tool(self.remote_name, args)
        except TimeoutError as exc:
            raise ToolError(f"{label} timed out after {ctx.timeout_s:g} s") from exc
        except ToolError:
            raise
        except _ERRORS as exc:
            raise ToolError(f"{label} failed: {_describe(exc)}") from exc
        return _result(self.server.name, self.remote_name, result)


class McpToolSource:
    """The tools of the servers an agent lists, each server's listing kept briefly per tenant
    (a registration changed or removed is seen on the next miss)."""

    def __init__(
        self,
        servers: McpServers,
        allowlist: Sequence[str],
        *,
        ttl_s: float = DISCOVERY_TTL_S,
        limits: Limits | None = None,
    ) -> None:
        self.servers = servers
        self.allowlist = allowlist
        self.ttl_s = ttl_s
        self.limits = limits or Limits(allowlist, LIST_TIMEOUT_S, 1024 * 1024)
        self._listed: dict[tuple[str, str, str], tuple[float, list[types.Tool]]] = {}

    async def tools(self, identity: Identity, refs: Sequence[str]) -> dict[str, Tool]:
        """The tools of every `mcp:<server>` among `refs`."""
        found: dict[str, Tool] = {}
        for ref in refs:
            if not ref.startswith(MCP_PREFIX):
                continue
            server = await self.servers.connection(identity.tenant_id, ref[len(MCP_PREFIX) :])
            for listed in await self._list(identity.tenant_id, server):
                tool = McpTool(server, listed, self.allowlist)
                found.setdefault(tool.name, tool)
        return found

    async def _list(self, tenant: str, server: McpConnection) -> list[types.Tool]:
        key = (tenant, server.name, server.url)
        cached = self._listed.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        label = f"MCP server {server.name!r}"
        try:
            with anyio.fail_after(self.limits.timeout_s):
                listed = await self._fetch(server)
        except TimeoutError as exc:
            raise UpstreamError(
                f"{label} did not list its tools within {self.limits.timeout_s:g} s"
            ) from exc
        except ToolError as exc:
            raise UpstreamError(str(exc)) from exc
        except _ERRORS as exc:
            raise UpstreamError(f"{label} could not list its tools: {_describe(exc)}") from exc
        if len(self._listed) >= MAX_CACHED_LISTINGS:
            self._listed = {k: v for k, v in self._listed.items() if v[0] > now}
            if len(self._listed) >= MAX_CACHED_LISTINGS:
                self._listed.clear()
        self._listed[key] = (now + self.ttl_s, listed)
        return listed

    async def _fetch(self, server: McpConnection) -> list[types.Tool]:
        tools: list[types.Tool] = []
        async with mcp_session(server, self.limits) as session:
            cursor: str | None = None
            for _ in range(MAX_LIST_PAGES):
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await session.list_tools(params=params)
                tools += page.tools
                cursor = page.next_cursor
                if cursor is None or len(tools) >= MAX_TOOLS_PER_SERVER:
                    break
        return tools[:MAX_TOOLS_PER_SERVER]
