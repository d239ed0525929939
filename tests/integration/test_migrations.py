"""The one migration history applies cleanly on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import inspect

from faas.shared.database import MIGRATIONS_DIR, Database

pytestmark = pytest.mark.integration


def head_revisions() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return set(ScriptDirectory.from_config(config).get_heads())


async def tables_and_revision(db: Database) -> tuple[set[str], set[str]]:
    async with db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    return names, await db.current_revisions()


@pytest.fixture
async def fresh_postgres(postgres_url: str) -> AsyncIterator[str]:
    """A throwaway database on the real server, dropped afterwards."""
    name = f"faas_mig_{uuid.uuid4().hex[:10]}"
    admin_dsn = postgres_url.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def check_migrates_twice(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
        await db.migrate()  # a second run is a no-op, not an error
        tables, revision = await tables_and_revision(db)
    finally:
        await db.close()
    assert {"jobs", "gateway_tenant_limits", "alembic_version"} <= tables
    assert revision == head_revisions()


async def test_migrations_apply_on_sqlite(tmp_path: Path) -> None:
    await check_migrates_twice(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


async def test_migrations_apply_on_postgres(fresh_postgres: str) -> None:
    await check_migrates_twice(fresh_postgres)
