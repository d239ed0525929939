"""The built-in tools every agent may list: arithmetic, the time, the tenant's documents, a
per-agent cache, HTTP behind the allow-list and delegation to another agent. Service calls go
through the services' typed clients, as the agent's tool identity."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from faas.services.agent_service.tool_rules import BUILTIN_TOOL_NAMES
from faas.services.agent_service.tools.base import Tool, ToolContext, ToolError, acting_as
from faas.services.agent_service.tools.http import HttpRequestTool
from faas.services.cache_service.client import CacheClient
from faas.services.cache_service.models import CacheSetRequest
from faas.services.rag_service.client import RagClient
from faas.services.rag_service.models import SearchRequest
from faas.shared.expressions import ExpressionError, evaluate
from faas.shared.input_rules import validated

RAG_TEXT_CHARS = 800
CACHE_KEY = {"type": "string", "pattern": r"^[A-Za-z0-9._:@-]{1,256}$"}


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
        except ExpressionError as exc:
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
        request = validated(
            SearchRequest,
            {
                "query_text": args["query"],
                "top_k": int(args.get("top_k", 5)),
                "mode": "hybrid",
                "collection": args.get("collection") or None,
            },
        )
        with acting_as(ctx.identity):
            found = await RagClient(ctx.clients).search(request)
        return [
            {
                "title": hit.title,
                "text": hit.text[:RAG_TEXT_CHARS],
                "document_id": hit.document_id,
                "score": hit.score,
            }
            for hit in found.results
        ]


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
        with acting_as(ctx.identity):
            entry = await CacheClient(ctx.clients).get(key, _namespace(ctx))
        return {"key": key, "found": entry.found, "value": entry.value}


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
        request = validated(
            CacheSetRequest,
            {
                "key": args["key"],
                "value": args["value"],
                "namespace": _namespace(ctx),
                "ttl_s": args.get("ttl_s"),
            },
        )
        with acting_as(ctx.identity):
            stored = await CacheClient(ctx.clients).set(request)
        return {"key": args["key"], "stored": True, "ttl_s": stored.ttl_s}


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
# Tenant tool names are checked against tool_rules.BUILTIN_TOOL_NAMES, which must name these.
assert set(BUILTIN_TOOLS) == BUILTIN_TOOL_NAMES
