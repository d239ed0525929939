"""Writes (deduplicated multi-row inserts plus incremental hourly rollups) and the batching
buffer between the event stream and the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from faas.services.llmops_service.tables import (
    BUCKET_COLUMNS,
    LATENCY_BOUNDS_MS,
    OperationRow,
    RollupRow,
)
from faas.shared.database import Database

log = logging.getLogger("faas.llmops")

OPERATIONS: Table = OperationRow.__table__  # type: ignore[assignment]
ROLLUPS: Table = RollupRow.__table__  # type: ignore[assignment]
ROLLUP_KEY = ("tenant_id", "hour", "model", "operation", "status")
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
    """Operations folded into one rollup increment per (tenant, hour, model, operation, status)."""
    acc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (
            row["tenant_id"],
            hour_of(row["occurred_at"]),
            row["model"],
            row["operation"],
            row["status"],
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


class OperationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
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

    async def write(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Insert operations, ignoring ones already stored (same tenant and id), and add the
        new ones to the hourly rollups, in one transaction. Returns the ids inserted."""
        unique: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            unique.setdefault((row["tenant_id"], row["id"]), row)
        if not unique:
            return []
        batch = list(unique.values())
        inserted: set[tuple[str, str]] = set()
        async with self.db.session() as session:
            # executemany: SQLAlchemy batches it into multi-row INSERT ... RETURNING statements
            # ("insertmanyvalues") from one cached compiled statement.
            result = await session.execute(self._insert_ops, batch)
            inserted.update((t, i) for t, i in result.all())
            fresh = [r for r in batch if (r["tenant_id"], r["id"]) in inserted]
            increments = rollup_rows(fresh)
            if increments:
                await session.execute(self._upsert_rollups, increments)
        return [r["id"] for r in fresh]


class BatchBuffer:
    """Collects rows and hands them to `write` in batches of up to `max_rows`, at least every
    `max_delay_s`. A failed write keeps the rows for the next attempt; past `max_buffer` rows
    the oldest are dropped (and counted) so a long database outage cannot exhaust memory."""

    def __init__(
        self,
        write: Callable[[Sequence[dict[str, Any]]], Awaitable[Any]],
        *,
        max_rows: int = 500,
        max_delay_s: float = 0.5,
        max_buffer: int = 100_000,
    ) -> None:
        self._write = write
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.max_buffer = max_buffer
        self._rows: list[dict[str, Any]] = []
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.batches = 0

    def __len__(self) -> int:
        return len(self._rows)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="llmops-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.max_rows:
            self._full.set()
        if len(self._rows) > self.max_buffer:
            excess = len(self._rows) - self.max_buffer
            del self._rows[:excess]
            self.dropped += excess
            log.warning("llmops buffer full: dropped %d operations", excess)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), timeout=self.max_delay_s)
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered now (in batches); stop at the first failure."""
        async with self._lock:
            while self._rows:
                batch = self._rows[: self.max_rows]
                try:
                    await self._write(batch)
                except Exception:
                    log.exception("llmops batch write failed; %d rows kept", len(self._rows))
                    return
                del self._rows[: len(batch)]
                self.written += len(batch)
                self.batches += 1
