"""LLMOps use cases: ingest usage operations (gateway events and external callers), keep the
hourly rollups current, and answer operations, metrics and cost-analysis queries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import asyncpg
import numpy as np
import sqlalchemy.exc
from fastapi import APIRouter
from sqlalchemy import ColumnElement, Float, Select, cast, delete, func, select

from faas.integrations.codec import default_registry
from faas.integrations.events import EventPublisher
from faas.integrations.nats import Message, MessageBus, Subscription
from faas.services.llmops_service.models import (
    CostAnalysis,
    CostItem,
    GroupBy,
    IngestResult,
    OperationIn,
    OperationView,
)
from faas.services.llmops_service.store import OperationStore, day_of, hour_of
from faas.services.llmops_service.tables import (
    BUCKET_COLUMNS,
    LATENCY_BOUNDS_MS,
    AgentRollupRow,
    OperationRow,
    RollupRow,
)
from faas.shared.context import new_id
from faas.shared.contracts import Page
from faas.shared.database import Database
from faas.shared.exceptions import ValidationFailed

log = logging.getLogger("faas.llmops")
# Which tenants a cost analysis breaks down by: every one, the caller's own, or none.
TenantBreakdown = Literal["all", "own"] | None

# What a database says when it refuses a row's data (not when it is down); TypeError covers
# values the JSON encoder cannot write.
REJECTED: Final = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    sqlalchemy.exc.DataError,
    sqlalchemy.exc.IntegrityError,
    OverflowError,
    TypeError,
)

USAGE_SUBJECT: Final = "gateway.usage.*"
USAGE_STREAM: Final = "usage"  # JetStream stream {PREFIX}_USAGE
CONSUMER: Final = "llmops"  # the durable consumer every LLMOps replica shares
USAGE_MAX_AGE_S: Final = 7 * 24 * 3600.0  # unconsumed usage is kept this long
MAX_RANGE: Final = timedelta(days=366)
DEFAULT_RANGE: Final = timedelta(days=1)
RETENTION_EVERY_S: Final = 3600.0
DELETE_CHUNK: Final = 10_000
R = RollupRow.__table__.c
A = AgentRollupRow.__table__.c


def _now() -> datetime:
    return datetime.now(UTC)


INT4_MAX: Final = 2**31 - 1  # the operations table's token columns are 4-byte integers


def _int(value: Any) -> int:
    """A count from an event: clamped to [0, INT4_MAX]; garbage (inf, text) is 0."""
    try:
        return min(INT4_MAX, max(0, int(value or 0)))
    except (TypeError, ValueError, OverflowError):
        return 0


def _float(value: Any) -> float:
    """A cost or latency from an event: finite and non-negative, else 0."""
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _str(value: Any, limit: int = 128) -> str | None:
    return None if value is None or value is False else str(value)[:limit]


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return _now()
    else:
        return _now()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def event_row(body: dict[str, Any]) -> dict[str, Any] | None:
    """A `gateway.usage.{tenant}` event body as an operations row (None when malformed)."""
    event_id, tenant = body.get("id"), body.get("tenant_id")
    data = body.get("data")
    if not event_id or not tenant or not isinstance(data, dict):
        return None
    prompt, completion = _int(data.get("prompt_tokens")), _int(data.get("completion_tokens"))
    meta = {k: data[k] for k in ("usage_source", "upstream_ms", "reasoning_tokens") if k in data}
    status = _str(data.get("status"), 32) or "ok"
    return {
        "tenant_id": str(tenant)[:64],
        "id": str(event_id)[:64],
        "occurred_at": _moment(body.get("occurred_at")),
        "source": "gateway",
        "operation": _str(data.get("operation"), 64) or "chat",
        "model": _str(data.get("model")) or "unknown",
        "deployment": _str(data.get("deployment")),
        "provider": _str(data.get("provider"), 64),
        "upstream_model": _str(data.get("upstream_model")),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _int(data.get("total_tokens")) or prompt + completion,
        "cached_tokens": _int(data.get("cached_tokens")),
        "cost_usd": _float(data.get("cost_usd")),
        "latency_ms": _float(data.get("latency_ms")),
        "status": status,
        "error_code": _str(data.get("error_code"), 64),
        "cached": bool(data.get("cached")),
        "stream": bool(data.get("stream")),
        "user_id": _str(data.get("user_id")),
        "agent_id": _str(data.get("agent_id")),
        "correlation_id": _str(data.get("correlation_id")),
        "request_id": _str(data.get("request_id")),
        "metadata": meta or None,
    }


def api_row(tenant: str, op: OperationIn, user_id: str | None) -> dict[str, Any]:
    meta = dict(op.metadata)
    agent = op.agent_id or _str(meta.get("agent_id"))
    return {
        "tenant_id": tenant,
        "id": op.id or new_id(),
        "occurred_at": (op.occurred_at or _now()).astimezone(UTC),
        "source": "api",
        "operation": op.operation,
        "model": op.model,
        "deployment": None,
        "provider": op.provider,
        "upstream_model": None,
        "prompt_tokens": op.prompt_tokens,
        "completion_tokens": op.completion_tokens,
        "total_tokens": op.total_tokens
        if op.total_tokens is not None
        else op.prompt_tokens + op.completion_tokens,
        "cached_tokens": op.cached_tokens,
        "cost_usd": op.cost_usd,
        "latency_ms": op.latency_ms,
        "status": op.status,
        "error_code": op.error_code,
        "cached": False,
        "stream": False,
        "user_id": op.user_id or user_id,
        "agent_id": agent,
        "correlation_id": None,
        "request_id": None,
        "metadata": meta or None,
    }


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, interpolated linearly inside its bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_BOUNDS_MS):
                return float(low)
            high = LATENCY_BOUNDS_MS[i]
            return round(low + (high - low) * max(0.0, rank - seen) / n, 3)
        seen += n
    return float(LATENCY_BOUNDS_MS[-1])


def time_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = _now() if end is None else end
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    end = end.astimezone(UTC)
    if start is None:
        start = end - DEFAULT_RANGE
    elif start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    start = start.astimezone(UTC)
    if start >= end:
        raise ValidationFailed("'from' must be before 'to'")
    if end - start > MAX_RANGE:
        raise ValidationFailed(f"the range may span at most {MAX_RANGE.days} days")
    return start, end


# Sums arrive as floats: PostgreSQL's SUM(integer) is a numeric, and a Decimal per cell was
# the largest cost of a metrics query (720 hours x 26 columns).
_SUMS = tuple(
    func.sum(cast(column, Float))
    for column in (
        R.count,
        R.error_count,
        R.prompt_tokens,
        R.completion_tokens,
        R.total_tokens,
        R.cost_usd,
        R.latency_sum_ms,
        *(R[name] for name in BUCKET_COLUMNS),
    )
)


def _stats(keys: Sequence[str | None], sums: np.ndarray) -> list[dict[str, Any]]:
    """`Stats` rows (as JSON-ready dicts) from summed rollup columns (one row per key, columns
    in `_SUMS` order), every column computed for all rows at once; percentiles come from the
    histogram columns."""
    if len(keys) == 0:
        return []
    counts = sums[:, 0]
    has = (counts > 0).tolist()
    safe = np.where(counts > 0, counts, 1.0)
    buckets = sums[:, 7:]
    cum = np.cumsum(buckets, axis=1)
    lows = np.array((0.0, *LATENCY_BOUNDS_MS), dtype=np.float64)
    highs = np.array((*LATENCY_BOUNDS_MS, LATENCY_BOUNDS_MS[-1]), dtype=np.float64)
    pcts: list[list[float]] = []
    rows = np.arange(len(keys))
    for q in (0.50, 0.95, 0.99):
        rank = q * counts
        idx = np.minimum((cum < rank[:, None] - 1e-9).sum(axis=1), buckets.shape[1] - 1)
        n = buckets[rows, idx]
        before = cum[rows, idx] - n
        frac = np.where(n > 0, np.clip(rank - before, 0, None) / np.where(n > 0, n, 1), 0.0)
        pcts.append(np.round(lows[idx] + (highs[idx] - lows[idx]) * frac, 3).tolist())
    ints = np.rint(sums[:, :5]).astype(np.int64).tolist()
    error_rate = np.round(sums[:, 1] / safe, 6).tolist()
    cost = np.round(sums[:, 5], 9).tolist()
    avg = np.round(sums[:, 6] / safe, 3).tolist()
    return [
        {
            "key": key,
            "count": ints[i][0],
            "errors": ints[i][1],
            "error_rate": error_rate[i] if has[i] else 0.0,
            "prompt_tokens": ints[i][2],
            "completion_tokens": ints[i][3],
            "total_tokens": ints[i][4],
            "cost_usd": cost[i],
            "latency_avg_ms": avg[i] if has[i] else None,
            "latency_p50_ms": pcts[0][i] if has[i] else None,
            "latency_p95_ms": pcts[1][i] if has[i] else None,
            "latency_p99_ms": pcts[2][i] if has[i] else None,
        }
        for i, key in enumerate(keys)
    ]


class LlmopsService:
    name = "llmops"

    def __init__(
        self,
        *,
        db: Database,
        bus: MessageBus,
        events: EventPublisher,
        retention_days: int = 90,
        batch_rows: int = 1000,
        consume: bool = True,
    ) -> None:
        self.db = db
        self.bus = bus
        self.events = events
        self.retention_days = retention_days
        self.batch_rows = batch_rows
        self.consume = consume
        self.store = OperationStore(db)
        self._codecs = default_registry()
        self._subscription: Subscription | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self.malformed = 0
        self.rejected = 0  # events the database refused (out-of-range values, say)
        self.ingested = 0  # usage events written (duplicates excluded)
        self.batches = 0

    def router(self) -> APIRouter:
        from faas.services.llmops_service.routes import build_router

        return build_router(self)

    async def start(self) -> None:
        if self.consume:
            self._subscription = await self.bus.consume_stream(
                USAGE_STREAM,
                [USAGE_SUBJECT],
                CONSUMER,
                self.on_usage,
                batch=self.batch_rows,
                max_age_s=USAGE_MAX_AGE_S,
            )
        if self.retention_days > 0:
            self._retention_task = asyncio.create_task(self._retention_loop(), name="llmops-ttl")

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None

    # -- ingestion -------------------------------------------------------------------------

    async def on_usage(self, messages: Sequence[Message]) -> None:
        """A batch of `gateway.usage.*` events → one transaction. Returning acknowledges the
        batch; a database error raises, so the bus redelivers it later and nothing is lost
        (rows are keyed by event id, so a redelivered event is stored once). Malformed events
        are counted and dropped: redelivering them would never help."""
        rows: list[dict[str, Any]] = []
        for message in messages:
            codec = self._codecs.find(message.headers.get("Content-Type", "")) or self.events.codec
            try:
                body = codec.decode(message.data)
            except Exception:
                self.malformed += 1
                log.warning("undecodable usage event on %s", message.subject)
                continue
            row = event_row(body) if isinstance(body, dict) else None
            if row is None:
                self.malformed += 1
                continue
            rows.append(row)
        if rows:
            inserted = await self._write_isolating(rows)
            self.ingested += len(inserted)
            self.batches += 1

    async def _write_isolating(self, rows: list[dict[str, Any]]) -> list[str]:
        """Write a batch; when the database refuses its data, halve it until the rows it
        refuses are alone, and drop (count) those: one bad event must not hold back the batch
        it came with, redelivered forever. Other errors (database down) propagate."""
        try:
            return await self.store.write(rows)
        except REJECTED:
            if len(rows) == 1:
                self.rejected += 1
                log.warning("usage event %s rejected by the database", rows[0]["id"], exc_info=True)
                return []
        half = len(rows) // 2
        return await self._write_isolating(rows[:half]) + await self._write_isolating(rows[half:])

    async def log_operations(
        self, tenant: str, user_id: str | None, ops: Sequence[OperationIn]
    ) -> IngestResult:
        rows = [api_row(tenant, op, user_id) for op in ops]
        inserted = await self.store.write(rows)
        return IngestResult(
            accepted=len(inserted),
            duplicates=len(rows) - len(inserted),
            ids=[r["id"] for r in rows],
        )

    async def purge(self, now: datetime | None = None) -> int:
        """Delete raw operations older than the retention period (rollups are kept)."""
        cutoff = (now or _now()) - timedelta(days=self.retention_days)
        removed = 0
        while True:
            async with self.db.session() as session:
                ids = (
                    await session.execute(
                        select(OperationRow.tenant_id, OperationRow.id)
                        .where(OperationRow.occurred_at < cutoff)
                        .limit(DELETE_CHUNK)
                    )
                ).all()
                if not ids:
                    return removed
                for tenant in {t for t, _ in ids}:
                    await session.execute(
                        delete(OperationRow).where(
                            OperationRow.tenant_id == tenant,
                            OperationRow.id.in_([i for t, i in ids if t == tenant]),
                        )
                    )
                removed += len(ids)

    async def _retention_loop(self) -> None:
        while True:
            try:
                removed = await self.purge()
                if removed:
                    log.info("llmops retention removed %d operations", removed)
            except Exception:
                log.exception("llmops retention failed")
            await asyncio.sleep(RETENTION_EVERY_S)

    # -- queries ---------------------------------------------------------------------------

    async def list_operations(
        self,
        tenant: str,
        *,
        start: datetime | None,
        end: datetime | None,
        model: str | None = None,
        operation: str | None = None,
        status: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[OperationView]:
        conds: list[ColumnElement[bool]] = [OperationRow.tenant_id == tenant]
        if start is not None:
            conds.append(OperationRow.occurred_at >= start)
        if end is not None:
            conds.append(OperationRow.occurred_at < end)
        for column, value in (
            (OperationRow.model, model),
            (OperationRow.operation, operation),
            (OperationRow.status, status),
            (OperationRow.user_id, user_id),
            (OperationRow.agent_id, agent_id),
        ):
            if value is not None:
                conds.append(column == value)
        async with self.db.session() as session:
            total = await session.scalar(
                select(func.count()).select_from(OperationRow).where(*conds)
            )
            rows = (
                await session.scalars(
                    select(OperationRow)
                    .where(*conds)
                    .order_by(OperationRow.occurred_at.desc(), OperationRow.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        items = [_operation_view(r) for r in rows]
        return Page[OperationView](items=items, total=total or 0, limit=limit, offset=offset)

    def _rollup_where(
        self,
        tenant: str | None,
        start: datetime,
        end: datetime,
        model: str | None,
        operation: str | None,
    ) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [R.hour >= hour_of(start), R.hour < end]
        if tenant is not None:
            conds.append(R.tenant_id == tenant)
        if model is not None:
            conds.append(R.model == model)
        if operation is not None:
            conds.append(R.operation == operation)
        return conds

    async def metrics(
        self,
        tenant: str,
        start: datetime,
        end: datetime,
        group_by: GroupBy,
        *,
        model: str | None = None,
        operation: str | None = None,
    ) -> dict[str, Any]:
        """Aggregates from the hourly rollups over every hour overlapping [start, end), as the
        JSON form of `MetricsView` (built directly: pydantic models per row cost more than the
        query)."""
        conds = self._rollup_where(tenant, start, end, model, operation)
        key = R.model if group_by == "model" else R.hour
        stmt: Select[Any] = select(key, *_SUMS).where(*conds).group_by(key).order_by(key)
        async with self.db.session() as session:
            rows = (await session.execute(stmt)).all()
        labels = _labels([row[0] for row in rows], group_by)
        matrix = np.array([row[1:] for row in rows], dtype=np.float64)
        matrix = np.nan_to_num(matrix.reshape(len(rows), len(_SUMS)))
        keys = list(dict.fromkeys(labels))
        if len(keys) != len(labels):  # day: fold the hours of each day
            position = {k: i for i, k in enumerate(keys)}
            folded = np.zeros((len(keys), len(_SUMS)), dtype=np.float64)
            np.add.at(folded, [position[k] for k in labels], matrix)
            matrix = folded
        return {
            "tenant_id": tenant,
            "from": start,
            "to": end,
            "group_by": group_by,
            "totals": _stats([None], matrix.sum(axis=0, keepdims=True))[0],
            "series": _stats(keys, matrix),
        }

    async def cost_analysis(
        self, tenant: str, start: datetime, end: datetime, *, by_tenant: TenantBreakdown = None
    ) -> CostAnalysis:
        """`by_tenant`: "all" lists every tenant's cost, "own" only `tenant`'s, None nothing."""
        conds = self._rollup_where(tenant, start, end, None, None)
        cost = func.sum(R.cost_usd)
        sums = (func.sum(R.count), func.sum(R.total_tokens), cost)
        async with self.db.session() as session:

            async def grouped(column: Any, where: list[ColumnElement[bool]]) -> list[CostItem]:
                stmt = select(column, *sums).where(*where).group_by(column)
                return [_cost_item(r[0], r[1:]) for r in (await session.execute(stmt)).all()]

            by_model = await grouped(R.model, conds)
            by_operation = await grouped(R.operation, conds)
            hours = await grouped(R.hour, conds)
            tenants = (
                await grouped(
                    R.tenant_id,
                    self._rollup_where(
                        tenant if by_tenant == "own" else None, start, end, None, None
                    ),
                )
                if by_tenant is not None
                else None
            )
            agent_rows = (
                await session.execute(
                    select(
                        A.agent, func.sum(A.count), func.sum(A.total_tokens), func.sum(A.cost_usd)
                    )
                    .where(A.tenant_id == tenant, A.day >= day_of(start), A.day < end)
                    .group_by(A.agent)
                )
            ).all()
        trend: dict[str, CostItem] = {}
        for item in hours:
            day = _label(item.key, "day")
            cur = trend.get(day)
            trend[day] = (
                CostItem(
                    key=day,
                    count=item.count,
                    total_tokens=item.total_tokens,
                    cost_usd=item.cost_usd,
                )
                if cur is None
                else CostItem(
                    key=day,
                    count=cur.count + item.count,
                    total_tokens=cur.total_tokens + item.total_tokens,
                    cost_usd=round(cur.cost_usd + item.cost_usd, 9),
                )
            )

        def ranked(items: list[CostItem]) -> list[CostItem]:
            return sorted(items, key=lambda i: (-i.cost_usd, i.key or ""))

        return CostAnalysis(
            tenant_id=tenant,
            start=start,
            end=end,
            total_cost_usd=round(sum(i.cost_usd for i in by_model), 9),
            by_model=ranked(by_model),
            by_operation=ranked(by_operation),
            by_agent=ranked([_cost_item(r[0] or None, r[1:]) for r in agent_rows]),
            by_tenant=ranked(tenants) if tenants is not None else None,
            trend=sorted(trend.values(), key=lambda i: i.key or ""),
        )


def _labels(values: Sequence[Any], group_by: GroupBy) -> list[str]:
    """Group labels; hours and days formatted once per distinct value."""
    if group_by == "model":
        return [str(v) for v in values]
    memo: dict[Any, str] = {}
    out = []
    for value in values:
        label = memo.get(value)
        if label is None:
            label = memo[value] = _label(value, group_by)
        out.append(label)
    return out


def _label(value: Any, group_by: GroupBy) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        if group_by == "day":
            return moment.astimezone(UTC).strftime("%Y-%m-%d")
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:00:00Z")
    if isinstance(value, str) and group_by in ("day", "hour"):
        return _label(_moment(value), group_by)
    return str(value)


def _cost_item(key: Any, values: Sequence[Any]) -> CostItem:
    label = key.strftime("%Y-%m-%dT%H:00:00Z") if isinstance(key, datetime) else key
    return CostItem(
        key=None if label is None else str(label),
        count=int(values[0] or 0),
        total_tokens=int(values[1] or 0),
        cost_usd=round(float(values[2] or 0.0), 9),
    )


def _operation_view(row: OperationRow) -> OperationView:
    return OperationView(
        id=row.id,
        tenant_id=row.tenant_id,
        occurred_at=row.occurred_at,
        source=row.source,
        operation=row.operation,
        model=row.model,
        deployment=row.deployment,
        provider=row.provider,
        upstream_model=row.upstream_model,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        total_tokens=row.total_tokens,
        cached_tokens=row.cached_tokens,
        cost_usd=row.cost_usd,
        latency_ms=row.latency_ms,
        status=row.status,
        error_code=row.error_code,
        cached=row.cached,
        stream=row.stream,
        user_id=row.user_id,
        agent_id=row.agent_id,
        correlation_id=row.correlation_id,
        request_id=row.request_id,
        metadata=row.meta,
    )
