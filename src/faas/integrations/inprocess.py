"""`InProcessBus`: the message bus without a server, with the semantics of `NatsBus`.

Routing state lives in an `InProcessBroker`; buses that share a broker see each other's events
and jobs like clients of one NATS server (e.g. all services of `faas up` in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.trace import Tracer

from faas.integrations.bus import (
    DEDUP_WINDOW_S,
    MSG_ID_HEADER,
    BatchHandler,
    BusMetrics,
    DeliveryBase,
    JobHandler,
    Message,
    MessageHandler,
    Prefixer,
    Workers,
    batch_failed,
    check_subject,
    dlq_subject,
    event_stream_name,
    interrupted,
    job_subject,
    run_batch_handler,
    run_job_handler,
    run_message_handler,
    stream_names,
    subject_matches,
)
from faas.integrations.otel import producer_span
from faas.shared.exceptions import DependencyUnavailable, UpstreamTimeout

log = logging.getLogger("faas.bus")


@dataclass(eq=False)
class _Job:
    job_id: str
    kind: str
    data: bytes
    headers: dict[str, str]
    deliveries: int = 0


class _JobQueue:
    def __init__(self) -> None:
        self.ready: asyncio.Queue[_Job] = asyncio.Queue()
        self.pending = 0  # submitted and not yet acked or dead-lettered


# A kept stream message: (stored at, wire subject, data, headers).
_Stored = tuple[float, str, bytes, dict[str, str]]


@dataclass(eq=False)
class _Durable:
    """One durable consumer's backlog of a stream (what JetStream keeps for it)."""

    limit: int
    pending: deque[_Stored] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0

    def put(self, item: _Stored) -> None:
        if len(self.pending) >= self.limit:
            self.pending.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("in-process stream backlog full: %d messages dropped", self.dropped)
        self.pending.append(item)
        self.wake.set()


@dataclass(eq=False)
class _Stream:
    name: str
    wire_patterns: list[str]
    max_age_s: float
    durables: dict[str, _Durable] = field(default_factory=dict)


class InProcessBroker:
    """What a NATS server holds: subscriptions, reply inboxes, job queues, the dedup window."""

    def __init__(self) -> None:
        self._subs: list[_LocalSubscription] = []
        self._inboxes: dict[str, asyncio.Future[Message]] = {}
        self._queues: dict[str, _JobQueue] = {}
        self._seen: dict[tuple[str, str], float] = {}
        self._streams: dict[str, _Stream] = {}

    def add(self, sub: _LocalSubscription) -> None:
        self._subs.append(sub)

    def remove(self, sub: _LocalSubscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    def route(
        self, wire_subject: str, data: bytes, headers: dict[str, str], reply: str | None
    ) -> int:
        """Deliver to every plain subscriber and one member per queue group; the receiver count."""
        future = self._inboxes.get(wire_subject)
        if future is not None:
            if not future.done():
                future.set_result(Message(wire_subject, data, dict(headers)))
            return 1
        groups: dict[str, list[_LocalSubscription]] = {}
        count = 0
        for sub in self._subs:
            if not subject_matches(sub.wire_pattern, wire_subject):
                continue
            if sub.queue:
                groups.setdefault(sub.queue, []).append(sub)
            else:
                sub.deliver(wire_subject, data, headers, reply)
                count += 1
        for members in groups.values():
            random.choice(members).deliver(wire_subject, data, headers, reply)
            count += 1
        if self._streams:
            self._store(wire_subject, data, headers)
        return count

    def _store(self, wire_subject: str, data: bytes, headers: dict[str, str]) -> None:
        msg_id = headers.get(MSG_ID_HEADER)
        for stream in self._streams.values():
            if not any(subject_matches(p, wire_subject) for p in stream.wire_patterns):
                continue
            if msg_id and not self.first_seen(stream.name, msg_id):
                continue
            item = (time.monotonic(), wire_subject, data, dict(headers))
            for durable in stream.durables.values():
                durable.put(item)

    def durable(
        self, stream: str, wire_patterns: list[str], name: str, max_age_s: float, limit: int
    ) -> _Durable:
        """The backlog of durable `name` on `stream`, created (keeping from now on) if new."""
        kept = self._streams.setdefault(stream, _Stream(stream, wire_patterns, max_age_s))
        kept.wire_patterns = wire_patterns
        kept.max_age_s = max_age_s
        return kept.durables.setdefault(name, _Durable(limit))

    def first_seen(self, stream: str, msg_id: str) -> bool:
        """Record `msg_id` in the dedup window of `stream`; False when it was already there."""
        now = time.monotonic()
        while self._seen:
            oldest_key, seen_at = next(iter(self._seen.items()))
            if now - seen_at < DEDUP_WINDOW_S:
                break
            del self._seen[oldest_key]
        key = (stream, msg_id)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True

    def open_inbox(self) -> tuple[str, asyncio.Future[Message]]:
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._inboxes[inbox] = future
        return inbox, future

    def close_inbox(self, inbox: str) -> None:
        self._inboxes.pop(inbox, None)

    def job_queue(self, wire_subject: str) -> _JobQueue:
        return self._queues.setdefault(wire_subject, _JobQueue())

    def job_queues(self) -> dict[str, _JobQueue]:
        return self._queues

    def enqueue(self, stream: str, wire_subject: str, job: _Job) -> bool:
        """Queue a new job; False when its id was seen in the dedup window (as JetStream)."""
        if not self.first_seen(stream, job.job_id):
            return False
        queue = self.job_queue(wire_subject)
        queue.pending += 1
        queue.ready.put_nowait(job)
        return True

    def requeue(self, wire_subject: str, job: _Job, delay_s: float) -> None:
        queue = self.job_queue(wire_subject)
        if delay_s > 0:
            asyncio.get_running_loop().call_later(delay_s, queue.ready.put_nowait, job)
        else:
            queue.ready.put_nowait(job)

    def settle(self, wire_subject: str) -> None:
        self.job_queue(wire_subject).pending -= 1


class _LocalSubscription:
    def __init__(
        self,
        bus: InProcessBus,
        pattern: str,
        queue: str | None,
        handler: MessageHandler,
        concurrency: int,
    ) -> None:
        self.wire_pattern = bus.prefixer.wire(pattern)
        self.queue = queue
        self._bus = bus
        self._handler = handler
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._workers = Workers(concurrency, f"subscription {pattern}")
        self._pump = asyncio.create_task(self._run(), name=f"bus-sub {pattern}")

    def deliver(
        self, wire_subject: str, data: bytes, headers: dict[str, str], reply: str | None
    ) -> None:
        local = self._bus.prefixer.local(wire_subject)
        self._inbox.put_nowait(Message(local, data, dict(headers), reply))

    async def _run(self) -> None:
        bus = self._bus
        while True:
            message = await self._inbox.get()
            await self._workers.acquire()
            self._workers.start(
                run_message_handler(self._handler, message, bus.tracer, bus.metrics, bus.respond)
            )

    async def unsubscribe(self) -> None:
        self._bus.broker.remove(self)
        self._bus.forget(self)
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        await self._workers.drain(self._bus.close_grace_s)


class _LocalDelivery(DeliveryBase):
    def __init__(self, bus: InProcessBus, wire_subject: str, job: _Job) -> None:
        super().__init__(
            job_id=job.job_id,
            kind=job.kind,
            data=job.data,
            headers=dict(job.headers),
            attempt=job.deliveries,
            max_attempts=bus.max_attempts,
        )
        self._bus = bus
        self.wire = wire_subject
        self.job = job

    async def _ack(self) -> None:
        self._bus.broker.settle(self.wire)

    async def _retry(self, delay_s: float) -> None:
        self._bus.broker.requeue(self.wire, self.job, delay_s)

    async def _dead_letter(self, headers: dict[str, str]) -> None:
        await self._bus.dead_letter(self.kind, self.data, headers)

    async def _terminate(self) -> None:
        self._bus.broker.settle(self.wire)

    async def _progress(self) -> None:
        return None  # nothing expires in process: a running job is never redelivered


class _LocalConsumer:
    def __init__(
        self, bus: InProcessBus, kinds: Sequence[str], handler: JobHandler, concurrency: int
    ) -> None:
        self._bus = bus
        self._handler = handler
        self._workers = [Workers(concurrency, f"jobs {kind}") for kind in kinds]
        self._pumps = [
            asyncio.create_task(self._pump(kind, workers), name=f"bus-jobs {kind}")
            for kind, workers in zip(kinds, self._workers, strict=True)
        ]

    async def _pump(self, kind: str, workers: Workers) -> None:
        bus = self._bus
        wire = bus.prefixer.wire(job_subject(kind))
        queue = bus.broker.job_queue(wire)
        while True:
            await workers.acquire()
            try:
                job = await queue.ready.get()
            except BaseException:
                workers.release()
                raise
            job.deliveries += 1
            workers.start(self._run(_LocalDelivery(bus, wire, job)))

    async def _run(self, delivery: _LocalDelivery) -> None:
        bus = self._bus
        try:
            await run_job_handler(
                self._handler,
                delivery,
                tracer=bus.tracer,
                metrics_=bus.metrics,
                heartbeat_s=bus.heartbeat_s,
                retry_base_s=bus.retry_base_s,
                retry_max_s=bus.retry_max_s,
            )
        finally:
            if not delivery.settled:  # cancelled at close
                await interrupted(delivery)

    async def unsubscribe(self) -> None:
        self._bus.forget(self)
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for workers in self._workers:
            await workers.drain(self._bus.close_grace_s)


class _LocalStreamConsumer:
    """`consume_stream` in process: batches from the broker-held backlog, redelivered (put back
    at the front) after a growing delay when the handler raises."""

    def __init__(
        self,
        bus: InProcessBus,
        backlog: _Durable,
        durable: str,
        handler: BatchHandler,
        batch: int,
        max_age_s: float,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._bus = bus
        self._backlog = backlog
        self._durable = durable
        self._handler = handler
        self._batch = batch
        self._max_age_s = max_age_s
        self._stopping = False
        self._handling = False
        self._task = asyncio.create_task(self._run(), name=f"bus-stream {durable}")

    def _take(self) -> list[_Stored]:
        pending = self._backlog.pending
        oldest = time.monotonic() - self._max_age_s
        while pending and pending[0][0] < oldest:
            pending.popleft()
        return [pending.popleft() for _ in range(min(self._batch, len(pending)))]

    async def _run(self) -> None:
        bus = self._bus
        failures = 0
        while not self._stopping:
            items = self._take()
            if not items:
                self._backlog.wake.clear()
                await self._backlog.wake.wait()
                continue
            messages = [Message(bus.prefixer.local(w), d, dict(h)) for _, w, d, h in items]
            self._handling = True
            try:
                await run_batch_handler(
                    self._handler, messages, self._durable, bus.tracer, bus.metrics
                )
            except Exception:
                failures += 1
                delay = batch_failed(
                    self._durable, len(items), failures, bus.retry_base_s, bus.retry_max_s
                )
                self._backlog.pending.extendleft(reversed(items))
                await asyncio.sleep(delay)
                continue
            except BaseException:  # cancelled mid-batch: keep it for the next consumer
                self._backlog.pending.extendleft(reversed(items))
                raise
            finally:
                self._handling = False
            failures = 0

    async def unsubscribe(self) -> None:
        self._bus.forget(self)
        self._stopping = True
        self._backlog.wake.set()
        grace = self._bus.close_grace_s if self._handling else 0.0
        done, _ = await asyncio.wait({self._task}, timeout=grace)
        if not done:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._backlog.wake.set()  # another consumer of the same durable takes over


class InProcessBus:
    """A `MessageBus` in this process; see `NatsBus` for the semantics it reproduces."""

    backend = "inprocess"

    def __init__(
        self,
        prefix: str = "",
        *,
        broker: InProcessBroker | None = None,
        ack_wait_s: float = 30.0,
        heartbeat_s: float | None = None,
        max_attempts: int = 5,
        retry_base_s: float = 1.0,
        retry_max_s: float = 300.0,
        close_grace_s: float = 10.0,
        meter: metrics.Meter | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.prefixer = Prefixer(prefix)
        self.broker = broker or InProcessBroker()
        self.ack_wait_s = ack_wait_s
        # How often a running job tells the broker it is alive: well inside ack_wait.
        self.heartbeat_s = heartbeat_s or ack_wait_s / 3
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.close_grace_s = close_grace_s
        self.tracer = tracer or trace.get_tracer("faas.bus")
        self.metrics = BusMetrics(meter, self.backend)
        self.dropped = 0
        self.jobs_stream, _ = stream_names(self.prefixer.prefix)
        self._closed = False
        self._owned: set[_LocalSubscription | _LocalConsumer | _LocalStreamConsumer] = set()

    @property
    def connected(self) -> bool:
        return not self._closed

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for owned in list(self._owned):
            await owned.unsubscribe()

    def forget(self, owned: _LocalSubscription | _LocalConsumer | _LocalStreamConsumer) -> None:
        self._owned.discard(owned)

    async def ping(self) -> bool:
        return self.connected

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        check_subject(subject)
        sent = dict(headers or {})
        with producer_span(self.tracer, subject, sent):
            self.broker.route(self.prefixer.wire(subject), payload, sent, None)
        self.metrics.published(subject_root=subject.split(".", 1)[0])

    async def respond(self, reply: str, payload: bytes, headers: dict[str, str]) -> None:
        self.broker.route(reply, payload, headers, None)

    async def subscribe(
        self,
        subject: str,
        handler: MessageHandler,
        *,
        queue: str | None = None,
        concurrency: int = 16,
    ) -> _LocalSubscription:
        check_subject(subject, wildcards=True)
        sub = _LocalSubscription(self, subject, queue, handler, concurrency)
        self.broker.add(sub)
        self._owned.add(sub)
        return sub

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
        inbox, future = self.broker.open_inbox()
        try:
            with producer_span(self.tracer, subject, sent):
                if not self.broker.route(self.prefixer.wire(subject), payload, sent, inbox):
                    raise DependencyUnavailable(f"no responders for {subject}")
                try:
                    answer = await asyncio.wait_for(future, timeout_s)
                except TimeoutError:
                    raise UpstreamTimeout(f"no reply on {subject} in {timeout_s}s") from None
        finally:
            self.broker.close_inbox(inbox)
        return Message(subject, answer.data, answer.headers)

    async def submit(
        self,
        kind: str,
        payload: bytes,
        *,
        job_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if self._closed:
            raise DependencyUnavailable("the message bus is closed")
        subject = job_subject(kind)
        check_subject(subject)
        sent = dict(headers or {})
        sent[MSG_ID_HEADER] = job_id
        with producer_span(self.tracer, subject, sent):
            job = _Job(job_id, kind, payload, sent)
            if not self.broker.enqueue(self.jobs_stream, self.prefixer.wire(subject), job):
                log.info("duplicate job %s ignored", job_id)
                return
        self.metrics.published(kind=kind)

    async def consume(
        self, kinds: Sequence[str], handler: JobHandler, *, concurrency: int = 4
    ) -> _LocalConsumer:
        for kind in kinds:
            check_subject(job_subject(kind))
        consumer = _LocalConsumer(self, list(dict.fromkeys(kinds)), handler, concurrency)
        self._owned.add(consumer)
        return consumer

    async def consume_stream(
        self,
        stream: str,
        subjects: Sequence[str],
        durable: str,
        handler: BatchHandler,
        *,
        batch: int = 500,
        max_age_s: float = 7 * 24 * 3600.0,
        backlog_limit: int = 100_000,
    ) -> _LocalStreamConsumer:
        for subject in subjects:
            check_subject(subject, wildcards=True)
        backlog = self.broker.durable(
            event_stream_name(self.prefixer.prefix, stream),
            [self.prefixer.wire(s) for s in subjects],
            durable,
            max_age_s,
            backlog_limit,
        )
        consumer = _LocalStreamConsumer(self, backlog, durable, handler, batch, max_age_s)
        self._owned.add(consumer)
        return consumer

    async def queue_depth(self, kind: str | None = None) -> int:
        if kind is not None:
            return self.broker.job_queue(self.prefixer.wire(job_subject(kind))).pending
        root = self.prefixer.wire("jobs.>")
        return sum(
            queue.pending
            for wire, queue in self.broker.job_queues().items()
            if subject_matches(root, wire)
        )

    async def dead_letter(self, kind: str, data: bytes, headers: dict[str, str]) -> None:
        subject = dlq_subject(kind)
        with producer_span(self.tracer, subject, headers):
            self.broker.route(self.prefixer.wire(subject), data, headers, None)
        self.metrics.published(kind=kind)
