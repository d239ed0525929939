"""Retention: raw operations older than the retention period are deleted hourly, in chunks;
the rollups are kept (they are small), so long-range metrics survive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import delete, select

from faas.services.llmops_service.tables import OperationRow
from faas.shared.clock import utcnow
from faas.shared.database import Database

log = logging.getLogger("faas.llmops")

RETENTION_EVERY_S: Final = 3600.0
DELETE_CHUNK: Final = 10_000


class Retention:
    def __init__(self, db: Database, retention_days: int) -> None:
        self.db = db
        self.retention_days = retention_days
        self._task: asyncio.Task[None] | None = None
        self._others: list[Callable[[datetime | None], Awaitable[int]]] = []

    def also(self, purge: Callable[[datetime | None], Awaitable[int]]) -> None:
        """Run another purge (stored traces) on the same schedule."""
        self._others.append(purge)

    def start(self) -> None:
        """Prune hourly from now on; a retention of 0 days keeps everything."""
        if self.retention_days > 0:
            self._task = asyncio.create_task(self._loop(), name="llmops-ttl")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge(self, now: datetime | None = None) -> int:
        """Delete raw operations older than the retention period (rollups are kept)."""
        cutoff = (now or utcnow()) - timedelta(days=self.retention_days)
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

    async def _loop(self) -> None:
        while True:
            try:
                removed = await self.purge()
                if removed:
                    log.info("llmops retention removed %d operations", removed)
                for purge in self._others:
                    await purge(None)
            except Exception:
                log.exception("llmops retention failed")
            await asyncio.sleep(RETENTION_EVERY_S)
