"""The message bus: the `MessageBus` protocol, `NatsBus` (nats-py, JetStream for jobs) and
`InProcessBus`, chosen by `build_bus`. One contract suite proves both behave the same.

NatsBus in short: events are core NATS publishes (buffered while disconnected); jobs go to a
work-queue stream `{PREFIX}_JOBS` with one durable pull consumer per kind, explicit acks, automatic
in-progress heartbeats, nak-with-delay retries and a dead letter (`dlq.{kind}`, also kept in the
`{PREFIX}_DLQ` stream) after `max_attempts` deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
import nats.micro
from nats.aio.client import Client, Server
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.micro.request import Request
from opentelemetry import metrics, trace
from opentelemetry.trace import Tracer

from faas.integrations.bus import (
    DEDUP_WINDOW_S,
    MSG_ID_HEADER,
    BatchHandler,
    BusMetrics,
    DeliveryBase,
    JobDelivery,
    JobHandler,
    Message,
    MessageBus,
    MessageHandler,
    Prefixer,
    Subscription,
    Workers,
    batch_failed,
    check_subject,
    dead_letter_headers,
    dlq_subject,
    event_stream_name,
    interrupted,
    job_subject,
    retry_delay,
    run_batch_handler,
    run_job_handler,
    run_message_handler,
    safe_name,
    stream_names,
)
from faas.integrations.inprocess import InProcessBroker, InProcessBus
from faas.integrations.otel import producer_span
from faas.shared.config import Settings
from faas.shared.exceptions import DependencyUnavailable, UpstreamTimeout

__all__ = [
    "InProcessBroker",
    "InProcessBus",
    "JobDelivery",
    "JobHandler",
    "Message",
    "MessageBus",
    "MessageHandler",
    "NatsBus",
    "Subscription",
    "build_bus",
    "register_micro_service",
]

log = logging.getLogger("faas.bus")

DLQ_MAX_AGE_S: Final = 7 * 24 * 3600.0
DROP_WARN_EVERY: Final = 1000
CONFIRM_TIMEOUT_S: Final = 5  # nats-py's flush() takes whole seconds
_STREAM_CONFIG_CHANGED: Final = 10058  # JetStream: name in use with a different configuration


async def server_barrier(client: Client, timeout_s: int = CONFIRM_TIMEOUT_S) -> None:
    """Return once the server has processed every command this client sent before the call
    (a SUB, say, so that messages anyone publishes afterwards reach it).

    One `flush()` is not enough: nats-py writes its PING straight to the socket, ahead of the
    commands still queued for its flusher task, so the PONG can come back before the server
    has read a SUB sent just before. The first round trip lets the flusher hand the queue to
    the socket; the second PING goes out behind it, and the server answers in order.
    """
    await client.flush(timeout=timeout_s)
    await client.flush(timeout=timeout_s)


class NatsBus:
    """A `MessageBus` on a NATS server (2.9+ with JetStream)."""

    backend = "nats"

    def __init__(
        self,
        url: str,
        prefix: str = "",
        *,
        name: str = "faas",
        ack_wait_s: float = 30.0,
        heartbeat_s: float | None = None,
        max_attempts: int = 5,
        retry_base_s: float = 1.0,
        retry_max_s: float = 300.0,
        max_ack_pending: int = 1024,
        buffer_size: int = 10_000,
        connect_timeout_s: float = 2.0,
        reconnect_wait_s: float = 0.5,
        reconnect_max_wait_s: float = 10.0,
        fetch_timeout_s: float = 2.0,
        close_grace_s: float = 10.0,
        meter: metrics.Meter | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.servers = [s.strip() for s in url.split(",") if s.strip()]
        self.prefixer = Prefixer(prefix)
        self.name = name
        self.ack_wait_s = ack_wait_s
        # How often a running job tells the broker it is alive: well inside ack_wait.
        self.heartbeat_s = heartbeat_s or ack_wait_s / 3
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.max_ack_pending = max_ack_pending
        self.buffer_size = max(0, buffer_size)
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_wait_s = reconnect_wait_s
        self.reconnect_max_wait_s = reconnect_max_wait_s
        self.fetch_timeout_s = fetch_timeout_s
        self.close_grace_s = close_grace_s
        self.tracer = tracer or trace.get_tracer("faas.bus")
        self.metrics = BusMetrics(meter, self.backend)
        self.jobs_stream, self.dlq_stream = stream_names(self.prefixer.prefix)
        self.dropped = 0
        self.client: Client | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._connect_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._buffer: deque[tuple[str, str, bytes, dict[str, str]]] = deque()
        self._streams_ready = False
        self._streams_lock = asyncio.Lock()
        self._subs: set[_NatsSubscription] = set()
        self._groups: set[_ConsumerGroup | _StreamConsumer] = set()
        self.event_streams: set[str] = set()  # names of the streams consume_stream created

    # --- connection -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    @property
    def buffered(self) -> int:
        """Events waiting in the offline buffer."""
        return len(self._buffer)

    async def start(self) -> None:
        """Connect; when NATS is unreachable keep trying in the background instead of failing."""
        if self.client is not None or self._connect_task is not None:
            return
        self._closing = False
        if not await self._try_connect():
            log.warning("NATS at %s is unreachable; retrying in the background", self._where())
            self._connect_task = asyncio.create_task(self._connect_loop(), name="nats-connect")

    async def _try_connect(self) -> bool:
        client = Client()
        options: dict[str, Any] = {
            "servers": self.servers,
            "name": self.name,
            "connect_timeout": self.connect_timeout_s,
            # nats-py's connect() retries forever at a fixed interval unless told to give up;
            # we retry (with backoff) ourselves and switch its reconnect logic on once connected.
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0,  # reconnect delays come from _next_server
            "reconnect_to_server_handler": self._next_server,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        try:
            await client.connect(**options)
        except Exception as exc:
            log.debug("NATS connect failed: %s", exc)
            with contextlib.suppress(Exception):
                await client.close()
            return False
        client.options["allow_reconnect"] = True
        client.options["max_reconnect_attempts"] = -1
        self.client = client
        self._js = client.jetstream()
        self._ready.set()
        url = client.connected_url
        log.info("connected to NATS at %s", f"{url.hostname}:{url.port}" if url else "?")
        for sub in list(self._subs):
            try:
                await sub.attach(client)
            except DependencyUnavailable as exc:  # nats-py subscribes again on reconnect
                log.warning("%s", exc)
        self._schedule_flush()
        return True

    def _where(self) -> str:
        """The servers without their credentials, for logs."""
        return ", ".join(urlsplit(server).netloc.rpartition("@")[2] for server in self.servers)

    async def _connect_loop(self) -> None:
        delay = self.reconnect_wait_s
        attempts = 1
        while not self._closing:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            if await self._try_connect():
                log.info("connected to NATS after %d attempts", attempts + 1)
                return
            attempts += 1
            if attempts % 10 == 0:
                log.warning("NATS still unreachable after %d attempts", attempts)
            delay = min(self.reconnect_max_wait_s, delay * 2)

    def _next_server(
        self, servers: list[Server], _info: dict[str, Any]
    ) -> tuple[Server | None, float]:
        """Reconnect backoff: the least-tried server, after a delay growing with its failures."""
        server = min(servers, key=lambda s: s.reconnects)
        wait = self.reconnect_wait_s * 2.0 ** min(server.reconnects, 16)
        return server, min(self.reconnect_max_wait_s, wait) * random.uniform(0.8, 1.2)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self.client is None:  # a failed first connect, or close()
            return
        self._ready.clear()
        if not self._closing:
            log.warning("disconnected from NATS; buffering events until it is back")

    async def _on_reconnected(self) -> None:
        self._ready.set()
        self._streams_ready = False  # the server may have restarted without its streams
        log.info("reconnected to NATS")
        self._schedule_flush()

    async def close(self) -> None:
        self._closing = True
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
            self._connect_task = None
        await asyncio.gather(*(group.unsubscribe() for group in list(self._groups)))
        await asyncio.gather(*(sub.unsubscribe() for sub in list(self._subs)))
        if self._flush_task is not None:
            with contextlib.suppress(Exception):
                await self._flush_task
        client, self.client, self._js = self.client, None, None
        if client is not None:
            if client.is_connected:
                await self._flush_buffer(client)
                with contextlib.suppress(Exception):
                    await client.flush(timeout=2)
            with contextlib.suppress(Exception):
                await client.close()
        if self._buffer:
            log.warning("%d buffered events were never sent to NATS", len(self._buffer))
            self._buffer.clear()
        self._ready.clear()
        self._streams_ready = False

    async def ping(self) -> bool:
        client = self.client
        if client is None or not client.is_connected:
            return False
        try:
            await client.flush(timeout=1)
        except Exception:
            return False
        return True

    def _require_client(self) -> Client:
        client = self.client
        if client is None or not client.is_connected:
            raise DependencyUnavailable("NATS is not connected")
        return client

    # --- events ---------------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        check_subject(subject)
        sent = dict(headers or {})
        with producer_span(self.tracer, subject, sent):
            item = (subject, self.prefixer.wire(subject), payload, sent)
            client = self.client
            # Behind a non-empty buffer a direct publish would overtake older events.
            if self._buffer or client is None or not client.is_connected:
                self._hold(item)
                return
            try:
                await client.publish(item[1], payload, headers=sent)
            except nats.errors.Error:
                self._hold(item)
                return
        self.metrics.published(subject_root=subject.split(".", 1)[0])

    def _hold(self, item: tuple[str, str, bytes, dict[str, str]]) -> None:
        if len(self._buffer) >= self.buffer_size:
            if self._buffer:
                self._buffer.popleft()
                self._buffer.append(item)
            self.dropped += 1
            self.metrics.dropped()
            if self.dropped % DROP_WARN_EVERY == 1:
                log.warning(
                    "NATS offline buffer full (%d): %d events dropped so far",
                    self.buffer_size,
                    self.dropped,
                )
        else:
            self._buffer.append(item)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        client = self.client
        if not self._buffer or client is None or not client.is_connected:
            return
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_buffer(client), name="nats-flush")

    async def _flush_buffer(self, client: Client) -> None:
        sent = 0
        while self._buffer and client.is_connected:
            subject, wire, payload, headers = self._buffer[0]
            try:
                await client.publish(wire, payload, headers=headers)
            except nats.errors.Error as exc:
                log.warning("flushing buffered events stopped: %s", exc)
                break
            self._buffer.popleft()
            self.metrics.published(subject_root=subject.split(".", 1)[0])
            sent += 1
        if sent:
            log.info("sent %d buffered events to NATS", sent)

    async def respond(self, reply: str, payload: bytes, headers: dict[str, str]) -> None:
        await self._require_client().publish(reply, payload, headers=headers)

    async def subscribe(
        self,
        subject: str,
        handler: MessageHandler,
        *,
        queue: str | None = None,
        concurrency: int = 16,
    ) -> _NatsSubscription:
        check_subject(subject, wildcards=True)
        sub = _NatsSubscription(self, subject, queue, handler, concurrency)
        self._subs.add(sub)
        if self.client is not None:  # else attached on the first connect
            try:
                await sub.attach(self.client)
            except BaseException:
                await sub.unsubscribe()
                raise
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
        client = self._require_client()
        sent = dict(headers or {})
        with producer_span(self.tracer, subject, sent):
            try:
                answer = await client.request(
                    self.prefixer.wire(subject), payload, timeout=timeout_s, headers=sent
                )
            except nats.errors.NoRespondersError:
                raise DependencyUnavailable(f"no responders for {subject}") from None
            except TimeoutError:
                raise UpstreamTimeout(f"no reply on {subject} in {timeout_s}s") from None
            except nats.errors.Error as exc:
                raise DependencyUnavailable(f"NATS request failed: {exc}") from exc
        return Message(subject, answer.data, dict(answer.headers or {}))

    # --- jobs -----------------------------------------------------------------------------

    def _jetstream(self) -> JetStreamContext:
        self._require_client()
        assert self._js is not None
        return self._js

    async def ensure_streams(self) -> None:
        """Create (or keep) the jobs work-queue stream and the dead-letter stream."""
        async with self._streams_lock:
            if self._streams_ready:
                return
            await self._add_stream(
                StreamConfig(
                    name=self.jobs_stream,
                    subjects=[self.prefixer.wire("jobs.>")],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                    duplicate_window=DEDUP_WINDOW_S,
                )
            )
            await self._add_stream(
                StreamConfig(
                    name=self.dlq_stream,
                    subjects=[self.prefixer.wire("dlq.>")],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                    max_age=DLQ_MAX_AGE_S,
                    duplicate_window=DEDUP_WINDOW_S,
                )
            )
            self._streams_ready = True

    async def _add_stream(self, config: StreamConfig) -> None:
        js = self._jetstream()
        try:
            await js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_CONFIG_CHANGED:
                raise
            try:
                await js.update_stream(config)
            except BadRequestError as update_exc:
                # e.g. a retention change, which JetStream refuses: keep the existing stream.
                log.warning("stream %s kept as it is: %s", config.name, update_exc)

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
        if not self.connected:
            raise DependencyUnavailable("NATS is not connected; the job was not queued")
        sent = dict(headers or {})
        sent[MSG_ID_HEADER] = job_id
        with producer_span(self.tracer, subject, sent):
            try:
                ack = await self._js_publish(self.prefixer.wire(subject), payload, sent)
            except (TimeoutError, nats.errors.Error) as exc:
                raise DependencyUnavailable(f"job {job_id} was not queued: {exc}") from exc
        if ack.duplicate:
            log.info("duplicate job %s ignored by JetStream", job_id)
        else:
            self.metrics.published(kind=kind)

    async def _js_publish(self, wire: str, payload: bytes, headers: dict[str, str]) -> PubAck:
        await self.ensure_streams()
        try:
            return await self._jetstream().publish(wire, payload, headers=headers)
        except nats.js.errors.NoStreamResponseError:
            self._streams_ready = False  # deleted behind our back: create it again, once
            await self.ensure_streams()
            return await self._jetstream().publish(wire, payload, headers=headers)

    async def dead_letter(self, kind: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish to `dlq.{kind}`: core subscribers see it and the DLQ stream keeps it."""
        subject = dlq_subject(kind)
        with producer_span(self.tracer, subject, headers):
            await self._js_publish(self.prefixer.wire(subject), data, headers)
        self.metrics.published(kind=kind)

    async def consume(
        self, kinds: Sequence[str], handler: JobHandler, *, concurrency: int = 4
    ) -> _ConsumerGroup:
        for kind in kinds:
            check_subject(job_subject(kind))
        # Work-queue consumers must not overlap, so each kind gets its own filtered consumer.
        consumers = [
            _JobConsumer(self, kind, handler, concurrency) for kind in dict.fromkeys(kinds)
        ]
        if self.connected:
            for consumer in consumers:
                try:
                    await consumer.setup()
                except Exception as exc:
                    log.warning("consumer for %s not ready yet: %s", consumer.kind, exc)
        for consumer in consumers:
            consumer.start()
        group = _ConsumerGroup(self, consumers)
        self._groups.add(group)
        return group

    async def consume_stream(
        self,
        stream: str,
        subjects: Sequence[str],
        durable: str,
        handler: BatchHandler,
        *,
        batch: int = 500,
        max_age_s: float = 7 * 24 * 3600.0,
    ) -> _StreamConsumer:
        for subject in subjects:
            check_subject(subject, wildcards=True)
        consumer = _StreamConsumer(
            self,
            event_stream_name(self.prefixer.prefix, stream),
            [self.prefixer.wire(s) for s in subjects],
            safe_name(durable),
            handler,
            batch,
            max_age_s,
        )
        if self.connected:
            try:
                await consumer.setup()
            except Exception as exc:
                log.warning("stream consumer %s not ready yet: %s", consumer.durable, exc)
        consumer.start()
        self._groups.add(consumer)
        return consumer

    async def queue_depth(self, kind: str | None = None) -> int:
        js = self._jetstream()
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


class _NatsSubscription:
    def __init__(
        self,
        bus: NatsBus,
        subject: str,
        queue: str | None,
        handler: MessageHandler,
        concurrency: int,
    ) -> None:
        self._bus = bus
        self._wire = bus.prefixer.wire(subject)
        self._queue = queue or ""
        self._handler = handler
        # A nats-py callback handles one message at a time: handlers run as tasks instead.
        self._workers = Workers(concurrency, f"subscription {subject}")
        self._sub: NatsSubscription | None = None
        self._attached = False

    async def attach(self, client: Client) -> None:
        if self._attached:
            return
        self._attached = True
        self._sub = await client.subscribe(self._wire, queue=self._queue, cb=self._on_msg)
        if not client.is_connected:
            return  # nats-py sends the SUB when it reconnects
        try:  # the server knows the interest before we return
            await server_barrier(client)
        except (TimeoutError, nats.errors.Error) as exc:
            if client.is_connected:
                raise DependencyUnavailable(
                    f"NATS did not confirm the subscription to {self._wire}: {exc!r}"
                ) from exc

    async def _on_msg(self, msg: Msg) -> None:
        bus = self._bus
        message = Message(
            bus.prefixer.local(msg.subject), msg.data, dict(msg.headers or {}), msg.reply or None
        )
        await self._workers.acquire()
        self._workers.start(
            run_message_handler(self._handler, message, bus.tracer, bus.metrics, bus.respond)
        )

    async def unsubscribe(self) -> None:
        self._bus._subs.discard(self)
        self._attached = True  # never attach after this
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self._workers.drain(self._bus.close_grace_s)


class _NatsDelivery(DeliveryBase):
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


class _JobConsumer:
    """One kind's durable pull consumer; processes on any host share it (and the load)."""

    def __init__(self, bus: NatsBus, kind: str, handler: JobHandler, concurrency: int) -> None:
        self._bus = bus
        self.kind = kind
        self.durable = safe_name(kind)
        self._handler = handler
        self._workers = Workers(concurrency, f"jobs {kind}")
        self._psub: JetStreamContext.PullSubscription | None = None
        self._advisories: NatsSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._fetching = False

    async def setup(self) -> None:
        bus = self._bus
        await bus.ensure_streams()
        js = bus._jetstream()
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
        self._advisories = await bus._require_client().subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{bus.jobs_stream}.{self.durable}",
            queue=f"faas-dlq-{self.durable}",
            cb=self._on_max_deliveries,
        )
        await server_barrier(bus._require_client())

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
                await bus._ready.wait()
            if self._psub is None:
                try:
                    await self.setup()
                except Exception as exc:
                    failures += 1
                    log.warning("consumer for %s not ready: %s", self.kind, exc)
                    await asyncio.sleep(retry_delay(bus.reconnect_wait_s, failures, 10.0))
                    continue
            psub = self._psub
            assert psub is not None
            await self._workers.acquire()
            self._fetching = True
            try:
                msgs = await psub.fetch(1, timeout=bus.fetch_timeout_s)
            except TimeoutError:
                self._workers.release()
                continue
            except Exception as exc:
                self._workers.release()
                failures += 1
                log.warning("fetching %s jobs failed: %s", self.kind, exc)
                await self._drop_subscriptions()
                await asyncio.sleep(retry_delay(bus.reconnect_wait_s, failures, 10.0))
                continue
            finally:
                self._fetching = False
            failures = 0
            if self._stopping:  # hand it straight back to the other workers
                self._workers.release()
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak()
                return
            self._workers.start(self._run(msgs[0]))

    async def _run(self, msg: Msg) -> None:
        bus = self._bus
        delivery = _NatsDelivery(bus, msg, self.kind)
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
                with contextlib.suppress(Exception):
                    await interrupted(delivery)

    async def _on_max_deliveries(self, msg: Msg) -> None:
        bus = self._bus
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
            js = bus._jetstream()
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
            done, _ = await asyncio.wait({task}, timeout=self._bus.fetch_timeout_s + 1)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Advisories from here on are for the workers that stay.
        await self._drop_subscriptions()
        await self._workers.drain(self._bus.close_grace_s)


class _StreamConsumer:
    """A durable pull consumer on an interest-retention stream of events: messages stay until
    this consumer acknowledged them (or they age out); batches are acked after the handler
    returned and nak'ed with a growing delay when it raised.

    It speaks JetStream's pull protocol itself instead of nats-py's `fetch`, which spends a
    task, a uuid and a `wait_for` on every message (38% of the consumer's CPU in
    bench/llmops.py): one pull request asks for a whole batch, a subscription callback collects
    what arrives, and the next request goes out before the current batch is written, so the
    database write and the delivery of the next batch overlap.
    """

    def __init__(
        self,
        bus: NatsBus,
        stream: str,
        wire_subjects: list[str],
        durable: str,
        handler: BatchHandler,
        batch: int,
        max_age_s: float,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._bus = bus
        self.stream = stream
        self.durable = durable
        self._wire_subjects = wire_subjects
        self._handler = handler
        self._batch = batch
        self._max_age_s = max_age_s
        # A pull request waits this long for its batch to fill; then the server ends it (408).
        self._expires_s = min(bus.fetch_timeout_s, 1.0)
        self._inbox_sub: NatsSubscription | None = None
        self._arrived: deque[Msg] = deque()
        self._signal = asyncio.Event()
        self._credit = 0  # messages the open pull request may still deliver
        self._deadline = 0.0  # after this the open request is presumed lost (server restart)
        self._lost = False  # the consumer is gone on the server: set it up again
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._handling = False

    @property
    def _ready(self) -> bool:
        return self._inbox_sub is not None and not self._lost

    async def setup(self) -> None:
        bus = self._bus
        await bus._add_stream(
            StreamConfig(
                name=self.stream,
                subjects=self._wire_subjects,
                retention=RetentionPolicy.INTEREST,
                storage=StorageType.FILE,
                max_age=self._max_age_s,
                duplicate_window=DEDUP_WINDOW_S,
            )
        )
        bus.event_streams.add(self.stream)
        await bus._jetstream().add_consumer(
            self.stream,
            ConsumerConfig(
                name=self.durable,
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=bus.ack_wait_s,
                max_ack_pending=max(bus.max_ack_pending, 4 * self._batch),
            ),
        )
        await self._drop_subscription()
        client = bus._require_client()
        self._inbox_sub = await client.subscribe(
            client.new_inbox(), cb=self._on_msg, pending_msgs_limit=max(65_536, 4 * self._batch)
        )
        self._credit, self._lost = 0, False

    async def _on_msg(self, msg: Msg) -> None:
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            self._arrived.append(msg)
            self._credit -= 1
        elif status != "100":  # 100 = idle heartbeat; anything else ends the request
            self._credit = 0
            description = (msg.headers or {}).get("Description", "")
            if status == "503" or "Consumer Deleted" in description:
                self._lost = True
        self._signal.set()

    async def _pull(self) -> None:
        sub = self._inbox_sub
        assert sub is not None
        request = {"batch": self._batch, "expires": int(self._expires_s * 1e9)}
        await self._bus._require_client().publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}",
            json.dumps(request).encode(),
            reply=sub.subject,
        )
        self._credit = self._batch
        self._deadline = time.monotonic() + self._expires_s + 1.0

    def _take(self) -> list[Msg]:
        arrived = self._arrived
        return [arrived.popleft() for _ in range(min(self._batch, len(arrived)))]

    async def _drop_subscription(self) -> None:
        sub, self._inbox_sub = self._inbox_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        # Whatever had arrived is redelivered by the server after ack_wait.
        self._arrived.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"nats-stream {self.durable}")

    async def _loop(self) -> None:
        bus = self._bus
        failures = 0  # consecutive setup/pull failures
        handler_failures = 0  # consecutive failed batches
        while not self._stopping:
            if not bus.connected:
                await bus._ready.wait()
            try:
                if not self._ready:
                    await self.setup()
                if not self._arrived and (self._credit <= 0 or time.monotonic() > self._deadline):
                    await self._pull()
            except Exception as exc:
                failures += 1
                log.warning("stream consumer %s not ready: %s", self.durable, exc)
                await self._drop_subscription()
                await asyncio.sleep(retry_delay(bus.reconnect_wait_s, failures, 10.0))
                continue
            failures = 0
            if not self._arrived:
                self._signal.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._signal.wait(), self._expires_s + 1.0)
                continue
            msgs = self._take()
            if self._credit <= 0 and not self._arrived:
                with contextlib.suppress(Exception):  # a failed pull is retried at the top
                    await self._pull()  # the next batch travels while this one is written
            messages = [
                Message(bus.prefixer.local(m.subject), m.data, dict(m.headers or {})) for m in msgs
            ]
            self._handling = True
            try:
                await run_batch_handler(
                    self._handler, messages, self.durable, bus.tracer, bus.metrics
                )
            except Exception:
                handler_failures += 1
                delay = batch_failed(
                    self.durable, len(msgs), handler_failures, bus.retry_base_s, bus.retry_max_s
                )
                await self._settle(msgs, delay)
                continue
            finally:
                self._handling = False
            handler_failures = 0
            await self._settle(msgs, None)

    async def _settle(self, msgs: list[Msg], nak_delay_s: float | None) -> None:
        client = self._bus.client
        if client is None:
            return  # unacked messages come back after ack_wait
        if nak_delay_s is None:
            payload = b"+ACK"
        elif nak_delay_s <= 0:
            payload = b"-NAK"
        else:
            payload = b"-NAK " + json.dumps({"delay": int(nak_delay_s * 1e9)}).encode()
        try:
            for msg in msgs:
                await client.publish(msg.reply, payload)
        except Exception as exc:  # unacked messages come back after ack_wait
            log.warning("settling a batch from %s failed: %s", self.stream, exc)

    async def unsubscribe(self) -> None:
        self._bus._groups.discard(self)
        self._stopping = True
        self._signal.set()
        task = self._task
        if task is not None:
            # A batch being handled may finish (and be acked) within the grace period.
            wait_s = self._bus.close_grace_s if self._handling else 1.0
            done, _ = await asyncio.wait({task}, timeout=wait_s)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        leftover = list(self._arrived)
        await self._settle(leftover, 0.0)  # hand them straight to the other replicas
        await self._drop_subscription()


class _ConsumerGroup:
    def __init__(self, bus: NatsBus, consumers: list[_JobConsumer]) -> None:
        self._bus = bus
        self._consumers = consumers

    async def unsubscribe(self) -> None:
        self._bus._groups.discard(self)
        await asyncio.gather(*(consumer.stop() for consumer in self._consumers))


async def register_micro_service(bus: NatsBus, name: str, version: str, description: str) -> Any:
    """Announce a service on `$SRV.PING/INFO/STATS` with a `{name}.ping` endpoint answering
    b"pong"; returns the `nats.micro` service (call `await service.stop()` on shutdown)."""
    client = bus._require_client()
    service = await nats.micro.add_service(
        client, name=name, version=version, description=description
    )

    async def pong(request: Request) -> None:
        await request.respond(b"pong")

    await service.add_endpoint(name="ping", subject=bus.prefixer.wire(f"{name}.ping"), handler=pong)
    await server_barrier(client)  # discoverable and callable once this returns
    return service


def build_bus(
    settings: Settings, *, meter: metrics.Meter | None = None, tracer: Tracer | None = None
) -> MessageBus:
    """`NatsBus` when FAAS_NATS_URL is set, else an `InProcessBus`."""
    if settings.nats_url:
        return NatsBus(
            settings.nats_url,
            settings.nats_prefix,
            name=settings.service_name,
            ack_wait_s=settings.job_ack_wait_s,
            max_attempts=settings.job_max_attempts,
            retry_base_s=settings.job_retry_base_s,
            close_grace_s=settings.shutdown_grace_s,
            meter=meter,
            tracer=tracer,
        )
    return InProcessBus(
        settings.nats_prefix,
        ack_wait_s=settings.job_ack_wait_s,
        max_attempts=settings.job_max_attempts,
        retry_base_s=settings.job_retry_base_s,
        close_grace_s=settings.shutdown_grace_s,
        meter=meter,
        tracer=tracer,
    )
