"""The message bus: `build_bus(settings)` picks `NatsBus` when FAAS_NATS_URL is set, else an
`InProcessBus`; callers type against `MessageBus` and the types in `base.py`."""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.trace import Tracer

from faas.integrations.bus.base import (
    BatchHandler,
    JobDelivery,
    JobHandler,
    Message,
    MessageBus,
    MessageHandler,
    Subscription,
)
from faas.integrations.bus.core import BusOptions
from faas.integrations.bus.memory import InProcessBus
from faas.shared.config import Settings

__all__ = [
    "BatchHandler",
    "JobDelivery",
    "JobHandler",
    "Message",
    "MessageBus",
    "MessageHandler",
    "Subscription",
    "build_bus",
]


def build_bus(
    settings: Settings, *, meter: metrics.Meter | None = None, tracer: Tracer | None = None
) -> MessageBus:
    """`NatsBus` when FAAS_NATS_URL is set, else an `InProcessBus`."""
    common: BusOptions = {
        "ack_wait_s": settings.job_ack_wait_s,
        "max_attempts": settings.job_max_attempts,
        "retry_base_s": settings.job_retry_base_s,
        "retry_max_s": settings.job_retry_max_s,
        "close_grace_s": settings.shutdown_grace_s,
        "meter": meter,
        "tracer": tracer,
    }
    if settings.nats_url:
        from faas.integrations.bus.nats import NatsBus

        return NatsBus(
            settings.nats_url,
            settings.nats_prefix,
            name=settings.service_name,
            **common,
        )
    return InProcessBus(settings.nats_prefix, **common)
