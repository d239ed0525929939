"""The LLMOps write path on a real PostgreSQL (and SQLite): a batch commits whole or not at all,
and rows the database refuses are isolated and dropped without holding back their batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from faas.integrations.bus.memory import InProcessBus
from faas.integrations.codec import JsonCodec
from faas.integrations.events import EventPublisher
from faas.services.llmops_service.ingest import event_row
from faas.services.llmops_service.service import LlmopsService
from faas.services.llmops_service.tables import AgentRollupRow, OperationRow, RollupRow
from faas.shared.database import Database
from tests.support.pgvector import fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LlmopsService]:
    async def build(url: str) -> AsyncIterator[LlmopsService]:
        db = Database(url)
        await db.migrate()
        bus = InProcessBus()
        try:
            yield LlmopsService(
                db=db, bus=bus, events=EventPublisher(bus, JsonCodec()), consume=False
            )
        finally:
            await db.close()

    if request.param == "sqlite":
        async for svc in build(f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"):
            yield svc
    else:
        server = request.getfixturevalue("postgres_url")
        async with fresh_database(server, "faas_llmops_store") as url:
            async for svc in build(url):
                yield svc


def row(i: int, **extra: Any) -> dict[str, Any]:
    body = {
        "id": f"e{i}",
        "tenant_id": "acme",
        "occurred_at": datetime(2026, 11, 3, 10, i, tzinfo=UTC).isoformat(),
        "data": {"model": "m", "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 0.5},
    }
    built = event_row(body)
    assert built is not None
    return built | extra


async def counts(service: LlmopsService) -> tuple[int, int, int]:
    async with service.db.session() as session:
        ops = await session.scalar(select(func.count()).select_from(OperationRow))
        hourly = await session.scalar(select(func.coalesce(func.sum(RollupRow.count), 0)))
        agents = await session.scalar(select(func.coalesce(func.sum(AgentRollupRow.count), 0)))
    return int(ops or 0), int(hourly or 0), int(agents or 0)


async def test_a_failed_rollup_write_rolls_the_operations_back(service: LlmopsService) -> None:
    store = service.store
    broken = "INSERT INTO no_such_table SELECT 1"
    if service.db.is_sqlite:
        from sqlalchemy import text

        store._upsert_agents = text(broken)  # type: ignore[assignment]
    else:
        store._pg_agents = broken
    with pytest.raises(Exception):  # noqa: B017 - the database's own error type
        await store.write([row(1), row(2)])
    assert await counts(service) == (0, 0, 0)  # nothing half-written
    # A redelivery after the failure is then counted everywhere, once.
    fixed = LlmopsService(db=service.db, bus=service.bus, events=service.events, consume=False)
    assert sorted(await fixed.store.write([row(1), row(2)])) == ["e1", "e2"]
    assert await counts(service) == (2, 2, 2)


async def test_rows_the_database_refuses_are_isolated_and_dropped(service: LlmopsService) -> None:
    rows = [row(i) for i in range(7)]
    rows[4]["prompt_tokens"] = 2**70  # neither PostgreSQL nor SQLite (nor JSON) takes it
    written = await service._write_isolating(rows)
    assert sorted(written) == sorted(f"e{i}" for i in range(7) if i != 4)
    assert service.rejected == 1
    assert await counts(service) == (6, 6, 6)


async def test_a_value_only_the_database_refuses_is_isolated(service: LlmopsService) -> None:
    """2**40 encodes as JSON, but PostgreSQL's 4-byte column refuses it (a data error from the
    driver, SQLSTATE 22003); SQLite stores any 64-bit integer."""
    rows = [row(i) for i in range(5)]
    rows[2]["prompt_tokens"] = 2**40
    written = await service._write_isolating(rows)
    refused = 0 if service.db.is_sqlite else 1
    assert len(written) == 5 - refused
    assert service.rejected == refused
    assert (await counts(service))[0] == 5 - refused


def test_event_values_are_clamped_to_what_the_table_holds() -> None:
    body = {
        "id": "x",
        "tenant_id": "acme",
        "data": {
            "model": "m",
            "prompt_tokens": 10**20,
            "completion_tokens": float("inf"),
            "cost_usd": float("nan"),
            "latency_ms": -5,
        },
    }
    built = event_row(body)
    assert built is not None
    assert built["prompt_tokens"] == 2**31 - 1
    assert built["completion_tokens"] == 0
    assert built["cost_usd"] == 0.0 and built["latency_ms"] == 0.0
