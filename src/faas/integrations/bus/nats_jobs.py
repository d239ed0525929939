"""Job consumption on NATS: one durable pull consumer per kind on the jobs work-queue stream,
explicit acks, nak-with-delay retries, and the dead letter of jobs whose worker died on their
last attempt (seen only through JetStream's MAX_DELIVERIES advisory)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from faas.integrations.bus.base import MSG_ID_HEADER, JobHandler
from faas.integrations.bus.nats_admin import server_barrier
from faas.integrations.bus.settlement import Delivery, dead_letter_headers
from faas.integrations.bus.subjects import job_subject, safe_name
from faas.integrations.bus.workers import Workers, stop_task

if TYPE_CHECKING:
    from faas.integrations.bus.nats import NatsBus

log = logging.getLogger("faas.bus")

# How long a pull for several jobs waits when the queue turns out empty after all.
BATCH_WAIT_S = 0.05


class NatsDelivery(Delivery):
    def __init__(self, bus: NatsBus, msg: Msg, kind: str) -> None:
        meta = msg.metadata
        headers = dict(msg.headers or {})
        super().__init__(
            job_id=headers.get(MSG_ID_HEADER) or f"{meta.stream}:{meta.sequence.stream}",
            kind=kind,
            data=msg.data,
            headers=headers,
            attempt=meta.num_delivered,
            max_attempts=bus.max_attempts,
        )
        self._bus = bus
        self.msg = msg

    async def _ack(self) -> None:
        await self.msg.ack()

    async def _retry(self, delay_s: float) -> None:
        await self.msg.nak(delay=delay_s)

    async def _dead_letter(self, headers: dict[str, str]) -> None:
        await self._bus.dead_letter(self.kind, self.data, headers)

    async def _terminate(self) -> None:
        await self.msg.term()

    async def _progress(self) -> None:
        await self.msg.in_progress()


class JobConsumer:
    """One kind's durable pull consumer; processes on any host share it (and the load)."""

    def __init__(self, bus: NatsBus, kind: str, handler: JobHandler, concurrency: int) -> None:
        self._bus = bus
        self.kind = kind
        self.durable = safe_name(kind)
        self._handler = handler
        self._concurrency = concurrency
        self._workers = Workers(concurrency, f"jobs {kind}")
        self._psub: JetStreamContext.PullSubscription | None = None
        self._advisories: NatsSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._fetching = False
        self._backlog = False  # the last pull got all it asked for: more may be waiting

    async def setup(self) -> None:
        bus = self._bus
        await bus.ensure_streams()
        js = bus.connection.jetstream()
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            filter_subject=bus.prefixer.wire(job_subject(self.kind)),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=bus.ack_wait_s,
            max_deliver=bus.max_attempts,
            max_ack_pending=bus.max_ack_pending,
        )
        await js.add_consumer(bus.jobs_stream, config)
        await self._drop_subscriptions()
        self._psub = await js.pull_subscribe_bind(consumer=self.durable, stream=bus.jobs_stream)
        # A job whose worker died on its last attempt is never redelivered nor termed; the
        # MAX_DELIVERIES advisory is the only trace of it. One member of the group handles it.
        self._advisories = await bus.connection.require_client().subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{bus.jobs_stream}.{self.durable}",
            queue=f"faas-dlq-{self.durable}",
            cb=self._on_max_deliveries,
        )
        await server_barrier(bus.connection.require_client())

    async def _drop_subscriptions(self) -> None:
        psub, advisories, self._psub, self._advisories = self._psub, self._advisories, None, None
        for sub in (psub, advisories):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"nats-jobs {self.kind}")

    async def _loop(self) -> None:
        bus = self._bus
        failures = 0
        while not self._stopping:
            if not bus.connected:
                await bus.connection.wait_ready()
            if self._psub is None:
                try:
                    await self.setup()
                except Exception as exc:
                    failures += 1
                    log.warning("consumer for %s not ready: %s", self.kind, exc)
                    await asyncio.sleep(bus.setup_retry_delay(failures))
                    continue
            msgs = await self._fetch()
            if msgs is None:
                failures += 1
                await asyncio.sleep(bus.setup_retry_delay(failures))
                continue
            if not msgs:
                continue
            failures = 0
            if self._stopping:  # hand them straight back to the other workers
                self._workers.release(len(msgs))
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak()
                return
            for msg in msgs:
                self._workers.start(self._run(msg))

    async def _run(self, msg: Msg) -> None:
        await self._bus.run_job(self._handler, NatsDelivery(self._bus, msg, self.kind))

    async def _fetch(self) -> list[Msg] | None:
        """Jobs in reserved worker slots; [] (slots freed) when none came, None on error.

        While jobs are waiting, one pull takes as many as there are free slots, instead of a
        round trip per job. An idle queue gets a long poll for one job: a pull for several
        answers only when all of them came or it expires, which would hold a lone job back.
        """
        psub = self._psub
        assert psub is not None
        await self._workers.acquire()
        slots = 1
        if self._backlog:
            slots += await self._workers.acquire_free(self._concurrency - 1)
        timeout = self._bus.fetch_timeout_s if slots == 1 else BATCH_WAIT_S
        self._fetching = True
        try:
            msgs = list(await psub.fetch(slots, timeout=timeout))
        except TimeoutError:
            self._workers.release(slots)
            self._backlog = False
            return []
        except Exception as exc:
            self._workers.release(slots)
            log.warning("fetching %s jobs failed: %s", self.kind, exc)
            await self._drop_subscriptions()
            return None
        finally:
            self._fetching = False
        self._workers.release(slots - len(msgs))
        self._backlog = len(msgs) == slots
        return msgs

    async def _on_max_deliveries(self, msg: Msg) -> None:
        bus = self._bus
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
            js = bus.connection.jetstream()
            stored = await js.get_msg(bus.jobs_stream, seq)
        except NotFoundError:
            return  # already dead-lettered by another worker
        except Exception:
            log.exception("cannot read the job of a max-deliveries advisory")
            return
        deliveries = int(advisory.get("deliveries", bus.max_attempts))
        headers = dead_letter_headers(
            stored.headers or {}, f"not acknowledged after {deliveries} deliveries", deliveries
        )
        try:
            await bus.dead_letter(self.kind, stored.data or b"", headers)
            await js.delete_msg(bus.jobs_stream, seq)
        except Exception:
            log.exception("dead-lettering job at stream sequence %d failed", seq)
            return
        bus.metrics.failure(kind=self.kind)
        log.warning("job %s (%s) dead-lettered: worker lost", headers.get(MSG_ID_HEADER), self.kind)

    async def stop(self) -> None:
        self._stopping = True
        task = self._task
        if task is not None:
            if not self._fetching:
                task.cancel()
            # A pull request in flight: let it end so no job is left in a dead inbox.
            await stop_task(task, self._bus.fetch_timeout_s + 1)
        # Advisories from here on are for the workers that stay.
        await self._drop_subscriptions()
        await self._workers.drain(self._bus.close_grace_s)


class JobConsumerGroup:
    """The consumers of one `consume` call, stopped together."""

    def __init__(self, bus: NatsBus, consumers: list[JobConsumer]) -> None:
        self._bus = bus
        self._consumers = consumers

    async def unsubscribe(self) -> None:
        self._bus.forget(self)
        await asyncio.gather(*(consumer.stop() for consumer in self._consumers))
