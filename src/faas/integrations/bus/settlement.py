"""How a job delivery is settled on every bus: first settlement wins, a failed run is retried
with backoff until its last attempt and then dead-lettered, and a run cut short at close is
handed back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Final

from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

from faas.integrations.bus.base import JobHandler
from faas.integrations.bus.metrics import BusMetrics
from faas.integrations.bus.subjects import job_subject
from faas.integrations.otel_messaging import consumer_span
from faas.shared.backoff import backoff

log = logging.getLogger("faas.bus")

FAILURE_REASON_HEADER: Final = "X-Failure-Reason"
ATTEMPTS_HEADER: Final = "X-Job-Attempts"
_MAX_REASON_CHARS: Final = 1000


def dead_letter_headers(headers: Mapping[str, str], reason: str, attempts: int) -> dict[str, str]:
    """The job's headers plus why and after how many deliveries it was given up."""
    # A header value cannot hold line breaks, and failure reasons can be long.
    out = dict(headers)
    out[FAILURE_REASON_HEADER] = " ".join(reason.split())[:_MAX_REASON_CHARS] or "failed"
    out[ATTEMPTS_HEADER] = str(attempts)
    return out


class Delivery(ABC):
    """A `JobDelivery` whose first settlement (ack, retry, fail) wins; later ones do nothing.

    Each bus says how to ack, redeliver, dead-letter, drop and heartbeat one of its jobs.
    """

    def __init__(
        self,
        *,
        job_id: str,
        kind: str,
        data: bytes,
        headers: dict[str, str],
        attempt: int,
        max_attempts: int,
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self.data = data
        self.headers = headers
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.settled = False

    def _settle(self, action: str) -> bool:
        if self.settled:
            log.debug("job %s already settled; %s ignored", self.job_id, action)
            return False
        self.settled = True
        return True

    async def ack(self) -> None:
        if self._settle("ack"):
            await self._ack()

    async def retry_later(self, delay_s: float) -> None:
        if self.attempt >= self.max_attempts:
            await self.fail(f"gave up after {self.attempt} attempts")
        elif self._settle("retry"):
            await self._retry(max(0.0, delay_s))

    async def fail(self, reason: str) -> None:
        if self._settle("fail"):
            await self._dead_letter(dead_letter_headers(self.headers, reason, self.attempt))
            await self._terminate()

    async def in_progress(self) -> None:
        if not self.settled:
            await self._progress()

    @abstractmethod
    async def _ack(self) -> None: ...

    @abstractmethod
    async def _retry(self, delay_s: float) -> None: ...

    @abstractmethod
    async def _dead_letter(self, headers: dict[str, str]) -> None: ...

    @abstractmethod
    async def _terminate(self) -> None: ...

    @abstractmethod
    async def _progress(self) -> None: ...


async def _interrupted(delivery: Delivery) -> None:
    """Settle a delivery whose handler was cancelled (the worker is stopping): redeliver it at
    once, or dead-letter it when this was its last attempt, since nothing would redeliver it."""
    if delivery.attempt >= delivery.max_attempts:
        await delivery.fail(f"worker stopped during attempt {delivery.attempt}")
    else:
        await delivery.retry_later(0)


async def _heartbeat(delivery: Delivery, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await delivery.in_progress()
        except Exception:
            log.warning("heartbeat for job %s failed", delivery.job_id, exc_info=True)


async def run_job_handler(
    handler: JobHandler,
    delivery: Delivery,
    *,
    tracer: Tracer,
    metrics_: BusMetrics,
    heartbeat_s: float,
    retry_base_s: float,
    retry_max_s: float,
) -> None:
    """Run a job handler with heartbeats; settle what the handler left unsettled.

    Returning normally acks; raising retries with exponential backoff, or dead-letters on the
    last attempt; a cancelled run (the bus is closing) is handed back.
    """
    try:
        await _run_traced(
            handler,
            delivery,
            tracer=tracer,
            metrics_=metrics_,
            heartbeat_s=heartbeat_s,
            retry_delay_s=backoff(delivery.attempt - 1, base_s=retry_base_s, cap_s=retry_max_s),
        )
    finally:
        if not delivery.settled:  # cancelled at close
            with contextlib.suppress(Exception):
                await _interrupted(delivery)


async def _run_traced(
    handler: JobHandler,
    delivery: Delivery,
    *,
    tracer: Tracer,
    metrics_: BusMetrics,
    heartbeat_s: float,
    retry_delay_s: float,
) -> None:
    attributes: dict[str, AttributeValue] = {
        "messaging.message.id": delivery.job_id,
        "faas.job.kind": delivery.kind,
        "faas.job.attempt": delivery.attempt,
    }
    with consumer_span(tracer, job_subject(delivery.kind), delivery.headers, attributes=attributes):
        beat = asyncio.create_task(_heartbeat(delivery, heartbeat_s))
        try:
            await handler(delivery)
        except Exception as exc:
            metrics_.failure(kind=delivery.kind)
            log.warning(
                "job %s (%s) attempt %d/%d failed",
                delivery.job_id,
                delivery.kind,
                delivery.attempt,
                delivery.max_attempts,
                exc_info=True,
            )
            if delivery.attempt >= delivery.max_attempts:
                await delivery.fail(f"{type(exc).__name__}: {exc}")
            else:
                await delivery.retry_later(retry_delay_s)
        else:
            await delivery.ack()
            metrics_.consumed(kind=delivery.kind)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
