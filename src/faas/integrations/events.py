"""Domain events on the bus: subject `{service}.{event}.{tenant}`, identity and codec headers,
an event id for de-duplication. Publishing never fails a request: the bus buffers while NATS
is away, and anything else is logged."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context

from faas.integrations.bus import MessageBus
from faas.integrations.codec import Codec
from faas.integrations.otel_messaging import inject_headers
from faas.shared.clock import utcnow
from faas.shared.context import (
    CORRELATION_HEADER,
    REQUEST_HEADER,
    TENANT_HEADER,
    USER_HEADER,
    current_context,
    trace_id,
)

log = logging.getLogger("faas.events")


def event_subject(service: str, event: str, tenant_id: str) -> str:
    return f"{service}.{event}.{tenant_id}"


class EventPublisher:
    def __init__(self, bus: MessageBus, codec: Codec) -> None:
        self.bus = bus
        self.codec = codec

    async def publish(
        self,
        service: str,
        event: str,
        tenant_id: str,
        data: Mapping[str, Any],
        *,
        trace_context: Context | None = None,
    ) -> str:
        """Publish an event and return its id. `trace_context`: the span the event belongs to,
        carried in its headers instead of a PRODUCER span of the publish."""
        event_id = trace_id()
        ctx = current_context()
        headers = {
            "Content-Type": self.codec.content_type,
            TENANT_HEADER: tenant_id,
            CORRELATION_HEADER: ctx.correlation_id if ctx else event_id,
            REQUEST_HEADER: trace_id(),
            "Nats-Msg-Id": event_id,
        }
        if ctx is not None and ctx.user_id:
            headers[USER_HEADER] = ctx.user_id
        if trace_context is not None:
            inject_headers(headers, trace_context)
        body = {
            "id": event_id,
            "type": f"{service}.{event}",
            "tenant_id": tenant_id,
            "occurred_at": utcnow(),
            "data": dict(data),
        }
        subject = event_subject(service, event, tenant_id)
        try:
            await self.bus.publish(
                subject, self.codec.encode(body), headers, traced=trace_context is not None
            )
        except Exception:
            log.warning("event publish failed", exc_info=True, extra={"subject": subject})
        return event_id
