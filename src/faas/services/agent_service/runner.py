"""The agent loop: call the model through the gateway's chat API (OpenAI tool format), run the
tool calls it asks for in parallel (each with a timeout, errors fed back to the model), repeat
until it answers or the iteration limit is reached. Every step is recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from opentelemetry.trace import Tracer

from faas.integrations.genai import (
    NOOP_TRACER,
    is_tracing,
    mark_error,
    operation_span,
    tool_attributes,
)
from faas.services.agent_service.models import AgentSpec, Step
from faas.services.agent_service.tools.base import Tool, ToolContext, call_tool, openai_tool_spec
from faas.services.gateway_service.client import GatewayClient, reply_message
from faas.shared.exceptions import UpstreamError

EventSink = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Outcome:
    status: Literal["completed", "max_iterations", "failed"]
    output: str | None
    steps: list[Step] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)  # what the run added
    error: str | None = None
    model_s: float = 0.0
    tools_s: float = 0.0
    total_s: float = 0.0

    @property
    def overhead_s(self) -> float:
        """Time in the framework itself: everything but the model and the tools."""
        return max(0.0, self.total_s - self.model_s - self.tools_s)


def _add_usage(total: dict[str, int], usage: dict[str, Any] | None) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[key] = total.get(key, 0) + int((usage or {}).get(key) or 0)


class AgentRunner:
    def __init__(self, gateway: GatewayClient, tracer: Tracer = NOOP_TRACER) -> None:
        self.gateway = gateway
        self.tracer = tracer

    async def run(
        self,
        spec: AgentSpec,
        messages: list[dict[str, Any]],
        tools: dict[str, Tool],
        ctx: ToolContext,
        *,
        sink: EventSink | None = None,
        recorded: Awaitable[None] | None = None,
    ) -> Outcome:
        """The agent loop. `recorded`: the write of the run's record, awaited before the first
        tool acts (a tool's effects belong to a run on record; the model's first call need not
        wait for it)."""
        started = time.perf_counter()
        outcome = Outcome(status="failed", output=None)
        conversation = list(messages)
        specs = [openai_tool_spec(t) for t in tools.values()]
        try:
            for _ in range(spec.max_iterations):
                message = await self._model_step(spec, conversation, specs, sink, outcome)
                calls = message.get("tool_calls") or []
                if not calls:
                    outcome.status, outcome.output = "completed", message.get("content") or ""
                    return outcome
                if recorded is not None:
                    await recorded
                    recorded = None
                await self._tools_step(calls, tools, ctx, sink, conversation, outcome)
            outcome.status = "max_iterations"
            outcome.error = f"stopped after {spec.max_iterations} iterations without an answer"
            return outcome
        finally:
            outcome.total_s = time.perf_counter() - started

    async def _model_step(
        self,
        spec: AgentSpec,
        conversation: list[dict[str, Any]],
        specs: list[dict[str, Any]],
        sink: EventSink | None,
        outcome: Outcome,
    ) -> dict[str, Any]:
        """One model call, recorded as a step and added to the conversation."""
        t0 = time.perf_counter()
        message, usage = await self._model(spec, conversation, specs, sink)
        elapsed = time.perf_counter() - t0
        outcome.model_s += elapsed
        _add_usage(outcome.usage, usage)
        outcome.steps.append(
            Step(
                type="model",
                index=len(outcome.steps),
                duration_ms=round(elapsed * 1000, 3),
                content=message.get("content"),
                tool_calls=message.get("tool_calls") or None,
                usage=usage,
            )
        )
        conversation.append(message)
        outcome.messages.append(message)
        return message

    async def _tools_step(
        self,
        calls: list[dict[str, Any]],
        tools: dict[str, Tool],
        ctx: ToolContext,
        sink: EventSink | None,
        conversation: list[dict[str, Any]],
        outcome: Outcome,
    ) -> None:
        """The model's tool calls, run in parallel; each recorded as a step and answered with a
        tool message (the error, when there is one)."""
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self._tool(c, tools, ctx, sink) for c in calls))
        outcome.tools_s += time.perf_counter() - t0
        for call, (result, error, duration) in zip(calls, results, strict=True):
            function = call.get("function") or {}
            outcome.steps.append(
                Step(
                    type="tool",
                    index=len(outcome.steps),
                    duration_ms=round(duration * 1000, 3),
                    name=function.get("name"),
                    arguments=function.get("arguments"),
                    result=result,
                    error=error,
                )
            )
            content = orjson.dumps({"error": error} if error is not None else result).decode()
            message = {"role": "tool", "tool_call_id": call.get("id"), "content": content}
            conversation.append(message)
            outcome.messages.append(message)

    async def _tool(
        self,
        call: dict[str, Any],
        tools: dict[str, Tool],
        ctx: ToolContext,
        sink: EventSink | None,
    ) -> tuple[Any, str | None, float]:
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        arguments = str(function.get("arguments") or "{}")
        started = time.perf_counter()
        if sink is not None:
            await sink(
                {"type": "tool_call", "id": call.get("id"), "name": name, "arguments": arguments}
            )
        tool = tools.get(name)
        result: Any = None
        error: str | None
        attributes = tool_attributes(name, call.get("id")) if is_tracing(self.tracer) else None
        with operation_span(self.tracer, f"execute_tool {name}", attributes) as span:
            if tool is None:
                error = f"unknown tool {name!r}; available: {sorted(tools)}"
            else:
                result, error = await call_tool(tool, arguments, ctx)
            if error is not None and span.is_recording():
                mark_error(span, "tool_error")
        if sink is not None:
            await sink(
                {
                    "type": "tool_result",
                    "id": call.get("id"),
                    "name": name,
                    "result": result,
                    "error": error,
                }
            )
        return result, error, time.perf_counter() - started

    async def _model(
        self,
        spec: AgentSpec,
        conversation: list[dict[str, Any]],
        tool_specs: list[dict[str, Any]],
        sink: EventSink | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        body: dict[str, Any] = {
            "model": spec.model,
            "messages": conversation,
            "temperature": spec.temperature,
        }
        if tool_specs:
            body["tools"] = tool_specs
        if sink is None:
            completion = await self.gateway.chat(body)
            return _clean(dict(reply_message(completion))), dict(completion.get("usage") or {})
        content: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        async with self.gateway.stream_chat(body) as chunks:
            async for chunk in chunks:
                if "error" in chunk:
                    raise_stream_error(chunk["error"])
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        content.append(delta["content"])
                        await sink({"type": "token", "content": delta["content"]})
                    for part in delta.get("tool_calls") or []:
                        _merge_call(calls, part)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        return message, usage


def _merge_call(calls: dict[int, dict[str, Any]], part: dict[str, Any]) -> None:
    """Streamed tool calls arrive in pieces keyed by index: id and name once, arguments in
    fragments to concatenate."""
    slot = calls.setdefault(
        int(part.get("index") or 0),
        {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
    )
    if part.get("id"):
        slot["id"] = part["id"]
    function = part.get("function") or {}
    if function.get("name"):
        slot["function"]["name"] += function["name"]
    if function.get("arguments"):
        slot["function"]["arguments"] += function["arguments"]


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    keep = {"role", "content", "tool_calls", "name"}
    return {k: v for k, v in message.items() if k in keep and v is not None}


def raise_stream_error(error: dict[str, Any]) -> None:
    raise UpstreamError(f"the model stream failed: {error.get('message', 'unknown error')}")
