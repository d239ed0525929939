"""Spend attribution in LLMOps on a real PostgreSQL (and SQLite): usage events' key, user, team
and tags are stored, and cost and usage group by each, tenant by tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from faas.integrations.bus.memory import InProcessBus
from faas.integrations.codec import JsonCodec
from faas.integrations.events import EventPublisher
from faas.services.llmops_service.ingest import event_row
from faas.services.llmops_service.routes import build_router
from faas.services.llmops_service.service import LlmopsService
from faas.shared.database import Database
from tests.support.pgvector import fresh_database

pytestmark = pytest.mark.integration
LO = datetime(2026, 11, 3, 0, 0, tzinfo=UTC)
HI = datetime(2026, 11, 4, 0, 0, tzinfo=UTC)


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
        async with fresh_database(server, "faas_llmops_attribution") as url:
            async for svc in build(url):
                yield svc


def event(i: int, tenant: str = "acme", cost: float = 1.0, **data: Any) -> dict[str, Any]:
    body = {
        "id": f"{tenant}-{i}",
        "tenant_id": tenant,
        "occurred_at": datetime(2026, 11, 3, 10, i, tzinfo=UTC).isoformat(),
        "data": {"model": "m", "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": cost}
        | data,
    }
    row = event_row(body)
    assert row is not None
    return row


async def seed(service: LlmopsService) -> None:
    await service.store.write(
        [
            event(1, cost=1.0, key_id="k1", team="search", user_id="ann", tags={"env": "prod"}),
            event(2, cost=2.0, key_id="k1", team="search", user_id="bob", tags={"env": "prod"}),
            event(3, cost=4.0, key_id="k2", team="ads", user_id="bob", tags={"nightly": ""}),
            event(4, cost=8.0, tags={"env": "dev", "nightly": ""}),
            event(5, tenant="globex", cost=100.0, key_id="k9", team="search", tags={"env": "prod"}),
        ]
    )


def groups(view: Any) -> dict[str | None, tuple[int, float]]:
    return {g.group: (g.count, g.cost_usd) for g in view.groups}


async def test_usage_groups_by_key_user_and_team(service: LlmopsService) -> None:
    await seed(service)
    by_key = await service.usage_by("acme", "key", LO, HI)
    assert groups(by_key) == {"k1": (2, 3.0), "k2": (1, 4.0), None: (1, 8.0)}
    assert [g.group for g in by_key.groups] == [None, "k2", "k1"]  # most expensive first
    assert by_key.groups[-1].prompt_tokens == 20 and by_key.groups[-1].total_tokens == 30
    by_user = await service.usage_by("acme", "user", LO, HI)
    assert groups(by_user) == {"ann": (1, 1.0), "bob": (2, 6.0), None: (1, 8.0)}
    by_team = await service.usage_by("acme", "team", LO, HI)
    assert groups(by_team) == {"search": (2, 3.0), "ads": (1, 4.0), None: (1, 8.0)}


async def test_usage_groups_by_tag_counting_a_call_under_each_of_its_tags(
    service: LlmopsService,
) -> None:
    await seed(service)
    by_tag = await service.usage_by("acme", "tag", LO, HI)
    assert groups(by_tag) == {"env=prod": (2, 3.0), "nightly": (2, 12.0), "env=dev": (1, 8.0)}


async def test_usage_is_per_tenant_and_per_range(service: LlmopsService) -> None:
    await seed(service)
    globex = await service.usage_by("globex", "team", LO, HI)
    assert groups(globex) == {"search": (1, 100.0)}
    later = await service.usage_by("acme", "key", HI, datetime(2026, 11, 5, tzinfo=UTC))
    assert later.groups == []


async def test_the_usage_endpoint_answers_for_the_callers_tenant_only(
    service: LlmopsService,
) -> None:
    from fastapi import FastAPI

    from faas.app_errors import install_error_handlers
    from faas.shared.context import Identity, RequestContext, reset_context, set_context

    await seed(service)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router(service))
    token = set_context(RequestContext("c", "r", identity=Identity("acme")))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            span = {"from": LO.isoformat(), "to": HI.isoformat()}
            answer = await client.get(
                "/api/v1/llmops/usage", params=span | {"group_by": "team", "tenant_id": "globex"}
            )
            assert answer.status_code == 200, answer.text
            data = answer.json()["data"]
            assert data["tenant_id"] == "acme" and data["from"].startswith("2026-11-03")
            assert {g["group"] for g in data["groups"]} == {"search", "ads", None}
            bad = await client.get("/api/v1/llmops/usage", params={"group_by": "model"})
            assert bad.status_code == 422
    finally:
        reset_context(token)
