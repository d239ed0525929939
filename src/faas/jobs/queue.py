"""Submitting jobs and keeping their records: the database holds the truth (status, progress,
result); the bus carries only the job id to a worker."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
from sqlalchemy import CursorResult, or_, select, update

from faas.integrations.bus import MessageBus
from faas.jobs.models import JobMessage, JobRecord, JobStatus, JobView
from faas.jobs.retry import RetryPolicy
from faas.shared.clock import utcnow
from faas.shared.context import (
    CORRELATION_HEADER,
    REQUEST_HEADER,
    TENANT_HEADER,
    USER_HEADER,
    Identity,
    current_context,
    new_id,
)
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, DependencyUnavailable, NotFound, ValidationFailed

log = logging.getLogger("faas.jobs")

KIND_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$")


class JobCancelled(Exception):
    """Raised inside a handler when the job was cancelled while running."""


class JobHeld(Exception):
    """A delivery of a job that another run holds (see `JobQueue.claim`)."""


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help (an unreadable file, say): the job fails
    at once with this message instead of being retried."""


JobHandler = Callable[["JobContext"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class RegisteredKind:
    kind: str
    service: str
    handler: JobHandler


@dataclass
class JobRegistry:
    """Job kinds (`{service}.{name}`) and their handlers, registered by services at build time."""

    kinds: dict[str, RegisteredKind] = field(default_factory=dict)

    def register(self, kind: str, handler: JobHandler) -> None:
        if not KIND_RE.match(kind):
            raise ValueError(f"job kind {kind!r} must look like 'service.name'")
        if kind in self.kinds:
            raise ValueError(f"job kind {kind!r} is already registered")
        self.kinds[kind] = RegisteredKind(kind, kind.split(".", 1)[0], handler)

    def get(self, kind: str) -> RegisteredKind:
        try:
            return self.kinds[kind]
        except KeyError:
            raise ValidationFailed(
                f"unknown job kind {kind!r}", details={"known": sorted(self.kinds)}
            ) from None


_TERMINAL = [status.value for status in JobStatus if status.terminal]


@dataclass
class JobContext:
    """What a handler gets: the job's identity and payload, and a way to report progress."""

    job_id: str
    kind: str
    tenant_id: str
    user_id: str | None
    payload: dict[str, Any]
    attempt: int  # 1-based: this is the job's n-th run (the record's `attempts`)
    queue: JobQueue

    @property
    def identity(self) -> Identity:
        return Identity(tenant_id=self.tenant_id, user_id=self.user_id)

    async def progress(self, fraction: float, stage: str | None = None) -> None:
        """Record progress (0..1) and stage; raises JobCancelled if a cancel was requested."""
        cancel = await self.queue.record_progress(self.job_id, min(1.0, max(0.0, fraction)), stage)
        if cancel:
            raise JobCancelled(self.job_id)

    @property
    def last_attempt(self) -> bool:
        """Whether a failure of this run fails the job for good, for handlers that keep their
        own record of the work."""
        return self.queue.retry.exhausted(self.attempt)


class JobQueue:
    def __init__(
        self,
        db: Database,
        bus: MessageBus,
        registry: JobRegistry,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.bus = bus
        self.registry = registry
        self.retry = retry or RetryPolicy()
        self.clock = clock

    async def submit(
        self,
        identity: Identity,
        kind: str,
        payload: dict[str, Any],
        *,
        job_id: str | None = None,
        callback_url: str | None = None,
    ) -> JobView:
        registered = self.registry.get(kind)
        job_id = job_id or new_id()
        ctx = current_context()
        now = self.clock()
        async with self.db.session() as session:
            if await session.get(JobRecord, job_id) is not None:
                raise Conflict(f"job {job_id} already exists")
            row = TenantRepository(session, JobRecord, identity.tenant_id).add(
                id=job_id,
                user_id=identity.user_id,
                service=registered.service,
                kind=kind,
                status=JobStatus.QUEUED.value,
                stage="queued",
                progress=0.0,
                attempts=0,
                payload=payload,
                callback_url=callback_url,
                correlation_id=ctx.correlation_id if ctx else None,
                created_at=now,
                updated_at=now,
            )
            view = JobView.of(row)
        headers = {
            "Content-Type": "application/json",
            TENANT_HEADER: identity.tenant_id,
            CORRELATION_HEADER: ctx.correlation_id if ctx else job_id,
            REQUEST_HEADER: new_id(),
        }
        if identity.user_id:
            headers[USER_HEADER] = identity.user_id
        message = orjson.dumps(
            JobMessage(job_id=job_id, kind=kind, tenant_id=identity.tenant_id).model_dump()
        )
        try:
            await self.bus.submit(kind, message, job_id=job_id, headers=headers)
        except DependencyUnavailable as exc:
            await self.finish(job_id, JobStatus.FAILED, error=f"job queue unavailable: {exc}")
            raise
        return view

    async def get(self, tenant_id: str, job_id: str) -> JobView:
        async with self.db.session() as session:
            row = await TenantRepository(session, JobRecord, tenant_id).get(job_id)
            if row is None:
                raise NotFound(f"job {job_id} not found")
            return JobView.of(row)

    async def list(
        self,
        tenant_id: str,
        *,
        status: JobStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[JobView]:
        where = []
        if status is not None:
            where.append(JobRecord.status == status.value)
        if kind is not None:
            where.append(JobRecord.kind == kind)
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, JobRecord, tenant_id).page(
                *where, order_by=JobRecord.created_at.desc(), limit=limit, offset=offset
            )
            items = [JobView.of(r) for r in rows]
        return Page[JobView](items=items, total=total, limit=limit, offset=offset)

    async def cancel(self, tenant_id: str, job_id: str) -> JobView:
        async with self.db.session() as session:
            row = await TenantRepository(session, JobRecord, tenant_id).get(job_id)
            if row is None:
                raise NotFound(f"job {job_id} not found")
            status = JobStatus(row.status)
            if status.terminal:
                raise Conflict(f"job {job_id} is already {status.value}")
            row.updated_at = self.clock()
            if status is JobStatus.QUEUED:
                row.status = JobStatus.CANCELLED.value
                row.stage = "cancelled"
                row.finished_at = row.updated_at
            else:
                # A running handler sees the request at its next progress report.
                row.cancel_requested = True
            return JobView.of(row)

    # -- used by workers -------------------------------------------------------------------

    async def claim(self, job_id: str, lease_s: float) -> JobRecord | None:
        """Mark the job running for this delivery and count the run in `attempts`; None when
        it needs no run (finished, cancelled or unknown), which is what makes redelivered jobs
        run their effects once. Raises JobHeld while another run holds the job: it is running
        and its worker touched it less than `lease_s` ago.

        The count is ours, not the bus's: JetStream's delivery count (nats-server 2.9) goes
        back to 1 when a job's redelivery comes due while no pull request is waiting (its
        worker was killed, the next one not started yet), and that same job may then be
        delivered twice at once; it also goes up for deliveries nobody ran (to a dead
        worker's pending pull request).
        """
        now = self.clock()
        free = or_(
            JobRecord.status != JobStatus.RUNNING.value,
            JobRecord.updated_at < now - timedelta(seconds=lease_s),
        )
        async with self.db.session() as session:
            # One statement, so that of two deliveries of one job only one takes it.
            taken = await session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.status.not_in(_TERMINAL), free)
                .values(attempts=JobRecord.attempts + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            row = await session.get(JobRecord, job_id, populate_existing=True)
            if row is None or JobStatus(row.status).terminal:
                return None
            if not cast("CursorResult[Any]", taken).rowcount:
                raise JobHeld(job_id)
            row.status = JobStatus.RUNNING.value
            row.stage = "running" if row.stage in (None, "queued", "retrying") else row.stage
            row.started_at = row.started_at or now
            await session.flush()
            session.expunge(row)
            return row

    async def touch(self, job_id: str) -> None:
        """Renew the lease of a running job (see `claim`)."""
        async with self.db.session() as session:
            await session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.status == JobStatus.RUNNING.value)
                .values(updated_at=self.clock())
            )

    async def record_progress(self, job_id: str, fraction: float, stage: str | None) -> bool:
        values: dict[str, Any] = {"progress": fraction, "updated_at": self.clock()}
        if stage is not None:
            values["stage"] = stage
        async with self.db.session() as session:
            await session.execute(update(JobRecord).where(JobRecord.id == job_id).values(**values))
            flag = await session.scalar(
                select(JobRecord.cancel_requested).where(JobRecord.id == job_id)
            )
        return bool(flag)

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> JobRecord | None:
        now = self.clock()
        async with self.db.session() as session:
            row = await session.get(JobRecord, job_id)
            if row is None:
                return None
            row.status = status.value
            row.updated_at = now
            row.error = error
            if status.terminal:
                row.finished_at = now
                row.stage = status.value
            else:
                row.stage = "retrying"
            if status is JobStatus.SUCCEEDED:
                row.result = result
                row.progress = 1.0
            await session.flush()
            session.expunge(row)
            return row
