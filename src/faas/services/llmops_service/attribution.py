"""Spend attribution: a tenant's calls, tokens and cost over [from, to) grouped by API key,
user, team or request tag (`GET /api/v1/llmops/usage?group_by=...`), from the operations log.

A call with several tags counts once under each of them, so tag groups may add up to more
than the total; calls without the grouped attribute form the `null` group."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, Field
from sqlalchemy import bindparam, text

from faas.shared.database import Database, UTCDateTime

AttributionKey = Literal["key", "user", "team", "tag"]
MAX_GROUPS: Final = 500
_COLUMNS: Final[dict[str, str]] = {"key": "key_id", "user": "user_id", "team": "team"}
_SUMS: Final = (
    "COUNT(*), COALESCE(SUM(o.prompt_tokens), 0), COALESCE(SUM(o.completion_tokens), 0), "
    "COALESCE(SUM(o.total_tokens), 0), COALESCE(SUM(o.cached_tokens), 0), "
    "COALESCE(SUM(o.cost_usd), 0)"
)
_WHERE: Final = "o.tenant_id = :tenant AND o.occurred_at >= :lo AND o.occurred_at < :hi"


class UsageGroup(BaseModel):
    group: str | None = Field(description="The key id, user, team or tag; null: calls without one.")
    count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    cost_usd: float


class UsageAttribution(BaseModel):
    tenant_id: str
    group_by: AttributionKey
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    groups: list[UsageGroup] = Field(description="Most expensive first, at most 500.")


def _sql(group_by: AttributionKey, sqlite: bool) -> str:
    if group_by == "tag":
        # One row per (call, tag): the JSON array of tag labels unnested by the database.
        unnest = "json_each(o.tags) AS t" if sqlite else "json_array_elements_text(o.tags) AS t"
        value = "t.value" if sqlite else "t"
        return (
            f"SELECT {value} AS grp, {_SUMS} FROM llmops_operations AS o, {unnest} "
            f"WHERE {_WHERE} AND o.tags IS NOT NULL GROUP BY grp "
            "ORDER BY 7 DESC, 2 DESC LIMIT :limit"
        )
    column = _COLUMNS[group_by]
    return (
        f"SELECT o.{column} AS grp, {_SUMS} FROM llmops_operations AS o WHERE {_WHERE} "
        f"GROUP BY o.{column} ORDER BY 7 DESC, 2 DESC LIMIT :limit"
    )


async def usage_by(
    db: Database, tenant: str, group_by: AttributionKey, lo: datetime, hi: datetime
) -> UsageAttribution:
    params: dict[str, Any] = {"tenant": tenant, "lo": lo, "hi": hi, "limit": MAX_GROUPS}
    async with db.session() as session:
        query = text(_sql(group_by, db.is_sqlite)).bindparams(
            bindparam("lo", type_=UTCDateTime), bindparam("hi", type_=UTCDateTime)
        )
        rows = (await session.execute(query, params)).all()
    return UsageAttribution(
        tenant_id=tenant,
        group_by=group_by,
        start=lo,
        end=hi,
        groups=[
            UsageGroup(
                group=None if row[0] is None else str(row[0]),
                count=int(row[1]),
                prompt_tokens=int(row[2]),
                completion_tokens=int(row[3]),
                total_tokens=int(row[4]),
                cached_tokens=int(row[5]),
                cost_usd=round(float(row[6]), 9),
            )
            for row in rows
        ],
    )
