"""`InProcessBroker`: what a NATS server holds, for buses in one process: subscriptions, reply
inboxes, job queues, kept streams and the dedup window."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from faas.integrations.bus.base import DEDUP_WINDOW_S, MSG_ID_HEADER, Message
from faas.integrations.bus.subjects import subject_matches

log = logging.getLogger("faas.bus")


class Subscriber(Protocol):
    wire_pattern: str
    queue: str | None

    def deliver(
        self, wire_subject: str, data: bytes, headers: dict[str, str], reply: str | None
    ) -> None: ...


@dataclass(eq=False)
class Job:
    job_id: str
    kind: str
    data: bytes
    headers: dict[str, str]
    deliveries: int = 0


class JobQueue:
    def __init__(self) -> None:
        self.ready: asyncio.Queue[Job] = asyncio.Queue()
        self.pending = 0  # submitted and not yet acked or dead-lettered


# A kept stream message: (stored at, wire subject, data, headers).
Stored = tuple[float, str, bytes, dict[str, str]]


@dataclass(eq=False)
class Backlog:
    """One durable consumer's backlog of a stream (what JetStream keeps for it)."""

    limit: int
    pending: deque[Stored] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0

    def put(self, item: Stored) -> None:
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
    durables: dict[str, Backlog] = field(default_factory=dict)


class InProcessBroker:
    """What a NATS server holds: subscriptions, reply inboxes, job queues, the dedup window."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []
        self._inboxes: dict[str, asyncio.Future[Message]] = {}
        self._queues: dict[str, JobQueue] = {}
        self._seen: dict[tuple[str, str], float] = {}
        self._streams: dict[str, _Stream] = {}

    def add(self, sub: Subscriber) -> None:
        self._subs.append(sub)

    def remove(self, sub: Subscriber) -> None:
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
        groups: dict[str, list[Subscriber]] = {}
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
    ) -> Backlog:
        """The backlog of durable `name` on `stream`, created (keeping from now on) if new."""
        kept = self._streams.setdefault(stream, _Stream(stream, wire_patterns, max_age_s))
        kept.wire_patterns = wire_patterns
        kept.max_age_s = max_age_s
        return kept.durables.setdefault(name, Backlog(limit))

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

    def job_queue(self, wire_subject: str) -> JobQueue:
        return self._queues.setdefault(wire_subject, JobQueue())

    def job_queues(self) -> dict[str, JobQueue]:
        return self._queues

    def enqueue(self, stream: str, wire_subject: str, job: Job) -> bool:
        """Queue a new job; False when its id was seen in the dedup window (as JetStream)."""
        if not self.first_seen(stream, job.job_id):
            return False
        queue = self.job_queue(wire_subject)
        queue.pending += 1
        queue.ready.put_nowait(job)
        return True

    def requeue(self, wire_subject: str, job: Job, delay_s: float) -> None:
        queue = self.job_queue(wire_subject)
        if delay_s > 0:
            asyncio.get_running_loop().call_later(delay_s, queue.ready.put_nowait, job)
        else:
            queue.ready.put_nowait(job)

    def settle(self, wire_subject: str) -> None:
        self.job_queue(wire_subject).pending -= 1
