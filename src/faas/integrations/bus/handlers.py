"""Running event and stream-batch handlers the same way on every bus: inside a CONSUMER span,
counted, with failures logged (events) or turned into a redelivery delay (batches)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from opentelemetry.trace import Tracer

from faas.integrations.bus.base import BatchHandler, Message, MessageHandler
from faas.integrations.bus.metrics import BusMetrics
from faas.integrations.bus.subjects import subject_root
from faas.integrations.otel_messaging import consumer_span, inject_headers, link_from_headers
from faas.shared.backoff import backoff

log = logging.getLogger("faas.bus")

Responder = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


async def run_message_handler(
    handler: MessageHandler,
    message: Message,
    tracer: Tracer,
    metrics_: BusMetrics,
    respond: Responder,
) -> None:
    """Run an event handler inside a CONSUMER span; log (never raise) its errors."""
    with consumer_span(tracer, message.subject, message.headers):
        try:
            result = await handler(message)
        except Exception:
            metrics_.failure(subject_root=subject_root(message.subject))
            log.exception("handler for %s failed", message.subject)
            return
        metrics_.consumed(subject_root=subject_root(message.subject))
        if result is not None and message.reply:
            try:
                await respond(message.reply, result, inject_headers({}))
            except Exception:
                log.exception("reply to %s failed", message.subject)


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a durable consumer reads: which stream and subjects, how many messages at a time,
    and how old a kept message may grow."""

    name: str  # the JetStream stream name, prefix included
    wire_subjects: list[str]
    batch: int
    max_age_s: float


class BatchRunner:
    """Runs one durable consumer's batch handler and decides when a failed batch comes back:
    after a delay growing with the consecutive failures."""

    def __init__(
        self,
        handler: BatchHandler,
        durable: str,
        *,
        tracer: Tracer,
        metrics_: BusMetrics,
        retry_base_s: float,
        retry_max_s: float,
    ) -> None:
        self._handler = handler
        self.durable = durable
        self._tracer = tracer
        self._metrics = metrics_
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._failures = 0
        self.handling = False  # a batch is in the handler (worth waiting for at close)

    async def run(self, messages: Sequence[Message]) -> float | None:
        """Handle `messages`; None when done, else the delay before they are redelivered."""
        self.handling = True
        try:
            await self._traced(messages)
        except Exception:
            self._failures += 1
            delay = backoff(self._failures - 1, base_s=self._retry_base_s, cap_s=self._retry_max_s)
            log.exception(
                "%s: a batch of %d failed; redelivered in %.1fs",
                self.durable,
                len(messages),
                delay,
            )
            return delay
        finally:
            self.handling = False
        self._failures = 0
        return None

    async def _traced(self, messages: Sequence[Message]) -> None:
        """One CONSUMER span linked to (up to 32 of) the messages' producer spans."""
        links = [link for m in messages[:32] if (link := link_from_headers(m.headers)) is not None]
        root = subject_root(messages[0].subject) if messages else self.durable
        with consumer_span(
            self._tracer,
            f"{self.durable} batch",
            None,
            links=links,
            attributes={"messaging.batch.message_count": len(messages)},
        ):
            try:
                await self._handler(messages)
            except Exception:
                self._metrics.failure(subject_root=root)
                raise
        self._metrics.consumed(subject_root=root, count=len(messages))
