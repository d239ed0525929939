"""The job record (table `jobs`, migration 0001) and its wire model."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from faas.shared.database import Base, TenantOwned, UTCDateTime


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobRecord(TenantOwned, Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(128))
    service: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    traceparent: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobView(BaseModel):
    job_id: str
    kind: str
    service: str
    status: JobStatus
    stage: str | None
    progress: float
    attempts: int
    result: Any | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: JobRecord) -> JobView:
        return cls(
            job_id=row.id,
            kind=row.kind,
            service=row.service,
            status=JobStatus(row.status),
            stage=row.stage,
            progress=row.progress,
            attempts=row.attempts,
            result=row.result,
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class JobMessage(BaseModel):
    """What the bus carries to a worker for a submitted job: only a pointer, the job's record
    (payload, attempts, status) stays in the `jobs` table."""

    job_id: str
    kind: str
    tenant_id: str


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    location: str


# One batch is one INSERT statement of this many rows: well inside the bind-parameter limits
# of SQLite (32,766) and PostgreSQL (32,767) at 15 columns a row.
MAX_BATCH = 1000


class JobSubmission(BaseModel):
    kind: str = Field(max_length=128)
    payload: dict[str, Any] = Field(default_factory=dict)


class JobBatch(BaseModel):
    """`POST /api/v1/jobs:batch`: jobs of kinds their services let callers submit directly."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "jobs": [
                        {"kind": "notes.compact", "payload": {"notebook": "n1"}},
                        {"kind": "notes.compact", "payload": {"notebook": "n2"}},
                    ]
                }
            ]
        }
    )

    jobs: list[JobSubmission] = Field(min_length=1, max_length=MAX_BATCH)


class JobBatchAccepted(BaseModel):
    jobs: list[JobAccepted]
