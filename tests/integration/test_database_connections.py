"""PostgreSQL connections: one the server closed is replaced at checkout (the request that
would have got it runs on a new one instead of failing); a read runs outside a transaction and
leaves its connection to the next session as it found it."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    Table,
    bindparam,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from faas.app_errors import install_error_handlers
from faas.shared.database import Database, UTCDateTime
from tests.conftest import DATABASE_URL, need_server
from tests.support.pgvector import asyncpg_dsn, fresh_database


async def backend_pids(db: Database) -> set[int]:
    async with db.session() as session:
        return {int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())}


async def test_connections_the_server_closed_are_replaced_at_checkout() -> None:
    server = need_server("PostgreSQL", DATABASE_URL, 5432)
    async with fresh_database(server, "faas_reconnect") as url:
        db = Database(url, pool_size=4, max_overflow=0)
        try:
            # Four pooled connections, all idle in the pool afterwards.
            before = set().union(*await asyncio.gather(*(backend_pids(db) for _ in range(4))))
            assert db.engine.pool.checkedin() == len(before) >= 2
            admin = await asyncpg.connect(asyncpg_dsn(url))
            try:
                killed = await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await admin.close()
            assert len(killed) == len(before)
            await asyncio.sleep(0.2)  # the loop reads each socket's end
            after = set().union(*await asyncio.gather(*(backend_pids(db) for _ in range(4))))
            assert after and not after & before
        finally:
            await db.close()


async def two_clock_reads(session: AsyncSession) -> tuple[object, object]:
    """`now()` is the transaction's start: equal twice inside one, different outside."""
    first = (await session.execute(text("SELECT now()"))).scalar_one()
    await asyncio.sleep(0.01)
    return first, (await session.execute(text("SELECT now()"))).scalar_one()


async def test_a_read_runs_outside_a_transaction_and_resets_its_connection() -> None:
    server = need_server("PostgreSQL", DATABASE_URL, 5432)
    async with fresh_database(server, "faas_read") as url:
        db = Database(url, pool_size=1, max_overflow=0)  # every session gets the same one
        try:
            async with db.read() as session:
                first, second = await two_clock_reads(session)
            assert first != second
            async with db.session() as session:
                first, second = await two_clock_reads(session)
            assert first == second
        finally:
            await db.close()


async def test_a_write_commits_by_itself_in_one_statement_and_resets_its_connection() -> None:
    """`Database.write`: committed when it returns (another connection sees it), a failed one
    changes nothing and leaves no transaction open, and the connection goes back to the pool
    in transaction mode."""
    server = need_server("PostgreSQL", DATABASE_URL, 5432)
    async with fresh_database(server, "faas_write") as url:
        db = Database(url, pool_size=1, max_overflow=0)  # every call gets the same one
        admin = await asyncpg.connect(asyncpg_dsn(url))
        try:
            async with db.session() as session:
                await session.execute(text("CREATE TABLE t (id int PRIMARY KEY, v text)"))
            insert = text("INSERT INTO t (id, v) VALUES (:id, :v)")
            await db.write(insert, {"id": 1, "v": "a"})
            assert await admin.fetchval("SELECT v FROM t WHERE id = 1") == "a"
            with pytest.raises(IntegrityError):
                await db.write(insert, {"id": 1, "v": "b"})
            await db.write(text("UPDATE t SET v = :v WHERE id = :id"), {"id": 1, "v": "c"})
            assert await admin.fetchval("SELECT v FROM t WHERE id = 1") == "c"
            async with db.session() as session:
                first, second = await two_clock_reads(session)
            assert first == second  # a transaction again
        finally:
            await admin.close()
            await db.close()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_fetch_one_reads_a_row_as_a_mapping_with_its_types_processed(
    backend: str, tmp_path: Path
) -> None:
    """`Database.fetch_one`: the first row (JSON decoded, a UTC datetime), None when there is
    none."""
    table = Table(
        "f",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("doc", JSON),
        Column("at", UTCDateTime),
    )
    query = select(table).where(table.c.id == bindparam("id"))
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with AsyncExitStack() as stack:
        if backend == "postgres":
            server = need_server("PostgreSQL", DATABASE_URL, 5432)
            url = await stack.enter_async_context(fresh_database(server, "faas_fetch"))
        else:
            url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
        db = Database(url, pool_size=1, max_overflow=0)
        stack.push_async_callback(db.close)
        async with db.session() as session:
            await session.run_sync(lambda s: table.create(s.connection()))
            await session.execute(insert(table), {"id": 1, "doc": {"a": [1, 2]}, "at": at})
        row = await db.fetch_one(query, {"id": 1})
        assert row is not None and dict(row) == {"id": 1, "doc": {"a": [1, 2]}, "at": at}
        assert await db.fetch_one(query, {"id": 2}) is None


async def kill_and_ask(db: Database, admin: asyncpg.Connection, gap_s: float) -> int:
    """Through an app: kill the backend of the pooled connection a request just used, wait
    `gap_s`, send the next request (which gets that connection back: LIFO); its status."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/pid")
    async def pid() -> dict[str, int]:
        async with db.session() as session:
            return {
                "pid": int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            }

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        used = (await client.get("/pid")).json()["pid"]
        await admin.fetch("SELECT pg_terminate_backend($1)", used)
        await asyncio.sleep(gap_s)
        return (await client.get("/pid")).status_code


async def test_a_killed_connection_is_a_503_at_worst_and_an_idle_one_is_pinged() -> None:
    """Killed a moment before its next checkout, before the loop has read the close: the
    request that gets it fails as a retryable 503 (never a 500), and the next one runs on a new
    connection. Idle longer than `ping_idle_s`, it is pinged at checkout and replaced unseen."""
    server = need_server("PostgreSQL", DATABASE_URL, 5432)
    async with fresh_database(server, "faas_killed") as url:
        admin = await asyncpg.connect(asyncpg_dsn(url))
        hot = Database(url, pool_size=2, max_overflow=0)  # default ping_idle_s: no ping now
        pinged = Database(url, pool_size=2, max_overflow=0, ping_idle_s=0.0)
        try:
            raced = [await kill_and_ask(hot, admin, 0.0) for _ in range(5)]
            assert set(raced) <= {200, 503} and 503 in raced, raced
            assert [await kill_and_ask(pinged, admin, 0.0) for _ in range(5)] == [200] * 5
        finally:
            await admin.close()
            await hot.close()
            await pinged.close()
