"""`InProcessBus`: the message bus without a server, with the semantics of `NatsBus`.

Routing state lives in an `InProcessBroker`; buses that share a broker see each other's events
and jobs like clients of one NATS server (e.g. all services of `faas up` in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Unpack

from faas.integrations.bus.base import JobHandler, Message, MessageHandler, Subscription
from faas.integrations.bus.core import BusCore, BusOptions
from faas.integrations.bus.handlers import BatchRunner, StreamSpec
from faas.integrations.bus.memory_broker import Backlog, InProcessBroker, Job, Stored
from faas.integrations.bus.settlement import Delivery
from faas.integrations.bus.subjects import job_subject, subject_matches
from faas.integrations.bus.workers import Workers, stop_task
from faas.shared.exceptions import DependencyUnavailable, UpstreamTimeout


class _LocalSubscription:
    def __init__(
        self,
        bus: InProcessBus,
        pattern: str,
        queue: str | None,
        handler: MessageHandler,
        workers: Workers,
    ) -> None:
        self.wire_pattern = bus.prefixer.wire(pattern)
        self.queue = queue
        self._bus = bus
        self._handler = handler
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._workers = workers
        self._pump = asyncio.create_task(self._run(), name=f"bus-sub {pattern}")

    def deliver(
        self, wire_subject: str, data: bytes, headers: dict[str, str], reply: str | None
    ) -> None:
        local = self._bus.prefixer.local(wire_subject)
        self._inbox.put_nowait(Message(local, data, dict(headers), reply))

    async def _run(self) -> None:
        while True:
            await self._bus.dispatch(self._workers, self._handler, await self._inbox.get())

    async def unsubscribe(self) -> None:
        self._bus.broker.remove(self)
        self._bus.forget(self)
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        await self._workers.drain(self._bus.close_grace_s)


class _LocalDelivery(Delivery):
    def __init__(self, bus: InProcessBus, wire_subject: str, job: Job) -> None:
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
        self, bus: InProcessBus, kinds: list[str], handler: JobHandler, concurrency: int
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
            workers.start(bus.run_job(self._handler, _LocalDelivery(bus, wire, job)))

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
        backlog: Backlog,
        runner: BatchRunner,
        stream: StreamSpec,
    ) -> None:
        self._bus = bus
        self._backlog = backlog
        self._runner = runner
        self._batch = stream.batch
        self._max_age_s = stream.max_age_s
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"bus-stream {runner.durable}")

    def _take(self) -> list[Stored]:
        pending = self._backlog.pending
        oldest = time.monotonic() - self._max_age_s
        while pending and pending[0][0] < oldest:
            pending.popleft()
        return [pending.popleft() for _ in range(min(self._batch, len(pending)))]

    async def _run(self) -> None:
        local = self._bus.prefixer.local
        while not self._stopping:
            items = self._take()
            if not items:
                self._backlog.wake.clear()
                await self._backlog.wake.wait()
                continue
            try:
                delay = await self._runner.run(
                    [Message(local(w), d, dict(h)) for _, w, d, h in items]
                )
            except BaseException:  # cancelled mid-batch: keep it for the next consumer
                self._backlog.pending.extendleft(reversed(items))
                raise
            if delay is not None:
                self._backlog.pending.extendleft(reversed(items))
                await asyncio.sleep(delay)

    async def unsubscribe(self) -> None:
        self._bus.forget(self)
        self._stopping = True
        self._backlog.wake.set()
        await stop_task(self._task, self._bus.close_grace_s if self._runner.handling else 0.0)
        self._backlog.wake.set()  # another consumer of the same durable takes over


_Owned = _LocalSubscription | _LocalConsumer | _LocalStreamConsumer


class InProcessBus(BusCore):
    """A `MessageBus` in this process; see `NatsBus` for the semantics it reproduces."""

    backend = "inprocess"

    def __init__(
        self,
        prefix: str = "",
        *,
        broker: InProcessBroker | None = None,
        stream_backlog_limit: int = 100_000,
        **options: Unpack[BusOptions],
    ) -> None:
        super().__init__(prefix, **options)
        self.broker = broker or InProcessBroker()
        self.stream_backlog_limit = stream_backlog_limit
        self.dropped = 0  # nothing is ever buffered in process
        self._closed = False
        self._owned: set[_Owned] = set()

    @property
    def connected(self) -> bool:
        return not self._closed

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for owned in list(self._owned):
            await owned.unsubscribe()

    def forget(self, owned: _Owned) -> None:
        self._owned.discard(owned)

    async def ping(self) -> bool:
        return self.connected

    async def _send(self, subject: str, payload: bytes, headers: dict[str, str]) -> bool:
        self.broker.route(self.prefixer.wire(subject), payload, headers, None)
        return True

    async def respond(self, reply: str, payload: bytes, headers: dict[str, str]) -> None:
        self.broker.route(reply, payload, headers, None)

    async def _subscribe(
        self, subject: str, queue: str | None, handler: MessageHandler, workers: Workers
    ) -> Subscription:
        sub = _LocalSubscription(self, subject, queue, handler, workers)
        self.broker.add(sub)
        self._owned.add(sub)
        return sub

    async def _request(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout_s: float
    ) -> Message:
        inbox, future = self.broker.open_inbox()
        try:
            if not self.broker.route(self.prefixer.wire(subject), payload, headers, inbox):
                raise DependencyUnavailable(f"no responders for {subject}")
            try:
                return await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                raise UpstreamTimeout(f"no reply on {subject} in {timeout_s}s") from None
        finally:
            self.broker.close_inbox(inbox)

    def _check_accepting_jobs(self) -> None:
        if self._closed:
            raise DependencyUnavailable("the message bus is closed")

    async def _enqueue(
        self, kind: str, job_id: str, payload: bytes, headers: dict[str, str]
    ) -> bool:
        job = Job(job_id, kind, payload, headers)
        return self.broker.enqueue(self.jobs_stream, self.prefixer.wire(job_subject(kind)), job)

    async def _send_dead_letter(self, wire: str, data: bytes, headers: dict[str, str]) -> None:
        self.broker.route(wire, data, headers, None)

    async def _consume(
        self, kinds: list[str], handler: JobHandler, concurrency: int
    ) -> Subscription:
        consumer = _LocalConsumer(self, kinds, handler, concurrency)
        self._owned.add(consumer)
        return consumer

    async def _consume_stream(self, stream: StreamSpec, runner: BatchRunner) -> Subscription:
        backlog = self.broker.durable(
            stream.name,
            stream.wire_subjects,
            runner.durable,
            stream.max_age_s,
            self.stream_backlog_limit,
        )
        consumer = _LocalStreamConsumer(self, backlog, runner, stream)
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
