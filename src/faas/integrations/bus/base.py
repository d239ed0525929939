"""The `MessageBus` protocol and the types its callers handle: messages, job deliveries and the
handlers that receive them.

Implementations: `faas.integrations.bus.nats.NatsBus` and
`faas.integrations.bus.memory.InProcessBus`; `tests/contract/test_bus_contract.py` holds both
to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

MSG_ID_HEADER: Final = "Nats-Msg-Id"
# A job id submitted again within this window is ignored (JetStream's duplicate window).
DEDUP_WINDOW_S: Final = 120.0


@dataclass(frozen=True, slots=True)
class Message:
    subject: str  # without the deployment prefix
    data: bytes
    headers: dict[str, str]
    reply: str | None = None


# A returned bytes value is sent as the reply when the message has a reply subject.
MessageHandler = Callable[[Message], Awaitable[bytes | None]]


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class JobDelivery(Protocol):
    """One delivery of a job to a worker."""

    job_id: str
    kind: str
    data: bytes
    headers: dict[str, str]
    # 1-based delivery count, as the broker keeps it. Not a count of runs: nats-server 2.9
    # restarts it at 1 or skips numbers after a worker crash (jobs count runs in their record).
    attempt: int
    max_attempts: int

    async def ack(self) -> None: ...

    async def retry_later(self, delay_s: float) -> None:
        """Redeliver after `delay_s`; on the last attempt the job is dead-lettered instead."""

    async def fail(self, reason: str) -> None:
        """Publish to `dlq.{kind}` with `X-Failure-Reason` and never redeliver."""

    async def in_progress(self) -> None:
        """Heartbeat: the job is still running (the bus sends these by itself too)."""


JobHandler = Callable[[JobDelivery], Awaitable[None]]

# Handles a batch of stream messages; returning acknowledges all of them, raising has the whole
# batch redelivered later (so a handler must be idempotent, and must drop poison messages
# itself rather than raise for them).
BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]


class MessageBus(Protocol):
    backend: str  # "nats" or "inprocess"

    @property
    def dropped(self) -> int:
        """Events dropped from the offline buffer (kept while the server is unreachable)."""

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        traced: bool = False,
    ) -> None:
        """Send `payload`; in a PRODUCER span of its own unless `traced` (the headers already
        carry the span the message belongs to)."""
        ...

    async def subscribe(
        self,
        subject: str,
        handler: MessageHandler,
        *,
        queue: str | None = None,
        concurrency: int = 16,
    ) -> Subscription: ...

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 2.0,
    ) -> Message: ...

    async def submit(
        self,
        kind: str,
        payload: bytes,
        *,
        job_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None: ...

    async def consume(
        self, kinds: Sequence[str], handler: JobHandler, *, concurrency: int = 4
    ) -> Subscription: ...

    async def queue_depth(self, kind: str | None = None) -> int: ...

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
        """At-least-once consumption of events published on `subjects`.

        From the first call on, events on `subjects` are kept in the stream `stream` (created
        if needed) until the durable consumer `durable` has acknowledged them or they are older
        than `max_age_s`; every process consuming with the same `durable` shares the load.
        `handler` gets up to `batch` messages at a time, in order; see `BatchHandler`.
        """

    async def ping(self) -> bool: ...
