"""Writes: deduplicated multi-row inserts plus incremental rollups (hourly by model and
operation; daily by agent), in one transaction. The one place with dialect-specific SQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Table, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from faas.services.llmops_service.rollups import (
    AGENT_KEY,
    AGENT_SUMS,
    ROLLUP_KEY,
    ROLLUP_SUMS,
    agent_rows,
    rollup_rows,
)
from faas.services.llmops_service.tables import AgentRollupRow, OperationRow, RollupRow
from faas.shared.database import Database

OPERATIONS: Table = OperationRow.__table__  # type: ignore[assignment]
ROLLUPS: Table = RollupRow.__table__  # type: ignore[assignment]
AGENTS: Table = AgentRollupRow.__table__  # type: ignore[assignment]


def json_insert(table: Table, tail: str) -> str:
    """`INSERT INTO table (...) SELECT ... FROM json_populate_recordset(...) {tail}`: a whole
    batch as one JSON array (keys = column names) in the `batch` parameter, one statement, one
    round trip."""
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    return (
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} '
        f'FROM json_populate_recordset(CAST(NULL AS "{table.name}"), CAST(:batch AS json)) {tail}'
    )


def _upsert_sql(table: Table, keys: Sequence[str], sums: Sequence[str]) -> str:
    updates = ", ".join(f'"{n}" = "{table.name}"."{n}" + EXCLUDED."{n}"' for n in sums)
    columns = ", ".join(f'"{k}"' for k in keys)
    return json_insert(table, f"ON CONFLICT ({columns}) DO UPDATE SET {updates}")


class OperationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # PostgreSQL: the batch as one JSON document per statement; SQLAlchemy's executemany
        # spent more CPU per row than the database (bench/llmops.py).
        self._pg_ops = json_insert(
            OPERATIONS, 'ON CONFLICT ("tenant_id", "id") DO NOTHING RETURNING "tenant_id", "id"'
        )
        self._pg_rollups = _upsert_sql(ROLLUPS, ROLLUP_KEY, ROLLUP_SUMS)
        self._pg_agents = _upsert_sql(AGENTS, AGENT_KEY, AGENT_SUMS)
        # SQLite: dialect inserts, run as executemany.
        self._insert_ops = (
            sqlite.insert(OPERATIONS)
            .on_conflict_do_nothing(index_elements=["tenant_id", "id"])
            .returning(OPERATIONS.c.tenant_id, OPERATIONS.c.id)
        )
        ins = sqlite.insert(ROLLUPS)
        self._upsert_rollups = ins.on_conflict_do_update(
            index_elements=list(ROLLUP_KEY),
            set_={name: ROLLUPS.c[name] + ins.excluded[name] for name in ROLLUP_SUMS},
        )
        ins = sqlite.insert(AGENTS)
        self._upsert_agents = ins.on_conflict_do_update(
            index_elements=list(AGENT_KEY),
            set_={name: AGENTS.c[name] + ins.excluded[name] for name in AGENT_SUMS},
        )

    async def write(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Insert operations, ignoring ones already stored (same tenant and id), and add the
        new ones to the rollups, in one transaction. Returns the ids inserted."""
        unique: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            unique.setdefault((row["tenant_id"], row["id"]), row)
        if not unique:
            return []
        batch = list(unique.values())
        async with self.db.session() as session:
            if self.db.is_sqlite:
                return await self._write_sqlite(session, batch)
            return await self._write_pg(session, batch)

    async def _write_sqlite(self, session: AsyncSession, batch: list[dict[str, Any]]) -> list[str]:
        # executemany: SQLAlchemy batches it into multi-row INSERT ... RETURNING statements
        # ("insertmanyvalues") from one cached compiled statement.
        result = await session.execute(self._insert_ops, batch)
        inserted = {(t, i) for t, i in result.all()}
        fresh = [r for r in batch if (r["tenant_id"], r["id"]) in inserted]
        if fresh:
            await session.execute(self._upsert_rollups, rollup_rows(fresh))
            await session.execute(self._upsert_agents, agent_rows(fresh))
        return [r["id"] for r in fresh]

    async def _write_pg(self, session: AsyncSession, batch: list[dict[str, Any]]) -> list[str]:
        # Rows in key order, so that replicas writing overlapping keys lock them in the same
        # order (no deadlock between two batches' upserts).
        batch.sort(key=_key(("tenant_id", "id")))
        result = await session.execute(text(self._pg_ops), _json(batch))
        inserted = {(t, i) for t, i in result.all()}
        fresh = [r for r in batch if (r["tenant_id"], r["id"]) in inserted]
        if fresh:
            hourly = sorted(rollup_rows(fresh), key=_key(ROLLUP_KEY))
            agents = sorted(agent_rows(fresh), key=_key(AGENT_KEY))
            await session.execute(text(self._pg_rollups), _json(hourly))
            await session.execute(text(self._pg_agents), _json(agents))
        return [r["id"] for r in fresh]


def _json(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {"batch": orjson.dumps(rows).decode()}


def _key(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    return lambda row: tuple(row[n] for n in names)
