"""Operations folded into rollup increments: hourly per (tenant, model, operation) with a
latency histogram, daily per agent. Pure functions, so the store adds them to the tables in
the same transaction as the operations they count."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from faas.services.llmops_service.tables import BUCKET_COLUMNS, LATENCY_BOUNDS_MS

ROLLUP_KEY = ("tenant_id", "hour", "model", "operation")  # errors: error_count
ROLLUP_SUMS = (
    "count",
    "error_count",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "latency_sum_ms",
    *BUCKET_COLUMNS,
)
AGENT_KEY = ("tenant_id", "day", "agent")
AGENT_SUMS = ("count", "total_tokens", "cost_usd")


def bucket_of(latency_ms: float) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def rollup_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Operations folded into one rollup increment per (tenant, hour, model, operation)."""
    acc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (
            row["tenant_id"],
            hour_of(row["occurred_at"]),
            row["model"],
            row["operation"],
        )
        agg = acc.get(key)
        if agg is None:
            agg = dict(zip(ROLLUP_KEY, key, strict=True))
            agg.update({name: 0 for name in ROLLUP_SUMS})
            agg["cost_usd"] = 0.0
            agg["latency_sum_ms"] = 0.0
            acc[key] = agg
        agg["count"] += 1
        agg["error_count"] += 1 if row["status"] != "ok" else 0
        agg["prompt_tokens"] += row["prompt_tokens"]
        agg["completion_tokens"] += row["completion_tokens"]
        agg["total_tokens"] += row["total_tokens"]
        agg["cost_usd"] += row["cost_usd"]
        agg["latency_sum_ms"] += row["latency_ms"]
        agg[BUCKET_COLUMNS[bucket_of(row["latency_ms"])]] += 1
    return list(acc.values())


def agent_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Operations folded into one increment per (tenant, day, agent or else user)."""
    acc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        agent = row.get("agent_id") or row.get("user_id") or ""
        key = (row["tenant_id"], day_of(row["occurred_at"]), agent)
        agg = acc.get(key)
        if agg is None:
            agg = acc[key] = {
                "tenant_id": key[0],
                "day": key[1],
                "agent": agent,
                "count": 0,
                "total_tokens": 0,
                "cost_usd": 0.0,
            }
        agg["count"] += 1
        agg["total_tokens"] += row["total_tokens"]
        agg["cost_usd"] += row["cost_usd"]
    return list(acc.values())
