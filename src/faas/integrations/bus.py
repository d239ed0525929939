"""The `MessageBus` protocol and what its implementations share: message types, NATS subject
rules, the bounded handler pool, job delivery settlement and the bus metrics.

Implementations: `faas.integrations.nats.NatsBus` and `faas.integrations.inprocess.InProcessBus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from opentelemetry import metrics
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

from faas.integrations.otel import consumer_span, inject_headers, link_from_headers

log = logging.getLogger("faas.bus")

MSG_ID_HEADER: Final = "Nats-Msg-Id"
FAILURE_REASON_HEADER: Final = "X-Failure-Reason"
ATTEMPTS_HEADER: Final = "X-Job-Attempts"
DEDUP_WINDOW_S: Final = 120.0
_MAX_REASON_CHARS: Final = 1000
_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")


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
    dropped: int  # events dropped from the offline buffer

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None: ...

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


# --- subjects -----------------------------------------------------------------------------


def check_subject(subject: str, *, wildcards: bool = False) -> None:
    """Raise ValueError unless `subject` is a valid NATS subject (or pattern, with `wildcards`)."""
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token or any(c.isspace() for c in token):
            raise ValueError(f"invalid subject {subject!r}")
        if token in ("*", ">"):
            if not wildcards:
                raise ValueError(f"wildcards are not allowed here: {subject!r}")
            if token == ">" and i != len(tokens) - 1:
                raise ValueError(f"'>' must be the last token: {subject!r}")
        elif "*" in token or ">" in token:
            raise ValueError(f"invalid subject {subject!r}")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: `*` matches one token, a final `>` one or more."""
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens) or (token != "*" and token != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


def job_subject(kind: str) -> str:
    return f"jobs.{kind}"


def dlq_subject(kind: str) -> str:
    return f"dlq.{kind}"


def safe_name(value: str) -> str:
    """`value` reduced to [A-Za-z0-9_-], as JetStream stream and consumer names need."""
    return _NAME_UNSAFE.sub("_", value)


def stream_names(prefix: str) -> tuple[str, str]:
    """The (jobs, dead letters) stream names of a deployment prefix."""
    return event_stream_name(prefix, "jobs"), event_stream_name(prefix, "dlq")


def event_stream_name(prefix: str, stream: str) -> str:
    """The JetStream name of stream `stream` (e.g. "usage") under a deployment prefix."""
    root = safe_name(prefix).upper() if prefix else "FAAS"
    return f"{root}_{safe_name(stream).upper()}"


class Prefixer:
    """Adds the deployment prefix to subjects on the wire and strips it from delivered ones."""

    def __init__(self, prefix: str) -> None:
        prefix = prefix.strip().strip(".")
        if prefix:
            check_subject(prefix)
        self.prefix = prefix

    def wire(self, subject: str) -> str:
        return f"{self.prefix}.{subject}" if self.prefix else subject

    def local(self, wire_subject: str) -> str:
        if self.prefix and wire_subject.startswith(self.prefix + "."):
            return wire_subject[len(self.prefix) + 1 :]
        return wire_subject


def retry_delay(base_s: float, attempt: int, max_s: float) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... capped at `max_s`."""
    return float(min(max_s, base_s * 2.0 ** max(0, min(attempt - 1, 30))))


def dead_letter_headers(headers: Mapping[str, str], reason: str, attempts: int) -> dict[str, str]:
    """The job's headers plus why and after how many deliveries it was given up."""
    # A header value cannot hold line breaks, and failure reasons can be long.
    out = dict(headers)
    out[FAILURE_REASON_HEADER] = " ".join(reason.split())[:_MAX_REASON_CHARS] or "failed"
    out[ATTEMPTS_HEADER] = str(attempts)
    return out


# --- handler pool -------------------------------------------------------------------------


class Workers:
    """Runs handler tasks concurrently, at most `concurrency` at a time.

    `acquire()` waits for a free slot (back-pressure for the caller), `start()` runs a coroutine
    in that slot and frees it when the task ends.
    """

    def __init__(self, concurrency: int, name: str) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._name = name

    async def acquire(self) -> None:
        await self._slots.acquire()

    def release(self) -> None:
        self._slots.release()

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: handler task failed", self._name, exc_info=exc)

    async def drain(self, grace_s: float) -> None:
        """Let running handlers finish for up to `grace_s`, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "%s: cancelled %d handlers still running at close", self._name, len(pending)
            )
            await asyncio.wait(pending)


async def run_message_handler(
    handler: MessageHandler,
    message: Message,
    tracer: Tracer,
    metrics_: BusMetrics,
    respond: Callable[[str, bytes, dict[str, str]], Awaitable[None]],
) -> None:
    """Run an event handler inside a CONSUMER span; log (never raise) its errors."""
    with consumer_span(tracer, message.subject, message.headers):
        try:
            result = await handler(message)
        except Exception:
            metrics_.failure(subject_root=message.subject.split(".", 1)[0])
            log.exception("handler for %s failed", message.subject)
            return
        metrics_.consumed(subject_root=message.subject.split(".", 1)[0])
        if result is not None and message.reply:
            try:
                await respond(message.reply, result, inject_headers({}))
            except Exception:
                log.exception("reply to %s failed", message.subject)


def batch_failed(durable: str, size: int, failures: int, base_s: float, max_s: float) -> float:
    """Log a failed stream batch (from inside its `except`) and return the redelivery delay
    for this many consecutive failures."""
    delay = retry_delay(base_s, failures, max_s)
    log.exception("%s: a batch of %d failed; redelivered in %.1fs", durable, size, delay)
    return delay


async def run_batch_handler(
    handler: BatchHandler,
    messages: Sequence[Message],
    durable: str,
    tracer: Tracer,
    metrics_: BusMetrics,
) -> None:
    """Run a stream batch handler in one CONSUMER span linked to (up to 32 of) the messages'
    producer spans; count the messages; re-raise a failure for the caller to redeliver."""
    links = [link for m in messages[:32] if (link := link_from_headers(m.headers)) is not None]
    root = messages[0].subject.split(".", 1)[0] if messages else durable
    with consumer_span(
        tracer,
        f"{durable} batch",
        None,
        links=links,
        attributes={"messaging.batch.message_count": len(messages)},
    ):
        try:
            await handler(messages)
        except Exception:
            metrics_.failure(subject_root=root)
            raise
    metrics_.consumed(subject_root=root, count=len(messages))


# --- jobs ---------------------------------------------------------------------------------


class DeliveryBase(ABC):
    """A `JobDelivery` whose first settlement (ack, retry, fail) wins; later ones do nothing."""

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


async def interrupted(delivery: DeliveryBase) -> None:
    """Settle a delivery whose handler was cancelled (the worker is stopping): redeliver it at
    once, or dead-letter it when this was its last attempt, since nothing would redeliver it."""
    if delivery.attempt >= delivery.max_attempts:
        await delivery.fail(f"worker stopped during attempt {delivery.attempt}")
    else:
        await delivery.retry_later(0)


async def _heartbeat(delivery: DeliveryBase, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await delivery.in_progress()
        except Exception:
            log.warning("heartbeat for job %s failed", delivery.job_id, exc_info=True)


async def run_job_handler(
    handler: JobHandler,
    delivery: DeliveryBase,
    *,
    tracer: Tracer,
    metrics_: BusMetrics,
    heartbeat_s: float,
    retry_base_s: float,
    retry_max_s: float,
) -> None:
    """Run a job handler with heartbeats; settle what the handler left unsettled.

    Returning normally acks; raising retries with exponential backoff, or dead-letters on the
    last attempt.
    """
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
                await delivery.retry_later(retry_delay(retry_base_s, delivery.attempt, retry_max_s))
        else:
            await delivery.ack()
            metrics_.consumed(kind=delivery.kind)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat


# --- metrics ------------------------------------------------------------------------------


class BusMetrics:
    """The bus counters; every call is a no-op without a meter."""

    _COUNTERS: Final = {
        "published": "Messages published",
        "consumed": "Messages handled successfully",
        "failures": "Handler failures",
        "dropped": "Events dropped from the offline buffer",
    }

    def __init__(self, meter: metrics.Meter | None, backend: str) -> None:
        self._backend = backend
        self._counters: dict[str, metrics.Counter] = {}
        if meter is not None:
            for name, description in self._COUNTERS.items():
                self._counters[name] = meter.create_counter(
                    f"faas.bus.{name}", unit="{message}", description=description
                )

    def _add(self, name: str, value: int, subject_root: str | None, kind: str | None) -> None:
        counter = self._counters.get(name)
        if counter is None:
            return
        attrs = {"faas.bus.backend": self._backend}
        if subject_root is not None:
            attrs["faas.bus.subject_root"] = subject_root
        if kind is not None:
            attrs["faas.bus.kind"] = kind
        counter.add(value, attrs)

    def published(self, *, subject_root: str | None = None, kind: str | None = None) -> None:
        self._add("published", 1, subject_root, kind)

    def consumed(
        self, *, subject_root: str | None = None, kind: str | None = None, count: int = 1
    ) -> None:
        self._add("consumed", count, subject_root, kind)

    def failure(self, *, subject_root: str | None = None, kind: str | None = None) -> None:
        self._add("failures", 1, subject_root, kind)

    def dropped(self, count: int = 1) -> None:
        self._add("dropped", count, None, None)
