"""`BusCore`: what both buses do the same way around their transport (subject checks, producer
spans, metrics, job settlement settings, handler dispatch), so that `NatsBus` and
`InProcessBus` only say how a message travels."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TypedDict

from opentelemetry import metrics, trace
from opentelemetry.trace import Tracer

from faas.integrations.bus.base import (
    MSG_ID_HEADER,
    BatchHandler,
    JobHandler,
    Message,
    MessageHandler,
    Subscription,
)
from faas.integrations.bus.handlers import BatchRunner, StreamSpec, run_message_handler
from faas.integrations.bus.metrics import BusMetrics
from faas.integrations.bus.settlement import Delivery, run_job_handler
from faas.integrations.bus.subjects import (
    Prefixer,
    check_subject,
    dlq_subject,
    event_stream_name,
    job_subject,
    safe_name,
    stream_names,
    subject_root,
)
from faas.integrations.bus.workers import Workers
from faas.integrations.otel_messaging import producer_span

log = logging.getLogger("faas.bus")


class BusOptions(TypedDict, total=False):
    """The settings every bus takes (keyword arguments of `NatsBus` and `InProcessBus`)."""

    ack_wait_s: float
    heartbeat_s: float | None
    max_attempts: int
    retry_base_s: float
    retry_max_s: float
    close_grace_s: float
    meter: metrics.Meter | None
    tracer: Tracer | None


class BusCore(ABC):
    """The `MessageBus` methods, written once over the transport hooks a backend implements."""

    backend: str

    def __init__(
        self,
        prefix: str = "",
        *,
        ack_wait_s: float = 30.0,
        heartbeat_s: float | None = None,
        max_attempts: int = 5,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        close_grace_s: float = 10.0,
        meter: metrics.Meter | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.prefixer = Prefixer(prefix)
        self.ack_wait_s = ack_wait_s
        # How often a running job tells the broker it is alive: well inside ack_wait.
        self.heartbeat_s = heartbeat_s or ack_wait_s / 3
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.close_grace_s = close_grace_s
        self.tracer = tracer or trace.get_tracer("faas.bus")
        self.metrics = BusMetrics(meter, self.backend)
        self.jobs_stream, self.dlq_stream = stream_names(self.prefixer.prefix)

    # --- transport hooks ----------------------------------------------------------------

    @abstractmethod
    async def _send(self, subject: str, payload: bytes, headers: dict[str, str]) -> bool:
        """Send an event; False when it was held back (buffered or dropped) instead."""

    @abstractmethod
    async def respond(self, reply: str, payload: bytes, headers: dict[str, str]) -> None: ...

    @abstractmethod
    async def _request(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout_s: float
    ) -> Message: ...

    @abstractmethod
    async def _subscribe(
        self, subject: str, queue: str | None, handler: MessageHandler, workers: Workers
    ) -> Subscription: ...

    @abstractmethod
    def _check_accepting_jobs(self) -> None:
        """Raise `DependencyUnavailable` when a job cannot be queued now."""

    @abstractmethod
    async def _enqueue(
        self, kind: str, job_id: str, payload: bytes, headers: dict[str, str]
    ) -> bool:
        """Queue a job; False when its id is a duplicate within the dedup window."""

    @abstractmethod
    async def _send_dead_letter(self, wire: str, data: bytes, headers: dict[str, str]) -> None: ...

    @abstractmethod
    async def _consume(
        self, kinds: list[str], handler: JobHandler, concurrency: int
    ) -> Subscription: ...

    @abstractmethod
    async def _consume_stream(self, stream: StreamSpec, runner: BatchRunner) -> Subscription: ...

    # --- events -------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        traced: bool = False,
    ) -> None:
        check_subject(subject)
        sent = dict(headers or {})
        with producer_span(self.tracer, subject, sent, traced=traced):
            if not await self._send(subject, payload, sent):
                return
        self.metrics.published(subject_root=subject_root(subject))

    async def subscribe(
        self,
        subject: str,
        handler: MessageHandler,
        *,
        queue: str | None = None,
        concurrency: int = 16,
    ) -> Subscription:
        check_subject(subject, wildcards=True)
        workers = Workers(concurrency, f"subscription {subject}")
        return await self._subscribe(subject, queue, handler, workers)

    async def dispatch(self, workers: Workers, handler: MessageHandler, message: Message) -> None:
        """Hand a delivered message to `handler` in a free worker slot (waiting for one)."""
        await workers.acquire()
        workers.start(
            run_message_handler(handler, message, self.tracer, self.metrics, self.respond)
        )

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 2.0,
    ) -> Message:
        check_subject(subject)
        sent = dict(headers or {})
        with producer_span(self.tracer, subject, sent):
            answer = await self._request(subject, payload, sent, timeout_s)
        return Message(subject, answer.data, answer.headers)

    # --- jobs ---------------------------------------------------------------------------

    async def submit(
        self,
        kind: str,
        payload: bytes,
        *,
        job_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        subject = job_subject(kind)
        check_subject(subject)
        self._check_accepting_jobs()
        sent = dict(headers or {})
        sent[MSG_ID_HEADER] = job_id
        with producer_span(self.tracer, subject, sent):
            queued = await self._enqueue(kind, job_id, payload, sent)
        if queued:
            self.metrics.published(kind=kind)
        else:
            log.info("duplicate job %s ignored", job_id)

    async def dead_letter(self, kind: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish to `dlq.{kind}`, where subscribers (and NATS's DLQ stream) see it."""
        subject = dlq_subject(kind)
        with producer_span(self.tracer, subject, headers):
            await self._send_dead_letter(self.prefixer.wire(subject), data, headers)
        self.metrics.published(kind=kind)

    async def consume(
        self, kinds: Sequence[str], handler: JobHandler, *, concurrency: int = 4
    ) -> Subscription:
        for kind in kinds:
            check_subject(job_subject(kind))
        return await self._consume(list(dict.fromkeys(kinds)), handler, concurrency)

    async def run_job(self, handler: JobHandler, delivery: Delivery) -> None:
        await run_job_handler(
            handler,
            delivery,
            tracer=self.tracer,
            metrics_=self.metrics,
            heartbeat_s=self.heartbeat_s,
            retry_base_s=self.retry_base_s,
            retry_max_s=self.retry_max_s,
        )

    async def consume_stream(
        self,
        stream: str,
        subjects: Sequence[str],
        durable: str,
        handler: BatchHandler,
        *,
        batch: int = 500,
        max_age_s: float = 7 * 24 * 3600.0,
    ) -> Subscription:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        for subject in subjects:
            check_subject(subject, wildcards=True)
        runner = BatchRunner(
            handler,
            safe_name(durable),
            tracer=self.tracer,
            metrics_=self.metrics,
            retry_base_s=self.retry_base_s,
            retry_max_s=self.retry_max_s,
        )
        spec = StreamSpec(
            event_stream_name(self.prefixer.prefix, stream),
            [self.prefixer.wire(s) for s in subjects],
            batch,
            max_age_s,
        )
        return await self._consume_stream(spec, runner)
