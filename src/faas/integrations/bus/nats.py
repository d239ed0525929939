"""`NatsBus`: the message bus on a NATS server (2.9+ with JetStream).

Events are core NATS publishes (buffered while disconnected); jobs go to a work-queue stream
`{PREFIX}_JOBS` with one durable pull consumer per kind (`nats_jobs.py`), explicit acks,
automatic in-progress heartbeats, nak-with-delay retries and a dead letter (`dlq.{kind}`, also
kept in the `{PREFIX}_DLQ` stream) after `max_attempts` deliveries; `consume_stream` reads
interest-retention streams (`nats_streams.py`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Unpack

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import PubAck, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from faas.integrations.bus.base import JobHandler, Message, MessageHandler, Subscription
from faas.integrations.bus.core import BusCore, BusOptions
from faas.integrations.bus.handlers import BatchRunner, StreamSpec
from faas.integrations.bus.nats_admin import (
    DLQ_MAX_AGE_S,
    add_stream,
    stream_config,
)
from faas.integrations.bus.nats_connection import NatsConnection, close_client
from faas.integrations.bus.nats_events import EventSubscription, OfflineBuffer
from faas.integrations.bus.nats_jobs import JobConsumer, JobConsumerGroup
from faas.integrations.bus.nats_streams import StreamConsumer
from faas.integrations.bus.subjects import job_subject
from faas.integrations.bus.workers import Workers
from faas.shared.backoff import backoff
from faas.shared.exceptions import DependencyUnavailable, UpstreamTimeout

log = logging.getLogger("faas.bus")


class NatsBus(BusCore):
    """A `MessageBus` on a NATS server (2.9+ with JetStream)."""

    backend = "nats"

    def __init__(
        self,
        url: str,
        prefix: str = "",
        *,
        name: str = "faas",
        max_ack_pending: int = 1024,
        buffer_size: int = 10_000,
        connect_timeout_s: float = 2.0,
        reconnect_wait_s: float = 0.5,
        reconnect_max_wait_s: float = 10.0,
        fetch_timeout_s: float = 2.0,
        **options: Unpack[BusOptions],
    ) -> None:
        super().__init__(prefix, **options)
        self.connection = NatsConnection(
            [s.strip() for s in url.split(",") if s.strip()],
            name=name,
            connect_timeout_s=connect_timeout_s,
            reconnect_wait_s=reconnect_wait_s,
            reconnect_max_wait_s=reconnect_max_wait_s,
            on_connect=self._connected,
            on_reconnect=self._reconnected,
        )
        self.max_ack_pending = max_ack_pending
        self.fetch_timeout_s = fetch_timeout_s
        self._buffer = OfflineBuffer(buffer_size, self.metrics)
        self._streams_ready = False
        self._streams_lock = asyncio.Lock()
        self._subs: set[EventSubscription] = set()
        self._groups: set[JobConsumerGroup | StreamConsumer] = set()
        self.event_streams: set[str] = set()  # names of the streams consume_stream created

    # --- connection -----------------------------------------------------------------------

    @property
    def client(self) -> Client | None:
        return self.connection.client

    @property
    def connected(self) -> bool:
        return self.connection.connected

    @property
    def dropped(self) -> int:
        """Events dropped from the offline buffer."""
        return self._buffer.dropped

    @property
    def buffered(self) -> int:
        """Events waiting in the offline buffer."""
        return len(self._buffer)

    def setup_retry_delay(self, failures: int) -> float:
        """How long a consumer waits before setting itself up again after `failures` in a row."""
        return backoff(failures - 1, base_s=self.connection.reconnect_wait_s, cap_s=10.0)

    async def start(self) -> None:
        await self.connection.start()

    async def ping(self) -> bool:
        return await self.connection.ping()

    async def _connected(self, client: Client) -> None:
        for sub in list(self._subs):
            try:
                await sub.attach(client)
            except DependencyUnavailable as exc:  # nats-py subscribes again on reconnect
                log.warning("%s", exc)
        self._buffer.schedule_flush(client)

    async def _reconnected(self, client: Client) -> None:
        self._streams_ready = False  # the server may have restarted without its streams
        self._buffer.schedule_flush(client)

    async def close(self) -> None:
        await self.connection.stop_connecting()
        await asyncio.gather(*(group.unsubscribe() for group in list(self._groups)))
        await asyncio.gather(*(sub.unsubscribe() for sub in list(self._subs)))
        client = self.connection.detach()
        await self._buffer.close(client)
        await close_client(client)
        self._streams_ready = False

    def forget(self, owned: JobConsumerGroup | StreamConsumer | EventSubscription) -> None:
        if isinstance(owned, EventSubscription):
            self._subs.discard(owned)
        else:
            self._groups.discard(owned)

    # --- events ---------------------------------------------------------------------------

    async def _send(self, subject: str, payload: bytes, headers: dict[str, str]) -> bool:
        item = (subject, self.prefixer.wire(subject), payload, headers)
        client = self.client
        # Behind a non-empty buffer a direct publish would overtake older events.
        if self._buffer or client is None or not client.is_connected:
            self._buffer.hold(item, client)
            return False
        try:
            await client.publish(item[1], payload, headers=headers)
        except nats.errors.Error:
            self._buffer.hold(item, client)
            return False
        return True

    async def respond(self, reply: str, payload: bytes, headers: dict[str, str]) -> None:
        await self.connection.require_client().publish(reply, payload, headers=headers)

    async def _subscribe(
        self, subject: str, queue: str | None, handler: MessageHandler, workers: Workers
    ) -> Subscription:
        sub = EventSubscription(self, subject, queue, handler, workers)
        self._subs.add(sub)
        if self.client is not None:  # else attached on the first connect
            try:
                await sub.attach(self.client)
            except BaseException:
                await sub.unsubscribe()
                raise
        return sub

    async def _request(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout_s: float
    ) -> Message:
        client = self.connection.require_client()
        try:
            answer = await client.request(
                self.prefixer.wire(subject), payload, timeout=timeout_s, headers=headers
            )
        except nats.errors.NoRespondersError:
            raise DependencyUnavailable(f"no responders for {subject}") from None
        except TimeoutError:
            raise UpstreamTimeout(f"no reply on {subject} in {timeout_s}s") from None
        except nats.errors.Error as exc:
            raise DependencyUnavailable(f"NATS request failed: {exc}") from exc
        return Message(answer.subject, answer.data, dict(answer.headers or {}))

    # --- jobs -----------------------------------------------------------------------------

    async def add_stream(self, config: StreamConfig) -> None:
        await add_stream(self.connection.jetstream(), config)

    async def ensure_streams(self) -> None:
        """Create (or keep) the jobs work-queue stream and the dead-letter stream."""
        async with self._streams_lock:
            if self._streams_ready:
                return
            wire = self.prefixer.wire
            await self.add_stream(
                stream_config(self.jobs_stream, [wire("jobs.>")], RetentionPolicy.WORK_QUEUE)
            )
            await self.add_stream(
                stream_config(
                    self.dlq_stream, [wire("dlq.>")], RetentionPolicy.LIMITS, DLQ_MAX_AGE_S
                )
            )
            self._streams_ready = True

    def _check_accepting_jobs(self) -> None:
        if not self.connected:
            raise DependencyUnavailable("NATS is not connected; the job was not queued")

    async def _enqueue(
        self, kind: str, job_id: str, payload: bytes, headers: dict[str, str]
    ) -> bool:
        try:
            ack = await self._js_publish(self.prefixer.wire(job_subject(kind)), payload, headers)
        except (TimeoutError, nats.errors.Error) as exc:
            raise DependencyUnavailable(f"job {job_id} was not queued: {exc}") from exc
        return not ack.duplicate

    async def _js_publish(self, wire: str, payload: bytes, headers: dict[str, str]) -> PubAck:
        await self.ensure_streams()
        try:
            return await self.connection.jetstream().publish(wire, payload, headers=headers)
        except nats.js.errors.NoStreamResponseError:
            self._streams_ready = False  # deleted behind our back: create it again, once
            await self.ensure_streams()
            return await self.connection.jetstream().publish(wire, payload, headers=headers)

    async def _send_dead_letter(self, wire: str, data: bytes, headers: dict[str, str]) -> None:
        await self._js_publish(wire, data, headers)

    async def _consume(
        self, kinds: list[str], handler: JobHandler, concurrency: int
    ) -> Subscription:
        # Work-queue consumers must not overlap, so each kind gets its own filtered consumer.
        consumers = [JobConsumer(self, kind, handler, concurrency) for kind in kinds]
        if self.connected:
            for consumer in consumers:
                try:
                    await consumer.setup()
                except Exception as exc:
                    log.warning("consumer for %s not ready yet: %s", consumer.kind, exc)
        for consumer in consumers:
            consumer.start()
        group = JobConsumerGroup(self, consumers)
        self._groups.add(group)
        return group

    async def _consume_stream(self, stream: StreamSpec, runner: BatchRunner) -> Subscription:
        consumer = StreamConsumer(self, stream, runner)
        if self.connected:
            try:
                await consumer.setup()
            except Exception as exc:
                log.warning("stream consumer %s not ready yet: %s", consumer.durable, exc)
        consumer.start()
        self._groups.add(consumer)
        return consumer

    async def queue_depth(self, kind: str | None = None) -> int:
        js = self.connection.jetstream()
        try:
            if kind is None:
                return int((await js.stream_info(self.jobs_stream)).state.messages)
            wire = self.prefixer.wire(job_subject(kind))
            info = await js.stream_info(self.jobs_stream, subjects_filter=wire)
            return int((info.state.subjects or {}).get(wire, 0))
        except NotFoundError:
            return 0
        except (TimeoutError, nats.errors.Error) as exc:
            raise DependencyUnavailable(f"JetStream stream info failed: {exc}") from exc
