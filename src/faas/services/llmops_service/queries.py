"""Read use cases: the raw operations page, and metrics and cost analysis from the rollups
(no query but the paged list reads the operations log)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from faas.services.llmops_service.models import CostAnalysis, CostItem, GroupBy, OperationView
from faas.services.llmops_service.rollups import day_of, hour_of
from faas.services.llmops_service.stats import SUMS, stats_rows
from faas.services.llmops_service.tables import AgentRollupRow, OperationRow, RollupRow
from faas.shared.clock import utcnow
from faas.shared.contracts import Page
from faas.shared.database import Database
from faas.shared.exceptions import ValidationFailed

# Which tenants a cost analysis breaks down by: every one, the caller's own, or none.
TenantBreakdown = Literal["all", "own"] | None

MAX_RANGE: Final = timedelta(days=366)
DEFAULT_RANGE: Final = timedelta(days=1)
HOUR_FORMAT: Final = "%Y-%m-%dT%H:00:00Z"
R = RollupRow.__table__.c
A = AgentRollupRow.__table__.c
_VIEW_FIELDS: Final = tuple(name for name in OperationView.model_fields if name != "metadata")


def time_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """A query's [start, end) in UTC: the last day by default, at most `MAX_RANGE` long."""
    end = utcnow() if end is None else end
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


@dataclass(frozen=True)
class OperationFilter:
    """Which operations a page lists: [start, end) and exact values; None matches any."""

    start: datetime | None = None
    end: datetime | None = None
    model: str | None = None
    operation: str | None = None
    status: str | None = None
    user_id: str | None = None
    agent_id: str | None = None


class OperationQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_operations(
        self, tenant: str, where: OperationFilter, *, limit: int = 50, offset: int = 0
    ) -> Page[OperationView]:
        """A page of raw operations, newest first."""
        conds: list[ColumnElement[bool]] = [OperationRow.tenant_id == tenant]
        if where.start is not None:
            conds.append(OperationRow.occurred_at >= where.start)
        if where.end is not None:
            conds.append(OperationRow.occurred_at < where.end)
        for column, value in (
            (OperationRow.model, where.model),
            (OperationRow.operation, where.operation),
            (OperationRow.status, where.status),
            (OperationRow.user_id, where.user_id),
            (OperationRow.agent_id, where.agent_id),
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
        conds = _rollup_where(tenant, start, end, model, operation)
        key = R.model if group_by == "model" else R.hour
        stmt: Select[Any] = select(key, *SUMS).where(*conds).group_by(key).order_by(key)
        async with self.db.session() as session:
            rows = (await session.execute(stmt)).all()
        labels = _labels([row[0] for row in rows], group_by)
        matrix = np.array([row[1:] for row in rows], dtype=np.float64)
        matrix = np.nan_to_num(matrix.reshape(len(rows), len(SUMS)))
        keys = list(dict.fromkeys(labels))
        if len(keys) != len(labels):  # day: fold the hours of each day
            position = {k: i for i, k in enumerate(keys)}
            folded = np.zeros((len(keys), len(SUMS)), dtype=np.float64)
            np.add.at(folded, [position[k] for k in labels], matrix)
            matrix = folded
        return {
            "tenant_id": tenant,
            "from": start,
            "to": end,
            "group_by": group_by,
            "totals": stats_rows([None], matrix.sum(axis=0, keepdims=True))[0],
            "series": stats_rows(keys, matrix),
        }

    async def cost_analysis(
        self, tenant: str, start: datetime, end: datetime, *, by_tenant: TenantBreakdown = None
    ) -> CostAnalysis:
        """`by_tenant`: "all" lists every tenant's cost, "own" only `tenant`'s, None nothing."""
        conds = _rollup_where(tenant, start, end)
        async with self.db.session() as session:
            by_model = await _costs_by(session, R.model, conds)
            by_operation = await _costs_by(session, R.operation, conds)
            hours = await _costs_by(session, R.hour, conds)
            tenants = None
            if by_tenant is not None:
                scope = tenant if by_tenant == "own" else None
                tenants = await _costs_by(session, R.tenant_id, _rollup_where(scope, start, end))
            agents = await _agent_costs(session, tenant, start, end)
        return CostAnalysis(
            tenant_id=tenant,
            start=start,
            end=end,
            total_cost_usd=round(sum(i.cost_usd for i in by_model), 9),
            by_model=_ranked(by_model),
            by_operation=_ranked(by_operation),
            by_agent=_ranked(agents),
            by_tenant=_ranked(tenants) if tenants is not None else None,
            trend=_daily_trend(hours),
        )


def _rollup_where(
    tenant: str | None,
    start: datetime,
    end: datetime,
    model: str | None = None,
    operation: str | None = None,
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [R.hour >= hour_of(start), R.hour < end]
    if tenant is not None:
        conds.append(R.tenant_id == tenant)
    if model is not None:
        conds.append(R.model == model)
    if operation is not None:
        conds.append(R.operation == operation)
    return conds


async def _costs_by(
    session: AsyncSession, column: Any, where: list[ColumnElement[bool]]
) -> list[CostItem]:
    stmt = (
        select(column, func.sum(R.count), func.sum(R.total_tokens), func.sum(R.cost_usd))
        .where(*where)
        .group_by(column)
    )
    return [_cost_item(r[0], r[1:]) for r in (await session.execute(stmt)).all()]


async def _agent_costs(
    session: AsyncSession, tenant: str, start: datetime, end: datetime
) -> list[CostItem]:
    """Cost per agent from the daily agent rollup, over every day overlapping [start, end)."""
    stmt = (
        select(A.agent, func.sum(A.count), func.sum(A.total_tokens), func.sum(A.cost_usd))
        .where(A.tenant_id == tenant, A.day >= day_of(start), A.day < end)
        .group_by(A.agent)
    )
    return [_cost_item(r[0] or None, r[1:]) for r in (await session.execute(stmt)).all()]


def _daily_trend(hours: Sequence[CostItem]) -> list[CostItem]:
    """Hourly costs folded per UTC day (an hour's key starts with its day)."""
    trend: dict[str, CostItem] = {}
    for item in hours:
        day = (item.key or "")[:10]
        cur = trend.get(day)
        trend[day] = (
            item.model_copy(update={"key": day})
            if cur is None
            else CostItem(
                key=day,
                count=cur.count + item.count,
                total_tokens=cur.total_tokens + item.total_tokens,
                cost_usd=round(cur.cost_usd + item.cost_usd, 9),
            )
        )
    return sorted(trend.values(), key=lambda i: i.key or "")


def _ranked(items: list[CostItem]) -> list[CostItem]:
    return sorted(items, key=lambda i: (-i.cost_usd, i.key or ""))


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
    if not isinstance(value, datetime):
        return str(value)
    moment = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%d" if group_by == "day" else HOUR_FORMAT)


def _cost_item(key: Any, values: Sequence[Any]) -> CostItem:
    label = key.strftime(HOUR_FORMAT) if isinstance(key, datetime) else key
    return CostItem(
        key=None if label is None else str(label),
        count=int(values[0] or 0),
        total_tokens=int(values[1] or 0),
        cost_usd=round(float(values[2] or 0.0), 9),
    )


def _operation_view(row: OperationRow) -> OperationView:
    return OperationView(metadata=row.meta, **{name: getattr(row, name) for name in _VIEW_FIELDS})
