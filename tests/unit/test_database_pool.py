"""The PostgreSQL pool is sized by the settings (a pool smaller than the requests holding a
connection at once closes and reopens connections on every burst); SQLite keeps SQLAlchemy's."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.pool import QueuePool

from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.shared.config import Settings

SECRET = "pool-test-secret-" + "x" * 40


async def runtime_pool(tmp_path: Path, **settings: object) -> QueuePool:
    built = Settings(data_dir=tmp_path, jwt_secret=SECRET, log_requests=False, **settings)  # type: ignore[arg-type]
    runtime = Runtime.build(built, telemetry=setup_telemetry("faas-test", set_global=False))
    try:
        pool = runtime.db.engine.pool
        assert isinstance(pool, QueuePool)
        return pool
    finally:
        await runtime.db.close()


async def test_postgres_pool_sizes_come_from_the_settings(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://nobody@127.0.0.1:9/none"  # never connected to
    sized = await runtime_pool(
        tmp_path, database_url=url, database_pool_size=7, database_pool_overflow=2
    )
    assert (sized.size(), sized._max_overflow) == (7, 2)
    default = await runtime_pool(tmp_path, database_url=url)
    assert (default.size(), default._max_overflow) == (30, 10)


async def test_sqlite_keeps_sqlalchemys_pool(tmp_path: Path) -> None:
    pool = await runtime_pool(tmp_path, database_pool_size=7)
    assert (pool.size(), pool._max_overflow) == (5, 10)
