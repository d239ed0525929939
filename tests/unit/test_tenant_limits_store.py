"""The tenant-limits cache: one database read per tenant however many requests miss at once,
and an update is never overwritten by a read that started before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from faas.backends.limits import MAX_BUDGET_USD, MAX_RATE
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.tenant_limits import TenantLimitsRow, TenantLimitsStore
from faas.shared.database import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}")
    await database.migrate()
    yield database
    await database.close()


def counting(db: Database) -> list[int]:
    """Count the sessions opened (one per read) by wrapping the database's session factory."""
    opened = [0]
    original = db.session

    @asynccontextmanager
    async def session() -> AsyncIterator[Any]:
        opened[0] += 1
        async with original() as s:
            await asyncio.sleep(0.01)  # a read that takes a moment, so the callers overlap
            yield s

    db.session = session  # type: ignore[method-assign]
    return opened


async def test_concurrent_misses_read_the_database_once(db: Database) -> None:
    store = TenantLimitsStore(db, TenantLimits(rpm=10))
    opened = counting(db)
    got = await asyncio.gather(*(store.get("acme") for _ in range(32)))
    assert opened[0] == 1
    assert {g.rpm for g in got} == {10}
    await store.get("acme")  # cached
    assert opened[0] == 1
    await store.get("globex")
    assert opened[0] == 2


async def test_a_read_racing_an_update_does_not_cache_the_old_value(db: Database) -> None:
    store = TenantLimitsStore(db, TenantLimits(rpm=10))
    original = db.session
    read_done, update_done = asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def session() -> AsyncIterator[Any]:
        first = not read_done.is_set()
        async with original() as s:
            yield s
        if first:  # the read has its (old) row; hold it until the update is through
            read_done.set()
            await update_done.wait()

    db.session = session  # type: ignore[method-assign]
    reading = asyncio.ensure_future(store.get("acme"))
    await read_done.wait()
    await store.set("acme", TenantLimits(rpm=99), by="admin")
    update_done.set()
    assert (await reading).rpm == 10  # that caller saw the value of its moment
    assert (await store.get("acme")).rpm == 99  # but the cache kept the update


async def test_a_read_that_overlaps_an_update_commit_does_not_cache_the_old_value(
    db: Database,
) -> None:
    """The read starts while the update's transaction is open (so it sees the old row) and
    finishes after the update has committed and cached the new value."""
    store = TenantLimitsStore(db, TenantLimits(rpm=10))
    await store.set("acme", TenantLimits(rpm=10), by="admin")  # a row to update
    original = db.session
    opened: list[str] = []
    update_open, read_done, update_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def session() -> AsyncIterator[Any]:
        role = "update" if not opened else "read"
        opened.append(role)
        async with original() as s:
            yield s
            if role == "update":  # before the commit: let the read take the old row
                update_open.set()
                await read_done.wait()
        if role == "read":  # the read has its row; finish only after the update is cached
            read_done.set()
            await update_done.wait()

    db.session = session  # type: ignore[method-assign]
    store._cache.clear()
    updating = asyncio.ensure_future(store.set("acme", TenantLimits(rpm=99), by="admin"))
    await update_open.wait()
    reading = asyncio.ensure_future(store.get("acme"))
    await updating
    update_done.set()
    assert (await reading).rpm == 10
    assert (await store.get("acme")).rpm == 99


async def test_a_row_saved_before_the_bounds_is_clamped_not_an_error(db: Database) -> None:
    """Limits stored when 1e303 USD was accepted still load (as the largest allowed), so the
    tenant is served instead of every call failing."""
    async with db.session() as session:
        session.add(
            TenantLimitsRow(
                tenant_id="acme",
                limits={"rpm": 2**64, "monthly_budget_usd": 1e303, "daily_budget_usd": 5.0},
                updated_by="admin",
                updated_at=datetime.now(UTC),
            )
        )
    limits = await TenantLimitsStore(db, TenantLimits()).get("acme")
    assert limits.rpm == MAX_RATE
    assert limits.monthly_budget_usd == MAX_BUDGET_USD
    assert limits.daily_budget_usd == 5.0
