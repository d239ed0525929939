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


async def check_agent_rollup_backfill(url: str) -> None:
    """Operations logged before 0010 are folded into the daily agent rollup by the upgrade."""
    from datetime import UTC, datetime

    from faas.services.llmops_service.store import OPERATIONS
    from faas.services.llmops_service.tables import AgentRollupRow

    db = Database(url)
    try:
        await db.migrate("0007_llmops")
        base = {
            "source": "api",
            "operation": "chat",
            "model": "m",
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "cached_tokens": 0,
            "latency_ms": 1.0,
            "status": "ok",
            "cached": False,
            "stream": False,
        }
        rows = [
            (1, datetime(2026, 11, 3, 23, 59, tzinfo=UTC), "agent-1", "ann", 0.5),
            (2, datetime(2026, 11, 3, 1, 0, tzinfo=UTC), "agent-1", None, 0.25),
            (3, datetime(2026, 11, 4, 0, 0, tzinfo=UTC), None, "ann", 1.0),
            (4, datetime(2026, 11, 4, 5, 0, tzinfo=UTC), None, None, 2.0),
        ]
        async with db.engine.begin() as conn:
            await conn.execute(
                OPERATIONS.insert(),
                [
                    base
                    | {
                        "tenant_id": "acme",
                        "id": f"o{i}",
                        "occurred_at": at,
                        "agent_id": agent,
                        "user_id": user,
                        "total_tokens": 10 * i,
                        "cost_usd": cost,
                    }
                    for i, at, agent, user, cost in rows
                ],
            )
        await db.migrate()
        async with db.session() as session:
            got = (await session.execute(AgentRollupRow.__table__.select())).all()
    finally:
        await db.close()
    folded = {
        (r.day.strftime("%Y-%m-%d"), r.agent): (r.count, r.total_tokens, r.cost_usd) for r in got
    }
    assert folded == {
        ("2026-11-03", "agent-1"): (2, 30, 0.75),
        ("2026-11-04", "ann"): (1, 30, 1.0),
        ("2026-11-04", ""): (1, 40, 2.0),
    }


async def test_agent_rollup_backfill_on_sqlite(tmp_path: Path) -> None:
    await check_agent_rollup_backfill(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")


async def test_agent_rollup_backfill_on_postgres(fresh_postgres: str) -> None:
    await check_agent_rollup_backfill(fresh_postgres)


async def check_rollup_key_fold(url: str) -> None:
    """0011 folds the per-status hourly rollup rows of an hour into one, sums kept."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    db = Database(url)
    hour = datetime(2026, 11, 3, 10, tzinfo=UTC)
    try:
        await db.migrate("0010_llmops_agent_rollup")
        buckets = ", ".join(f"lat_b{i:02d}" for i in range(19))
        zeros = ", ".join("0" for _ in range(19))
        async with db.engine.begin() as conn:
            for status, count, errors, cost in (("ok", 5, 0, 1.5), ("error", 2, 2, 0.25)):
                await conn.execute(
                    text(
                        "INSERT INTO llmops_rollups_hourly (tenant_id, hour, model, operation, "
                        "status, count, error_count, prompt_tokens, completion_tokens, "
                        f"total_tokens, cost_usd, latency_sum_ms, {buckets}) VALUES ('acme', "
                        f":hour, 'm', 'chat', :status, :count, :errors, 1, 1, 2, :cost, 10.0, "
                        f"{zeros})"
                    ),
                    {
                        "hour": hour,
                        "status": status,
                        "count": count,
                        "errors": errors,
                        "cost": cost,
                    },
                )
        await db.migrate()
        async with db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT count, error_count, total_tokens, cost_usd "
                        "FROM llmops_rollups_hourly"
                    )
                )
            ).all()
    finally:
        await db.close()
    assert [tuple(r) for r in rows] == [(7, 2, 4, 1.75)]


async def test_rollup_key_fold_on_sqlite(tmp_path: Path) -> None:
    await check_rollup_key_fold(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")


async def test_rollup_key_fold_on_postgres(fresh_postgres: str) -> None:
    await check_rollup_key_fold(fresh_postgres)
