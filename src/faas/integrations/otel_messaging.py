"""W3C trace context in message headers, and the PRODUCER / CONSUMER spans of the bus."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from faas.integrations.otel import Telemetry

_PROPAGATOR: Final = TraceContextTextMapPropagator()


def inject_headers(headers: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """Add `traceparent` (and `tracestate`) of the current (or given) context; returns `headers`."""
    _PROPAGATOR.inject(headers, context)
    return headers


def extract_context(headers: Mapping[str, str]) -> Context:
    """The remote parent carried by `headers` (case-insensitive names); empty if none."""
    carrier: dict[str, str] = {}
    for key, value in headers.items():
        lowered = key.lower()
        if lowered in ("traceparent", "tracestate"):
            carrier[lowered] = value
    return _PROPAGATOR.extract(carrier) if carrier else Context()


def link_from_headers(headers: Mapping[str, str]) -> Link | None:
    """A link to the trace carried by `headers`, e.g. from a job to its submitting request."""
    span_context = trace.get_current_span(extract_context(headers)).get_span_context()
    return Link(span_context) if span_context.is_valid else None


def _tracer(source: Telemetry | Tracer) -> Tracer:
    return source.tracer if isinstance(source, Telemetry) else source


def _messaging_attributes(subject: str, operation: str, kind: str) -> dict[str, AttributeValue]:
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
    }


@contextmanager
def producer_span(
    source: Telemetry | Tracer,
    subject: str,
    headers: dict[str, str],
    *,
    links: Sequence[Link] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
    traced: bool = False,
) -> Iterator[Span]:
    """A current PRODUCER span `publish {subject}`, injected into `headers` before the body runs.
    `traced`: the publisher already put in `headers` the span the message belongs to (the
    gateway's usage event carries its model call's span), which stands for the send: no span."""
    tracer = _tracer(source)
    if traced:
        yield trace.get_current_span()
        return
    if isinstance(tracer, trace.NoOpTracer):
        # Nothing is exported: the no-op span would be the current one anyway, so only carry
        # the current trace on (the full path measured ~4x this one; a publish per gateway call).
        inject_headers(headers)
        yield trace.get_current_span()
        return
    attrs = _messaging_attributes(subject, "publish", "send")
    attrs.update(attributes or {})
    with tracer.start_as_current_span(
        f"publish {subject}", kind=SpanKind.PRODUCER, attributes=attrs, links=links
    ) as span:
        inject_headers(headers)
        yield span


@contextmanager
def consumer_span(
    source: Telemetry | Tracer,
    subject: str,
    headers: Mapping[str, str] | None,
    *,
    links: Sequence[Link] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """A current CONSUMER span `process {subject}`, child of the context in `headers`."""
    attrs = _messaging_attributes(subject, "process", "process")
    attrs.update(attributes or {})
    with _tracer(source).start_as_current_span(
        f"process {subject}",
        context=extract_context(headers or {}),
        kind=SpanKind.CONSUMER,
        attributes=attrs,
        links=links,
    ) as span:
        yield span
