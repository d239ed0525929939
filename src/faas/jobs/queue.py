"""Submitting jobs and keeping their records: the database holds the truth (status, progress,
result); the bus carries only the job id to a worker.

Every change of a job record is one statement on a connection that commits it by itself: on
PostgreSQL a transaction around a single statement only adds a BEGIN and a COMMIT round trip
(three round trips instead of one), and submits, claims and progress reports are what a busy
queue does most.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import case, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from faas.integrations.bus import MessageBus
from faas.jobs.models import JobMessage, JobRecord, JobStatus, JobView
from faas.jobs.registry import JobRegistry
from faas.jobs.retry import RetryPolicy
from faas.shared.clock import utcnow
from faas.shared.context import (
    CORRELATION_HEADER,
    REQUEST_HEADER,
    TENANT_HEADER,
    USER_HEADER,
    Identity,
    RequestContext,
    current_context,
    new_id,
)
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, DependencyUnavailable, NotFound, ValidationFailed

log = logging.getLogger("faas.jobs")


class JobCancelled(Exception):
    """Raised inside a handler when the job was cancelled while running."""


class JobHeld(Exception):
    """A delivery of a job that another run holds (see `JobQueue.claim`)."""


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help (an unreadable file, say): the job fails
    at once with this message instead of being retried."""


_TERMINAL = [status.value for status in JobStatus if status.terminal]
_COLUMNS = tuple(JobRecord.__table__.c)
_STAMP = JobRecord.__table__.c.started_at.type


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to submit; with `job_id` given, submitting it again is a Conflict."""

    kind: str
    payload: dict[str, Any]
    job_id: str | None = None
    callback_url: str | None = None


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
        self._engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def submit(
        self,
        identity: Identity,
        kind: str,
        payload: dict[str, Any],
        *,
        job_id: str | None = None,
        callback_url: str | None = None,
    ) -> JobView:
        (view,) = await self.submit_many(identity, [NewJob(kind, payload, job_id, callback_url)])
        return view

    async def submit_many(self, identity: Identity, jobs: Sequence[NewJob]) -> list[JobView]:
        """Record the jobs in one INSERT (all or none: Conflict when an id exists) and queue
        them with their publishes in flight together. A job the bus refused is marked failed,
        and the first refusal is raised once every publish has ended."""
        rows = self._rows(identity, jobs)
        # Several rows need a transaction to be all or none; one row is atomic by itself.
        engine = self.db.engine if len(rows) > 1 else self._engine
        try:
            async with engine.begin() as conn:
                await conn.execute(insert(JobRecord), rows)
        except IntegrityError:
            if len(rows) == 1:
                raise Conflict(f"job {rows[0]['id']} already exists") from None
            raise Conflict("a job of this batch already exists") from None
        views = [_queued(row) for row in rows]
        await self._publish(identity, views)
        return views

    async def submit_batch(self, identity: Identity, jobs: Sequence[NewJob]) -> list[JobView]:
        """`submit_many` for jobs a caller sent (see `JobRegistry.caller_payload`)."""
        checked = [
            NewJob(job.kind, self.registry.caller_payload(job.kind, job.payload, index))
            for index, job in enumerate(jobs)
        ]
        return await self.submit_many(identity, checked)

    def _rows(self, identity: Identity, jobs: Sequence[NewJob]) -> list[dict[str, Any]]:
        ctx = current_context()
        now = self.clock()
        rows = [
            {
                "id": job.job_id or new_id(),
                "tenant_id": identity.tenant_id,
                "user_id": identity.user_id,
                "service": self.registry.get(job.kind).service,
                "kind": job.kind,
                "status": JobStatus.QUEUED.value,
                "stage": "queued",
                "progress": 0.0,
                "attempts": 0,
                "payload": job.payload,
                "callback_url": job.callback_url,
                "correlation_id": ctx.correlation_id if ctx else None,
                "cancel_requested": False,
                "created_at": now,
                "updated_at": now,
            }
            for job in jobs
        ]
        if len({row["id"] for row in rows}) < len(rows):
            raise ValidationFailed("a job id appears twice in the batch")
        return rows

    async def _publish(self, identity: Identity, views: Sequence[JobView]) -> None:
        ctx = current_context()
        sent = await asyncio.gather(
            *(
                self.bus.submit(
                    view.kind,
                    orjson.dumps(
                        JobMessage(
                            job_id=view.job_id, kind=view.kind, tenant_id=identity.tenant_id
                        ).model_dump()
                    ),
                    job_id=view.job_id,
                    headers=_headers(identity, ctx, view.job_id),
                )
                for view in views
            ),
            return_exceptions=True,
        )
        refused = [(v, e) for v, e in zip(views, sent, strict=True) if isinstance(e, Exception)]
        for view, exc in refused:
            if isinstance(exc, DependencyUnavailable):
                reason = f"job queue unavailable: {exc}"
                await self.finish(view.job_id, JobStatus.FAILED, error=reason)
        if refused:
            raise refused[0][1]

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
        fresh = or_(JobRecord.stage.is_(None), JobRecord.stage.in_(["queued", "retrying"]))
        # One statement, so that of two deliveries of one job only one takes it.
        take = (
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.status.not_in(_TERMINAL), free)
            .values(
                attempts=JobRecord.attempts + 1,
                updated_at=now,
                status=JobStatus.RUNNING.value,
                stage=case((fresh, "running"), else_=JobRecord.stage),
                started_at=func.coalesce(JobRecord.started_at, literal(now, _STAMP)),
            )
            .returning(*_COLUMNS)
        )
        async with self._engine.connect() as conn:
            taken = (await conn.execute(take)).first()
            if taken is not None:
                return JobRecord(**taken._mapping)
            status = await conn.scalar(select(JobRecord.status).where(JobRecord.id == job_id))
        if status is None or JobStatus(status).terminal:
            return None
        raise JobHeld(job_id)

    async def touch(self, job_id: str) -> None:
        """Renew the lease of a running job (see `claim`)."""
        async with self._engine.connect() as conn:
            await conn.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.status == JobStatus.RUNNING.value)
                .values(updated_at=self.clock())
            )

    async def record_progress(self, job_id: str, fraction: float, stage: str | None) -> bool:
        """Store progress; whether a cancel was requested (read in the same statement)."""
        values: dict[str, Any] = {"progress": fraction, "updated_at": self.clock()}
        if stage is not None:
            values["stage"] = stage
        async with self._engine.connect() as conn:
            flag = await conn.scalar(
                update(JobRecord)
                .where(JobRecord.id == job_id)
                .values(**values)
                .returning(JobRecord.cancel_requested)
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
        """Record a run's outcome: a terminal status, or QUEUED for a run that will be retried."""
        now = self.clock()
        values: dict[str, Any] = {"status": status.value, "updated_at": now, "error": error}
        if status.terminal:
            values |= {"finished_at": now, "stage": status.value}
        else:
            values["stage"] = "retrying"
        if status is JobStatus.SUCCEEDED:
            values |= {"result": result, "progress": 1.0}
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    update(JobRecord)
                    .where(JobRecord.id == job_id)
                    .values(**values)
                    .returning(*_COLUMNS)
                )
            ).first()
        return None if row is None else JobRecord(**row._mapping)


def _queued(row: dict[str, Any]) -> JobView:
    return JobView(
        job_id=row["id"],
        kind=row["kind"],
        service=row["service"],
        status=JobStatus.QUEUED,
        stage="queued",
        progress=0.0,
        attempts=0,
        result=None,
        error=None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=None,
        finished_at=None,
    )


def _headers(identity: Identity, ctx: RequestContext | None, job_id: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        TENANT_HEADER: identity.tenant_id,
        CORRELATION_HEADER: ctx.correlation_id if ctx else job_id,
        REQUEST_HEADER: new_id(),
    }
    if identity.user_id:
        headers[USER_HEADER] = identity.user_id
    return headers
