"""Writes: deduplicated multi-row inserts plus incremental rollups (hourly by model and
operation; daily by agent), in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from faas.services.llmops_service.tables import (
    BUCKET_COLUMNS,
    LATENCY_BOUNDS_MS,
    AgentRollupRow,
    OperationRow,
    RollupRow,
)
from faas.shared.database import Database

log = logging.getLogger("faas.llmops")

OPERATIONS: Table = OperationRow.__table__  # type: ignore[assignment]
ROLLUPS: Table = RollupRow.__table__  # type: ignore[assignment]
AGENTS: Table = AgentRollupRow.__table__  # type: ignore[assignment]
AGENT_KEY = ("tenant_id", "day", "agent")
AGENT_SUMS = ("count", "total_tokens", "cost_usd")
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


def bucket_of(latency_ms: float) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


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


def json_insert(table: Table, tail: str) -> str:
    """`INSERT INTO table (...) SELECT ... FROM json_populate_recordset(NULL::table, $1) {tail}`:
    a whole batch as one JSON array (keys = column names), one statement, one round trip."""
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    return (
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} '
        f'FROM json_populate_recordset(NULL::"{table.name}", $1::json) {tail}'
    )


def day_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


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


def _upsert_sql(table: Table, keys: Sequence[str], sums: Sequence[str]) -> str:
    updates = ", ".join(f'"{n}" = "{table.name}"."{n}" + EXCLUDED."{n}"' for n in sums)
    columns = ", ".join(f'"{k}"' for k in keys)
    return json_insert(table, f"ON CONFLICT ({columns}) DO UPDATE SET {updates}")


class OperationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # PostgreSQL: the batch as one JSON document on the session's own asyncpg connection;
        # SQLAlchemy's executemany spent more CPU per row than the database (bench/llmops.py).
        self._pg_ops = json_insert(
            OPERATIONS, 'ON CONFLICT ("tenant_id", "id") DO NOTHING RETURNING "tenant_id", "id"'
        )
        self._pg_rollups = _upsert_sql(ROLLUPS, ROLLUP_KEY, ROLLUP_SUMS)
        self._pg_agents = _upsert_sql(AGENTS, AGENT_KEY, AGENT_SUMS)
        insert = sqlite.insert if db.is_sqlite else postgresql.insert
        self._insert_ops = (
            insert(OPERATIONS)
            .on_conflict_do_nothing(index_elements=["tenant_id", "id"])
            .returning(OPERATIONS.c.tenant_id, OPERATIONS.c.id)
        )
        ins = insert(ROLLUPS)
        self._upsert_rollups = ins.on_conflict_do_update(
            index_elements=list(ROLLUP_KEY),
            set_={name: ROLLUPS.c[name] + ins.excluded[name] for name in ROLLUP_SUMS},
        )
        ins = insert(AGENTS)
        self._upsert_agents = ins.on_conflict_do_update(
            index_elements=list(AGENT_KEY),
            set_={name: AGENTS.c[name] + ins.excluded[name] for name in AGENT_SUMS},
        )

    async def write(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Insert operations, ignoring ones already stored (same tenant and id), and add the
        new ones to the hourly rollups, in one transaction. Returns the ids inserted."""
        unique: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            unique.setdefault((row["tenant_id"], row["id"]), row)
        if not unique:
            return []
        batch = list(unique.values())
        if not self.db.is_sqlite:
            return await self._write_pg(batch)
        inserted: set[tuple[str, str]] = set()
        async with self.db.session() as session:
            # executemany: SQLAlchemy batches it into multi-row INSERT ... RETURNING statements
            # ("insertmanyvalues") from one cached compiled statement.
            result = await session.execute(self._insert_ops, batch)
            inserted.update((t, i) for t, i in result.all())
            fresh = [r for r in batch if (r["tenant_id"], r["id"]) in inserted]
            if fresh:
                await session.execute(self._upsert_rollups, rollup_rows(fresh))
                await session.execute(self._upsert_agents, agent_rows(fresh))
        return [r["id"] for r in fresh]

    async def _write_pg(self, batch: list[dict[str, Any]]) -> list[str]:
        # Rows in key order, so that replicas writing overlapping keys lock them in the same
        # order (no deadlock between two batches' upserts).
        batch.sort(key=lambda r: (r["tenant_id"], r["id"]))
        async with self.db.session() as session:
            connection = await session.connection()
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection  # asyncpg.Connection
            # SQLAlchemy's asyncpg adapter opens its transaction only when SQL goes through it;
            # the three statements must commit together (rollups only count inserted rows).
            async with driver.transaction():
                records = await driver.fetch(self._pg_ops, orjson.dumps(batch).decode())
                inserted = {(rec[0], rec[1]) for rec in records}
                fresh = [r for r in batch if (r["tenant_id"], r["id"]) in inserted]
                if fresh:
                    hourly = sorted(rollup_rows(fresh), key=_key(ROLLUP_KEY))
                    agents = sorted(agent_rows(fresh), key=_key(AGENT_KEY))
                    await driver.execute(self._pg_rollups, orjson.dumps(hourly).decode())
                    await driver.execute(self._pg_agents, orjson.dumps(agents).decode())
        return [r["id"] for r in fresh]


def _key(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    return lambda row: tuple(row[n] for n in names)
