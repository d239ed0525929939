"""Events on NATS: the offline buffer that keeps publishes while the server is unreachable, and
the core-NATS subscription that hands messages to a worker pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from faas.integrations.bus.base import Message, MessageHandler
from faas.integrations.bus.metrics import BusMetrics
from faas.integrations.bus.nats_admin import server_barrier
from faas.integrations.bus.subjects import subject_root
from faas.integrations.bus.workers import Workers
from faas.shared.exceptions import DependencyUnavailable

if TYPE_CHECKING:
    from faas.integrations.bus.nats import NatsBus

log = logging.getLogger("faas.bus")

DROP_WARN_EVERY: Final = 1000

# An event waiting to be sent: (subject, wire subject, payload, headers).
Held = tuple[str, str, bytes, dict[str, str]]


class OfflineBuffer:
    """Events published while NATS is unreachable, sent in order once it is back; when full,
    the oldest are dropped (and counted) so that a long outage costs memory only up to `size`."""

    def __init__(self, size: int, metrics_: BusMetrics) -> None:
        self.size = max(0, size)
        self.dropped = 0
        self._metrics = metrics_
        self._items: deque[Held] = deque()
        self._flush_task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def hold(self, item: Held, client: Client | None) -> None:
        if len(self._items) >= self.size:
            if self._items:
                self._items.popleft()
                self._items.append(item)
            self.dropped += 1
            self._metrics.dropped()
            if self.dropped % DROP_WARN_EVERY == 1:
                log.warning(
                    "NATS offline buffer full (%d): %d events dropped so far",
                    self.size,
                    self.dropped,
                )
        else:
            self._items.append(item)
        self.schedule_flush(client)

    def schedule_flush(self, client: Client | None) -> None:
        """Start sending the held events in the background, unless already at it."""
        if not self._items or client is None or not client.is_connected:
            return
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self.flush(client), name="nats-flush")

    async def flush(self, client: Client) -> None:
        sent = 0
        while self._items and client.is_connected:
            subject, wire, payload, headers = self._items[0]
            try:
                await client.publish(wire, payload, headers=headers)
            except nats.errors.Error as exc:
                log.warning("flushing buffered events stopped: %s", exc)
                break
            self._items.popleft()
            self._metrics.published(subject_root=subject_root(subject))
            sent += 1
        if sent:
            log.info("sent %d buffered events to NATS", sent)

    async def close(self, client: Client | None) -> None:
        """Send what can still be sent; what cannot is logged and forgotten."""
        if self._flush_task is not None:
            with contextlib.suppress(Exception):
                await self._flush_task
        if client is not None and client.is_connected:
            await self.flush(client)
        if self._items:
            log.warning("%d buffered events were never sent to NATS", len(self._items))
            self._items.clear()


class EventSubscription:
    def __init__(
        self,
        bus: NatsBus,
        subject: str,
        queue: str | None,
        handler: MessageHandler,
        workers: Workers,
    ) -> None:
        self._bus = bus
        self._wire = bus.prefixer.wire(subject)
        self._queue = queue or ""
        self._handler = handler
        # A nats-py callback handles one message at a time: handlers run as tasks instead.
        self._workers = workers
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
        local = self._bus.prefixer.local(msg.subject)
        message = Message(local, msg.data, dict(msg.headers or {}), msg.reply or None)
        await self._bus.dispatch(self._workers, self._handler, message)

    async def unsubscribe(self) -> None:
        self._bus.forget(self)
        self._attached = True  # never attach after this
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self._workers.drain(self._bus.close_grace_s)
