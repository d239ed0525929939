"""What faas offers over MCP: its tools (RAG, prompts, agents, cache, ML, and the tenant's own
tools as `tenant.<name>`) and its resources (prompt templates and documents).

Every tool and resource acts as the MCP caller: services are called through their typed
clients with the caller's identity (so the HTTP API's scopes, tenancy, limits and budgets
apply unchanged), agents run through the same execution as `POST .../execute`, and a
tenant's tools through the same permission check as an agent run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from faas.kernel.clients import ServiceClients
from faas.services.agent_service.access import GeneratorPermissions, Use, forbidden
from faas.services.agent_service.execution import AgentExecution
from faas.services.agent_service.models import parse_tool_spec
from faas.services.agent_service.tool_catalog import ToolCatalog
from faas.services.agent_service.tools.base import ToolContext, ToolError, acting_as, call_tool
from faas.services.agent_service.tools.tenant import build_tool
from faas.services.cache_service.client import CacheClient
from faas.services.cache_service.models import CacheSetRequest
from faas.services.ml_service.client import MlClient
from faas.services.ml_service.models import PredictRequest
from faas.services.prompt_service.client import PromptClient
from faas.services.prompt_service.models import RenderRequest
from faas.services.rag_service.client import RagClient
from faas.services.rag_service.models import QueryRequest, SearchRequest
from faas.shared.context import Identity
from faas.shared.input_rules import validated

TENANT_PREFIX = "tenant."
NAME = {"type": "string", "minLength": 1, "maxLength": 128}
TEXT = {"type": "string", "minLength": 1, "maxLength": 8000}
COLLECTION = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"}
Handler = Callable[[Identity, dict[str, Any]], Awaitable[Any]]


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


# name -> (description, input schema) of the tools every tenant gets.
FAAS_TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "rag_search": (
        "Search the tenant's documents (hybrid keyword and vector search).",
        _object(
            {
                "query": TEXT,
                "top_k": {"type": "integer", "minimum": 1, "maximum": 100},
                "mode": {"enum": ["vector", "keyword", "hybrid"]},
                "collection": COLLECTION,
            },
            "query",
        ),
    ),
    "rag_query": (
        "Answer a question from the tenant's documents, with citations.",
        _object(
            {
                "query": TEXT,
                "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
                "collection": COLLECTION,
            },
            "query",
        ),
    ),
    "prompt_render": (
        "Render a stored prompt template (its production version unless a label or version "
        "is given) with variables.",
        _object(
            {
                "name": NAME,
                "variables": {"type": "object"},
                "label": {"type": "string", "maxLength": 64},
                "version": {"type": "integer", "minimum": 1},
            },
            "name",
        ),
    ),
    "agent_run": (
        "Run one of the tenant's agents on a task and return its answer.",
        _object({"agent_id": NAME, "task": {"type": "string", "minLength": 1}}, "agent_id", "task"),
    ),
    "cache_get": (
        "Read a value from the tenant's cache.",
        _object({"key": NAME, "namespace": NAME}, "key"),
    ),
    "cache_set": (
        "Store a JSON value in the tenant's cache, optionally with a TTL in seconds.",
        _object(
            {
                "key": NAME,
                "value": {"description": "any JSON value"},
                "namespace": NAME,
                "ttl_s": {"type": "number", "exclusiveMinimum": 0},
            },
            "key",
            "value",
        ),
    ),
    "ml_predict": (
        "Predictions of one of the tenant's ML models, for `features` (one row) or `rows`.",
        _object(
            {
                "model": NAME,
                "features": {"type": "object"},
                "rows": {"type": "array", "items": {"type": "object"}},
                "version": {"type": "integer", "minimum": 1},
                "alias": {"type": "string", "maxLength": 64},
            },
            "model",
        ),
    ),
}


@dataclass(frozen=True)
class FaasTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Handler


@dataclass(frozen=True)
class ListedTool:
    name: str
    description: str
    input_schema: dict[str, Any]


class McpCatalog:
    def __init__(
        self,
        clients: ServiceClients,
        execution: AgentExecution,
        tools: ToolCatalog,
        access: GeneratorPermissions,
        http_allowlist: list[str],
    ) -> None:
        self.clients = clients
        self.execution = execution
        self.tools = tools
        self.access = access
        self.http_allowlist = http_allowlist
        self.rag = RagClient(clients)
        self.prompt = PromptClient(clients)
        self.cache = CacheClient(clients)
        self.ml = MlClient(clients)
        self.builtin = {t.name: t for t in self._builtin()}

    async def list_tools(self, identity: Identity) -> list[ListedTool]:
        listed = [ListedTool(t.name, t.description, t.input_schema) for t in self.builtin.values()]
        for row in await self.tools.rows(identity.tenant_id):
            spec = parse_tool_spec(row.spec)
            listed.append(
                ListedTool(f"{TENANT_PREFIX}{spec.name}", spec.description, spec.parameters)
            )
        return listed

    async def call(self, identity: Identity, name: str, arguments: dict[str, Any]) -> Any:
        """The tool's answer as JSON data; `ToolError` or a `FaaSError` when it fails."""
        if name.startswith(TENANT_PREFIX):
            return await self._tenant_tool(identity, name[len(TENANT_PREFIX) :], arguments)
        tool = self.builtin.get(name)
        if tool is None:
            raise ToolError(f"unknown tool {name!r}")
        with acting_as(identity):
            return await tool.handler(identity, arguments)

    async def _tenant_tool(self, identity: Identity, name: str, arguments: dict[str, Any]) -> Any:
        rows = await self.tools.rows(identity.tenant_id, [name])
        if not rows:
            raise ToolError(f"unknown tool {TENANT_PREFIX}{name!r}")
        use = Use("tool", name, "execute")
        if await self.access.denied(identity, [(use, rows[0])]):
            raise forbidden(identity, use)
        tool = build_tool(parse_tool_spec(rows[0].spec))
        ctx = ToolContext(
            identity=identity,
            agent_id="mcp",
            depth=0,
            clients=self.clients,
            call_agent=_no_delegation,
            http_allowlist=self.http_allowlist,
        )
        result, error = await call_tool(tool, orjson.dumps(arguments).decode(), ctx)
        if error is not None:
            raise ToolError(error)
        return result

    def _builtin(self) -> list[FaasTool]:
        handlers: dict[str, Handler] = {
            "rag_search": self._rag_search,
            "rag_query": self._rag_query,
            "prompt_render": self._prompt_render,
            "agent_run": self._agent_run,
            "cache_get": self._cache_get,
            "cache_set": self._cache_set,
            "ml_predict": self._ml_predict,
        }
        return [FaasTool(name, *FAAS_TOOLS[name], handler) for name, handler in handlers.items()]

    async def _rag_search(self, identity: Identity, args: dict[str, Any]) -> Any:
        request = validated(SearchRequest, {**_without(args, "query"), "query_text": args["query"]})
        return (await self.rag.search(request)).model_dump(mode="json")

    async def _rag_query(self, identity: Identity, args: dict[str, Any]) -> Any:
        request = validated(QueryRequest, args)
        return (await self.rag.query(request)).model_dump(mode="json")

    async def _prompt_render(self, identity: Identity, args: dict[str, Any]) -> Any:
        request = validated(RenderRequest, args)
        return (await self.prompt.render(request)).model_dump(mode="json")

    async def _agent_run(self, identity: Identity, args: dict[str, Any]) -> Any:
        view, _ = await self.execution.execute(identity, str(args["agent_id"]), str(args["task"]))
        return {
            "run_id": view.id,
            "status": view.status,
            "output": view.output,
            "error": view.error,
        }

    async def _cache_get(self, identity: Identity, args: dict[str, Any]) -> Any:
        entry = await self.cache.get(str(args["key"]), str(args.get("namespace") or "default"))
        return entry.model_dump(mode="json")

    async def _cache_set(self, identity: Identity, args: dict[str, Any]) -> Any:
        stored = await self.cache.set(validated(CacheSetRequest, args))
        return stored.model_dump(mode="json")

    async def _ml_predict(self, identity: Identity, args: dict[str, Any]) -> Any:
        request = validated(PredictRequest, _without(args, "model"))
        return (await self.ml.predict(str(args["model"]), request)).model_dump(mode="json")


def _without(args: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k != key}


async def _no_delegation(agent_id: str, task: str, depth: int) -> str:
    raise ToolError("call_agent is not available to tools called over MCP; use agent_run")
