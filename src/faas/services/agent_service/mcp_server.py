"""faas as an MCP server: `/mcp` (streamable HTTP), served by the process that hosts the agent
service (`faas up`, or `faas serve agent` in a split deployment).

It lives in the agent service because its tools are what agents use (the same typed clients
of RAG, prompts, cache and ML, the same execution and tenant tools), so the platform gains no
layer. The transport is the SDK's `StreamableHTTPSessionManager` in stateless mode with JSON
answers: every POST is one self-contained exchange, no session state is held between
requests, and any replica can answer. Its task group runs from the service's `start` to its
`stop` (the app's lifespan).

The platform's middleware has authenticated the request before it reaches `/mcp` (no token
→ 401 in the platform's error shape); each handler acts as that identity, taken from the
request the transport hands over. A failing tool answers `isError` with the reason; a failing
resource read answers a JSON-RPC error; neither ends the session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote, unquote

import mcp_types as types
import orjson
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema.validators import Draft202012Validator
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.jsonrpc import INVALID_PARAMS
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from faas import __version__
from faas.services.agent_service.mcp_catalog import McpCatalog
from faas.services.agent_service.tools.base import ToolError, acting_as
from faas.shared.context import Identity
from faas.shared.exceptions import FaaSError, Unauthenticated

log = logging.getLogger("faas.agent.mcp")

PATH = "/mcp"
PROMPTS = "faas://prompts/"
DOCUMENTS = "faas://documents/"
PAGE = 50
# The SDK's own limit on a request body; the platform's body limit applies first.
MAX_BODY_BYTES = 4 * 1024 * 1024
Context = ServerRequestContext[Any, Any]


def _identity(ctx: Context) -> Identity:
    request = ctx.request
    state = getattr(request, "scope", {}).get("state") or {}
    identity = state.get("faas_identity")
    if not isinstance(identity, Identity):
        raise MCPError(INVALID_PARAMS, "this MCP endpoint needs an authenticated caller")
    return identity


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _failed(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


class FaasMcpServer:
    def __init__(self, catalog: McpCatalog) -> None:
        self.catalog = catalog
        self.server: Server[Any] = Server(
            "faas",
            version=__version__,
            instructions="faas: RAG, prompt templates, agents, cache and ML models of your "
            "tenant, with your token's permissions.",
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_read_resource=self._read_resource,
        )
        self.manager = StreamableHTTPSessionManager(
            self.server, json_response=True, stateless=True, max_request_body_size=MAX_BODY_BYTES
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Runs the session manager's task group in a task of its own: anyio needs it left in
        the task that entered it, and an app's start-up and shutdown may run in two tasks."""
        ready = asyncio.Event()
        self._stopping = asyncio.Event()

        async def run() -> None:
            async with self.manager.run():
                ready.set()
                await self._stopping.wait()

        self._task = asyncio.create_task(run(), name="faas-mcp-sessions")
        ready_wait = asyncio.create_task(ready.wait())
        await asyncio.wait({self._task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
        ready_wait.cancel()
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None

    def route(self) -> Route:
        """`/mcp` for every method (POST exchanges; GET and DELETE answer as the SDK does)."""
        return Route(PATH, endpoint=_Endpoint(self.manager), include_in_schema=False)

    # -- tools -------------------------------------------------------------------------------

    async def _list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        identity = _identity(ctx)
        listed = await self.catalog.list_tools(identity)
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
                for t in listed
            ]
        )

    async def _call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        identity = _identity(ctx)
        arguments = dict(params.arguments or {})
        try:
            listed = {t.name: t for t in await self.catalog.list_tools(identity)}
            tool = listed.get(params.name)
            if tool is None:
                return _failed(f"unknown tool {params.name!r}; available: {sorted(listed)}")
            error = jsonschema_exceptions.best_match(
                Draft202012Validator(tool.input_schema).iter_errors(arguments)
            )
            if error is not None:
                return _failed(f"invalid arguments at {error.json_path}: {error.message}")
            result = await self.catalog.call(identity, params.name, arguments)
        except ToolError as exc:
            return _failed(str(exc))
        except FaaSError as exc:
            return _failed(f"{exc.code}: {exc.message}")
        except Exception:
            log.exception("MCP tool %s failed", params.name)
            return _failed(f"{params.name} failed with an internal error")
        return types.CallToolResult(
            content=[types.TextContent(text=_text(result))],
            structured_content=result if isinstance(result, dict) else {"result": result},
        )

    # -- resources ---------------------------------------------------------------------------

    async def _list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        """Prompt templates and documents, `PAGE` of each per page (the cursor is the offset)."""
        identity = _identity(ctx)
        offset = _offset(params.cursor if params else None)
        try:
            with acting_as(identity):
                templates = await self.catalog.prompt.list_templates(PAGE, offset)
                documents = await self.catalog.rag.list_documents(PAGE, offset)
        except FaaSError as exc:
            raise MCPError(INVALID_PARAMS, f"{exc.code}: {exc.message}") from exc
        resources = [
            types.Resource(
                uri=PROMPTS + quote(t.name, safe=""),
                name=t.name,
                description=t.description or f"prompt template {t.name}",
                mime_type="application/json",
            )
            for t in templates.items
        ] + [
            types.Resource(
                uri=DOCUMENTS + quote(d.id, safe=""),
                name=d.title,
                description=f"document {d.title} ({d.status}, {d.chunk_count} chunks)",
                mime_type="application/json",
            )
            for d in documents.items
        ]
        more = offset + PAGE < max(templates.total, documents.total)
        return types.ListResourcesResult(
            resources=resources, next_cursor=str(offset + PAGE) if more else None
        )

    async def _read_resource(
        self, ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        identity = _identity(ctx)
        uri = str(params.uri)
        try:
            with acting_as(identity):
                if uri.startswith(PROMPTS):
                    template = await self.catalog.prompt.get_template(unquote(uri[len(PROMPTS) :]))
                    value = template.model_dump(mode="json")
                elif uri.startswith(DOCUMENTS):
                    document = await self.catalog.rag.get_document(unquote(uri[len(DOCUMENTS) :]))
                    value = document.model_dump(mode="json")
                else:
                    raise MCPError(INVALID_PARAMS, f"unknown resource {uri!r}")
        except FaaSError as exc:
            raise MCPError(INVALID_PARAMS, f"{exc.code}: {exc.message}") from exc
        return types.ReadResourceResult(
            contents=[
                types.TextResourceContents(uri=uri, mime_type="application/json", text=_text(value))
            ]
        )


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 9:
        raise MCPError(INVALID_PARAMS, f"invalid cursor {cursor!r}")
    return int(cursor)


class _Endpoint:
    """The session manager as an ASGI endpoint, refusing requests the platform did not
    authenticate (the middleware always does; this keeps the rule next to the handler)."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not isinstance((scope.get("state") or {}).get("faas_identity"), Identity):
            raise Unauthenticated("the MCP endpoint needs a bearer token")
        await self.manager.handle_request(scope, receive, send)
