"""Spans after the OpenTelemetry GenAI semantic conventions: model calls (`chat gpt-4o`),
agent runs (`invoke_agent support`), tool calls (`execute_tool search`), retrievals
(`rag.search`) and prompt renders (`prompt.render`).

Every helper takes the service's tracer, which is `trace.NoOpTracer` when nothing is exported
(see `Telemetry`): then no span object is built and no attribute dict either. Content
(prompts, completions) goes on spans as events only through `add_content_event`, which bounds
its size; redaction is the caller's (the gateway applies the ingestion cleaner's rules).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

CONTENT_LIMIT: Final = 8 * 1024  # characters of one content event
NOOP_TRACER: Final = trace.NoOpTracer()

# gen_ai.operation.name of each gateway surface (the spec's names; the surface stays in faas.api)
OPERATIONS: Final[Mapping[str, str]] = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "rerank": "rerank",
}
# The value of gen_ai.system / gen_ai.provider.name for faas's provider names.
PROVIDERS: Final[Mapping[str, str]] = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "litellm": "litellm",
}


def is_tracing(tracer: Tracer) -> bool:
    """False for the no-op tracer: callers then skip building attributes altogether."""
    return not isinstance(tracer, trace.NoOpTracer)


def epoch_ns(perf_started: float) -> int:
    """A `time.perf_counter()` reading as a span start time (epoch nanoseconds)."""
    return time.time_ns() - int((time.perf_counter() - perf_started) * 1e9)


def model_span(
    tracer: Tracer,
    *,
    api: str,
    model: str,
    start_ns: int,
    attributes: dict[str, AttributeValue],
) -> Span:
    """A CLIENT span `{operation} {model}` for one gateway call, started at `start_ns`."""
    operation = OPERATIONS.get(api, api)
    attributes["gen_ai.operation.name"] = operation
    attributes["gen_ai.request.model"] = model
    attributes["faas.api"] = api
    return tracer.start_span(
        f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes, start_time=start_ns
    )


def provider_name(provider: str) -> str:
    return PROVIDERS.get(provider, provider)


def mark_error(span: Span, error: BaseException | str) -> None:
    if isinstance(error, BaseException):
        span.record_exception(error)
        kind = str(getattr(error, "code", "") or type(error).__qualname__)
    else:
        kind = error
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))


@contextmanager
def operation_span(
    tracer: Tracer,
    name: str,
    attributes: dict[str, AttributeValue] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A current span around a block (agent run, tool call, retrieval, render); an exception
    marks it failed and propagates. With the no-op tracer this yields a non-recording span."""
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            if span.is_recording():
                mark_error(span, exc)
            raise


def bounded(text: str, limit: int = CONTENT_LIMIT) -> tuple[str, bool]:
    """`text` cut to `limit` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def add_content_event(
    span: Span, name: str, text: str, extra: Mapping[str, Any] | None = None
) -> None:
    """A content event (`gen_ai.user.message`, `gen_ai.choice`, ...) of at most
    `CONTENT_LIMIT` characters; `faas.truncated` says when it was cut."""
    content, cut = bounded(text)
    attributes: dict[str, AttributeValue] = {"content": content, "faas.truncated": cut}
    for key, value in (extra or {}).items():
        if isinstance(value, str | int | float | bool):
            attributes[key] = value
    span.add_event(name, attributes)


def tool_attributes(name: str, call_id: Any) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.type": "function",
    }
    if isinstance(call_id, str):
        attributes["gen_ai.tool.call.id"] = call_id
    return attributes


def agent_attributes(
    agent_id: str, name: str, model: str, session_id: str | None
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": agent_id,
        "gen_ai.agent.name": name,
        "gen_ai.request.model": model,
    }
    if session_id:
        attributes["gen_ai.conversation.id"] = session_id
        attributes["faas.session_id"] = session_id
    return attributes
