"""One GenAI CLIENT span per gateway call (`chat gpt-4o`), written when the call is settled
(`UsageRecorder.record`), started at the call's start: the usage, cost and finish reasons are
only known then, and one span a call costs less than a span per phase. Fallback stays visible:
each deployment that failed before the one that answered is a `faas.attempt.failed` event.

With `trace_content` (FAAS_TRACE_CONTENT), the prompt and the completion are added as
`gen_ai.user.message` / `gen_ai.choice` events — PII redacted with the ingestion cleaner's
rules first, each at most `CONTENT_LIMIT` characters. Off by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry.context import Context
from opentelemetry.trace import Span, Tracer, set_span_in_context
from opentelemetry.util.types import AttributeValue

from faas.documents import redact
from faas.integrations.genai import (
    CONTENT_LIMIT,
    add_content_event,
    epoch_ns,
    is_tracing,
    mark_error,
    model_span,
    provider_name,
)
from faas.services.gateway_service.accounting import CallRecord, completion_text, stream_text
from faas.shared.config import Settings
from faas.shared.context import Identity

_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
}


class CallTracer:
    """Writes the span of a settled call; build it only when tracing is on."""

    def __init__(self, tracer: Tracer, *, content: bool) -> None:
        self.tracer = tracer
        self.content = content

    def trace(self, identity: Identity, call: CallRecord) -> Context:
        """Write the call's span; the context naming it, for the usage event's headers."""
        attributes = call_attributes(identity, call)
        span = model_span(
            self.tracer,
            api=call.operation,
            model=call.model,
            start_ns=epoch_ns(call.started),
            attributes=attributes,
        )
        try:
            for failure in call.failures or ():
                span.add_event(
                    "faas.attempt.failed",
                    {k: v for k, v in failure.items() if isinstance(v, str | int | float)},
                )
            if self.content:
                _add_content(span, call)
            if call.status == "error":
                mark_error(span, call.error_code or "error")
        finally:
            span.end()
        return set_span_in_context(span)


def call_attributes(identity: Identity, call: CallRecord) -> dict[str, AttributeValue]:
    # Each attribute costs ~2.5 us to record and encode: the defaults (status ok, not streamed,
    # usage from the provider) are left out, and gen_ai.system (deprecated) for provider.name.
    attributes: dict[str, AttributeValue] = {
        "faas.tenant_id": identity.tenant_id,
        "faas.cost_usd": call.cost_usd,
    }
    if call.status != "ok":
        attributes["faas.status"] = call.status
    if call.stream:
        attributes["faas.stream"] = True
    if identity.user_id:
        attributes["faas.user_id"] = identity.user_id
    if call.cached:
        attributes["faas.cache_hit"] = call.cached
    deployment = call.deployment
    if deployment is not None:
        attributes["gen_ai.provider.name"] = provider_name(deployment.provider)
        attributes["faas.deployment"] = deployment.id
        attributes["gen_ai.response.model"] = deployment.model
    usage = call.usage
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if usage.source != "provider":
            attributes["faas.usage_source"] = usage.source
    request = call.request or {}
    for key, name in _REQUEST_PARAMS.items():
        value = request.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    response = call.response if call.response is not None else _stream_head(call)
    if response is not None:
        if isinstance(response.get("model"), str):
            attributes["gen_ai.response.model"] = response["model"]
        if isinstance(response.get("id"), str):
            attributes["gen_ai.response.id"] = response["id"]
        reasons = [
            str(c.get("finish_reason"))
            for c in response.get("choices") or ()
            if isinstance(c, dict) and c.get("finish_reason")
        ]
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
    if call.finish_reasons:  # a stream's, from its last chunks
        attributes["gen_ai.response.finish_reasons"] = call.finish_reasons
    return attributes


def _stream_head(call: CallRecord) -> dict[str, Any] | None:
    """A stream's first chunk names the response's id and model, as a whole answer does."""
    if not call.stream_chunks:
        return None
    try:
        head = orjson.loads(call.stream_chunks[0])
    except orjson.JSONDecodeError:
        return None
    return head if isinstance(head, dict) else None


def _add_content(span: Span, call: CallRecord) -> None:
    messages = (call.request or {}).get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            role = str(message.get("role") or "user")
            add_content_event(span, f"gen_ai.{role}.message", _redacted(_text(message)))
    if call.response is not None:
        add_content_event(span, "gen_ai.choice", _redacted(completion_text(call.response)))
    elif call.stream_chunks:
        add_content_event(span, "gen_ai.choice", _redacted(stream_text(call.stream_chunks)))


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _redacted(text: str) -> str:
    # Redacting before cutting could move a secret across the limit; cut a margin first so
    # the regexes stay bounded, then redact, then the event cuts to the limit.
    return redact(text[: CONTENT_LIMIT * 2])


def call_tracing(
    settings: Settings, tracer: Tracer | None
) -> Callable[[Identity, CallRecord], Context] | None:
    """The recorder's hook writing each call's span, or None when nothing is exported."""
    if tracer is None or not is_tracing(tracer):
        return None
    return CallTracer(tracer, content=settings.trace_content).trace
