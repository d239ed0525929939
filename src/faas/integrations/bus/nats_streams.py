"""`StreamConsumer`: `consume_stream` on NATS, a durable pull consumer on an interest-retention
stream of events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

from faas.integrations.bus.base import Message
from faas.integrations.bus.handlers import BatchRunner, StreamSpec
from faas.integrations.bus.nats_admin import stream_config
from faas.integrations.bus.workers import stop_task

if TYPE_CHECKING:
    from faas.integrations.bus.nats import NatsBus

log = logging.getLogger("faas.bus")


class StreamConsumer:
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
        stream: StreamSpec,
        runner: BatchRunner,
    ) -> None:
        self._bus = bus
        self._spec = stream
        self.stream = stream.name
        self.durable = runner.durable
        self._runner = runner
        self._batch = stream.batch
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

    @property
    def _ready(self) -> bool:
        return self._inbox_sub is not None and not self._lost

    async def setup(self) -> None:
        bus = self._bus
        spec = self._spec
        await bus.add_stream(
            stream_config(spec.name, spec.wire_subjects, RetentionPolicy.INTEREST, spec.max_age_s)
        )
        bus.event_streams.add(self.stream)
        await bus.connection.jetstream().add_consumer(
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
        client = bus.connection.require_client()
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
        await self._bus.connection.require_client().publish(
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
        while not self._stopping:
            if not bus.connected:
                await bus.connection.wait_ready()
            try:
                if not self._ready:
                    await self.setup()
                if not self._arrived and (self._credit <= 0 or time.monotonic() > self._deadline):
                    await self._pull()
            except Exception as exc:
                failures += 1
                log.warning("stream consumer %s not ready: %s", self.durable, exc)
                await self._drop_subscription()
                await asyncio.sleep(bus.setup_retry_delay(failures))
                continue
            failures = 0
            if not self._arrived:
                self._signal.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._signal.wait(), self._expires_s + 1.0)
                continue
            await self._handle(self._take())

    async def _handle(self, msgs: list[Msg]) -> None:
        if self._credit <= 0 and not self._arrived:
            with contextlib.suppress(Exception):  # a failed pull is retried at the top
                await self._pull()  # the next batch travels while this one is written
        local = self._bus.prefixer.local
        delay = await self._runner.run(
            [Message(local(m.subject), m.data, dict(m.headers or {})) for m in msgs]
        )
        await self._settle(msgs, delay)

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
        self._bus.forget(self)
        self._stopping = True
        self._signal.set()
        if self._task is not None:
            # A batch being handled may finish (and be acked) within the grace period.
            await stop_task(self._task, self._bus.close_grace_s if self._runner.handling else 1.0)
        leftover = list(self._arrived)
        await self._settle(leftover, 0.0)  # hand them straight to the other replicas
        await self._drop_subscription()
