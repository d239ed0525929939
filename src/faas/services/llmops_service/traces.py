"""Traces LLMOps keeps (migration 0016): spans received over OTLP/HTTP, per tenant, listed
as runs (one row per trace, newest first, optionally of one session) and returned as a tree
with tokens, cost and latency per node. Pruned with the operations' retention."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel, Field
from sqlalchemy import JSON, Float, Index, Integer, String, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from faas.shared.clock import utcnow
from faas.shared.database import Base, Database, UTCDateTime
from faas.shared.exceptions import NotFound

MAX_TRACE_SPANS: Final = 5000  # spans returned for one trace
DELETE_CHUNK: Final = 10_000


class TraceSpanRow(Base):
    __tablename__ = "llmops_trace_spans"
    __table_args__ = (
        Index("ix_llmops_trace_spans_tenant_time", "tenant_id", "started_at"),
        Index("ix_llmops_trace_spans_tenant_session", "tenant_id", "session_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    span_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    service: Mapped[str] = mapped_column(String(128), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    duration_ms: Mapped[float] = mapped_column(Float, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    session_id: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    cost_usd: Mapped[float] = mapped_column(Float, nullable=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)


class TraceSummary(BaseModel):
    """One run: its root span and the sums of its model calls."""

    trace_id: str
    name: str = Field(description="The root span's name (the earliest span without a parent).")
    started_at: datetime
    duration_ms: float
    spans: int
    errors: int
    session_id: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float


class SpanNode(BaseModel):
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    started_at: datetime
    duration_ms: float
    status: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    children: list[SpanNode] = Field(default_factory=list)


class TraceTree(BaseModel):
    trace_id: str
    spans: int
    roots: list[SpanNode] = Field(description="Spans whose parent is not in this trace.")


class TraceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, rows: list[dict[str, Any]]) -> int:
        """Store spans; a span sent again (same tenant, trace and span id) is kept once."""
        if not rows:
            return 0
        insert = postgresql.insert if self.db.engine.dialect.name == "postgresql" else sqlite.insert
        async with self.db.session() as session:
            for start in range(0, len(rows), 500):
                statement = insert(TraceSpanRow).values(rows[start : start + 500])
                await session.execute(statement.on_conflict_do_nothing())
        return len(rows)

    async def list(
        self, tenant: str, *, session_id: str | None = None, limit: int = 50
    ) -> list[TraceSummary]:
        t = TraceSpanRow
        started = func.min(t.started_at)
        query = (
            select(
                t.trace_id,
                started,
                func.count(),
                func.sum(t.input_tokens),
                func.sum(t.output_tokens),
                func.sum(t.cost_usd),
                func.max(t.session_id),
            )
            .where(t.tenant_id == tenant)
            .group_by(t.trace_id)
            .order_by(started.desc())
            .limit(limit)
        )
        if session_id is not None:
            in_session = select(t.trace_id).where(t.tenant_id == tenant, t.session_id == session_id)
            query = query.where(t.trace_id.in_(in_session))
        async with self.db.session() as session:
            groups = (await session.execute(query)).all()
            ids = [g[0] for g in groups]
            spans = (
                await session.execute(
                    select(t.trace_id, t.name, t.parent_id, t.span_id, t.started_at)
                    .add_columns(t.duration_ms, t.status)
                    .where(t.tenant_id == tenant, t.trace_id.in_(ids))
                )
            ).all()
        return [_summary(group, [s for s in spans if s[0] == group[0]]) for group in groups]

    async def tree(self, tenant: str, trace_id: str) -> TraceTree:
        async with self.db.session() as session:
            rows = (
                await session.scalars(
                    select(TraceSpanRow)
                    .where(TraceSpanRow.tenant_id == tenant, TraceSpanRow.trace_id == trace_id)
                    .order_by(TraceSpanRow.started_at)
                    .limit(MAX_TRACE_SPANS)
                )
            ).all()
        if not rows:
            raise NotFound(f"trace {trace_id} not found")
        nodes = {
            r.span_id: SpanNode.model_validate(r, from_attributes=True, context=None) for r in rows
        }
        roots: list[SpanNode] = []
        for node in nodes.values():
            parent = nodes.get(node.parent_id) if node.parent_id else None
            (parent.children if parent is not None else roots).append(node)
        return TraceTree(trace_id=trace_id, spans=len(nodes), roots=roots)

    async def purge(self, retention_days: int, now: datetime | None = None) -> int:
        """Delete spans older than the retention period (0 days: keep everything)."""
        if retention_days <= 0:
            return 0
        cutoff = (now or utcnow()) - timedelta(days=retention_days)
        t = TraceSpanRow
        removed = 0
        while True:
            async with self.db.session() as session:
                keys = (
                    await session.execute(
                        select(t.tenant_id, t.trace_id).where(t.started_at < cutoff).limit(1000)
                    )
                ).all()
                if not keys:
                    return removed
                for tenant, trace_id in set(keys):
                    result = await session.execute(
                        delete(t).where(
                            t.tenant_id == tenant, t.trace_id == trace_id, t.started_at < cutoff
                        )
                    )
                    removed += int(getattr(result, "rowcount", 0) or 0)


def _summary(group: Any, spans: list[Any]) -> TraceSummary:
    trace_id, started, count, input_tokens, output_tokens, cost, session_id = group
    ids = {s[3] for s in spans}
    roots = sorted((s for s in spans if s[2] is None or s[2] not in ids), key=lambda s: s[4])
    end = max((s[4] + timedelta(milliseconds=s[5]) for s in spans), default=started)
    return TraceSummary(
        trace_id=trace_id,
        name=roots[0][1] if roots else "",
        started_at=started,
        duration_ms=round((end - started).total_seconds() * 1000, 3),
        spans=count,
        errors=sum(1 for s in spans if s[6] == "error"),
        session_id=session_id,
        input_tokens=int(input_tokens or 0),
        output_tokens=int(output_tokens or 0),
        cost_usd=float(cost or 0.0),
    )
