"""Async SQLAlchemy engine and sessions (SQLite or PostgreSQL by URL), Alembic migrations,
and a tenant-scoped repository so that a query without a tenant filter is hard to write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import DateTime, MetaData, Select, bindparam, event, func, select, text
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator

from faas.shared.exceptions import DependencyUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every backend: SQLite stores no offset, so values read
    back are naive; every time faas stores is UTC, so they are marked as such."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TenantOwned:
    """Mixin for rows that belong to a tenant."""

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:
        from sqlalchemy import String
        from sqlalchemy.orm import mapped_column

        return mapped_column(String(64), index=True, nullable=False)


M = TypeVar("M", bound=TenantOwned)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class _CheckoutCheck:
    """A pooled PostgreSQL connection the server has closed (a restart, a failover,
    `pg_terminate_backend`) is replaced at checkout instead of failing the request that gets
    it: the pool takes `DisconnectionError` as "discard it and take another".

    One that was returned less than `ping_idle_s` ago is checked by asyncpg's own state, no
    round trip: under load that is every checkout, and SQLAlchemy's pre-ping spent three round
    trips (BEGIN, `;`, ROLLBACK) on each. One idle longer, the kind a restart leaves behind, is
    pinged as the pre-ping did. A close the event loop has not read yet can still reach a
    request: its statement fails with the connection invalidated, which the app answers with
    503 and Retry-After, and the pool replaces every connection older than that failure."""

    def __init__(self, ping_idle_s: float) -> None:
        self.ping_idle_s = ping_idle_s

    def checkin(self, _dbapi_conn: Any, record: Any) -> None:
        record.info["faas_returned_at"] = time.monotonic()

    def checkout(self, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_conn, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")
        returned = record.info.get("faas_returned_at")
        if returned is None or time.monotonic() - returned < self.ping_idle_s:
            return  # new, or returned a moment ago
        try:
            dbapi_conn.ping()
        except Exception as exc:
            raise DisconnectionError("a pooled connection did not answer its ping") from exc


class Database:
    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pre_ping: bool = True,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        pool_timeout: float | None = None,
        ping_idle_s: float = 1.0,
    ) -> None:
        """Pool settings left None keep the defaults: 30 kept + 10 for bursts on PostgreSQL
        (`Settings.database_pool_size` / `_overflow`), SQLAlchemy's 5 + 10 on SQLite, a 30 s
        wait for a free one. `pre_ping`: check PostgreSQL connections at checkout
        (`_CheckoutCheck`; those idle over `ping_idle_s` with a round trip)."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite and ":///" in url:
            path = url.split(":///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"echo": echo}
        if not self.is_sqlite:
            # LIFO: the connection used last goes out first, so a light load keeps reusing a
            # few warm server backends instead of cycling through all thirty.
            kwargs.update(pool_size=30, max_overflow=10, pool_use_lifo=True)
        pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout}
        kwargs.update({key: value for key, value in pool.items() if value is not None})
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        elif pre_ping:
            check = _CheckoutCheck(ping_idle_s)
            event.listen(self.engine.sync_engine, "checkin", check.checkin)
            event.listen(self.engine.sync_engine, "checkout", check.checkout)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer = asyncio.Lock()  # SQLite: the writers of this process take turns
        self._pool_timeout_s = 30.0 if pool_timeout is None else pool_timeout

    @property
    def backend(self) -> str:
        return "sqlite" if self.is_sqlite else "postgres"

    @asynccontextmanager
    async def session(
        self, *, durable: bool = True, writes: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error. No pooled
        connection freed up in time (the pool's 30 s) is a 503 with Retry-After, not a 500:
        the request can be sent again once the load passes.

        `durable=False` is for a provisional record that a later durable commit supersedes
        (a run's `running` row): on PostgreSQL its commit does not wait for the WAL flush
        (`synchronous_commit off`, 7 ms a commit on this project's VMs); a crash may lose it,
        never corrupt anything, and the next durable commit flushes it. SQLite (WAL,
        synchronous=NORMAL) never waits for the disk on commit anyway.

        `writes=True` says the transaction writes. SQLite has one writer at a time: such
        transactions of this process take turns on a lock before they take a connection,
        rather than each holding a pooled connection while SQLite's busy handler sleeps it
        (1 to 100 ms a time) until the file lock frees; under 1,000 concurrent chat turns that
        sleeping, not the writes, was the wait. PostgreSQL ignores it."""
        async with self._write_turn(writes):
            try:
                async with self.sessionmaker() as session, session.begin():
                    if not durable and not self.is_sqlite:
                        await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
                    yield session
            except PoolTimeout as exc:
                raise _busy() from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for a read of one statement (or of several that need no common snapshot)
        outside any transaction: on PostgreSQL its connection is in autocommit, which spares
        the BEGIN and the COMMIT, two of the three round trips a one-query transaction costs
        (each one a wait for the event loop under load). SQLite: `session()`, its BEGIN is
        local."""
        if self.is_sqlite:
            async with self.session() as session:
                yield session
            return
        async with (
            self._autocommit() as conn,
            AsyncSession(bind=conn, expire_on_commit=False) as session,
        ):
            yield session

    async def write(self, statement: Executable, params: Mapping[str, Any]) -> None:
        """One write statement that is a transaction by itself, durable when it returns. On
        PostgreSQL it runs in autocommit: one round trip, where `session()` spends three (BEGIN,
        the statement, COMMIT) and four with `durable=False`; an agent run's start and end
        records each took ~0.75 ms of CPU and ~0.95 ms that way, ~0.33 and ~0.58 ms this way
        (the WAL flush that durability waits for is part of the latter: 0.14 ms on this
        machine's disk; on one slow to flush, `session(durable=False)` spends round trips to
        skip that wait). SQLite: `session()`."""
        if self.is_sqlite:
            async with self.session(writes=True) as session:
                await session.execute(statement, params)
            return
        async with self._autocommit() as conn:
            await conn.execute(statement, params)

    async def fetch_one(
        self, statement: Executable, params: Mapping[str, Any]
    ) -> RowMapping | None:
        """The first row of a Core query, as a mapping (None when there is none): on
        PostgreSQL one statement in autocommit, as `read()`, without a session (an ORM read of
        an agent took ~0.5 ms of CPU, this ~0.33). SQLite: `session()`."""
        if self.is_sqlite:
            async with self.session() as session:
                return (await session.execute(statement, params)).mappings().first()
        async with self._autocommit() as conn:
            return (await conn.execute(statement, params)).mappings().first()

    async def fetch_by_id(self, model: type[Any], tenant_id: str, id_: Any) -> RowMapping | None:
        """A tenant's row of `model` by id, as a mapping (`fetch_one`, the statement built once)."""
        return await self.fetch_one(
            _by_id(model, columns=True), {"by_tenant": tenant_id, "by_id": id_}
        )

    @asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A pooled PostgreSQL connection in autocommit: each statement commits by itself."""
        try:
            async with self.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except PoolTimeout as exc:
            raise _busy() from exc

    @asynccontextmanager
    async def _write_turn(self, writes: bool) -> AsyncIterator[None]:
        if not (writes and self.is_sqlite):
            yield
            return
        try:
            async with asyncio.timeout(self._pool_timeout_s):
                await self._writer.acquire()
        except TimeoutError as exc:
            raise _busy() from exc
        try:
            yield
        finally:
            self._writer.release()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def migrate(self, revision: str = "heads") -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)

    async def current_revisions(self) -> set[str]:
        """The applied head of every migration branch (services add independent branches)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revisions)

    async def close(self) -> None:
        await self.engine.dispose()


def _busy() -> DependencyUnavailable:
    return DependencyUnavailable(
        "every database connection is busy; retry shortly",
        details={"service": "database"},
        headers={"Retry-After": "2"},
    )


def is_data_rejection(exc: BaseException) -> bool:
    """Whether the database refused the data it was given (a value out of range or too long, a
    violated constraint) rather than failing to run the statement (down, busy): sending the
    same data again would fail again. SQLSTATE class 22 is a data exception, 23 an integrity
    violation; drivers that map them to no specific DB-API class still carry the code."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    state = getattr(exc.orig, "sqlstate", None) if isinstance(exc, DBAPIError) else None
    return isinstance(state, str) and state[:2] in ("22", "23")


def alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


def _current_revisions(connection: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


def migrate_sync(url: str) -> None:
    """Apply every migration (the `faas migrate` command)."""

    async def run() -> None:
        db = Database(url)
        try:
            await db.migrate()
        finally:
            await db.close()

    asyncio.run(run())


_BY_ID: dict[tuple[type[Any], bool], Select[Any]] = {}


def _by_id(model: type[Any], columns: bool = False) -> Select[Any]:
    """A model's read by (tenant, id), built once: building the statement again for every
    read cost more CPU than running it (the agent's read of its spec, on every run). With
    `columns`, of its table's columns (Core rows) rather than of the mapped class."""
    query = _BY_ID.get((model, columns))
    if query is None:
        target = model.__table__ if columns else model
        query = _BY_ID[(model, columns)] = select(target).where(
            model.tenant_id == bindparam("by_tenant"), model.id == bindparam("by_id")
        )
    return query


class TenantRepository(Generic[M]):
    """Reads and writes rows of one model, always within one tenant."""

    def __init__(self, session: AsyncSession, model: type[M], tenant_id: str) -> None:
        self.session = session
        self.model = model
        self.tenant_id = tenant_id

    def select(self, *where: Any) -> Select[Any]:
        return select(self.model).where(self.model.tenant_id == self.tenant_id, *where)

    async def get(self, id_: Any) -> M | None:
        params = {"by_tenant": self.tenant_id, "by_id": id_}
        result = await self.session.execute(_by_id(self.model), params)
        return cast(M | None, result.scalar_one_or_none())

    async def page(
        self, *where: Any, order_by: Any = None, limit: int = 50, offset: int = 0
    ) -> tuple[Sequence[M], int]:
        query = self.select(*where)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        if order_by is not None:
            query = query.order_by(order_by)
        rows = (await self.session.execute(query.limit(limit).offset(offset))).scalars().all()
        return cast(Sequence[M], rows), int(total or 0)

    def add(self, **values: Any) -> M:
        row = self.model(tenant_id=self.tenant_id, **values)  # type: ignore[call-arg]
        self.session.add(row)
        return row

    async def delete(self, id_: Any) -> bool:
        row = await self.get(id_)
        if row is None:
            return False
        await self.session.delete(row)
        return True
