"""The request path's view of teams: one database read per tenant however many calls miss at
once, none while the entry is fresh, and a change made on this replica seen at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faas.services.gateway_service.teams import Teams
from faas.services.gateway_service.teams_models import NewTeam, TeamPatch
from faas.shared.context import Identity
from faas.shared.database import Database
from tests.unit.test_tenant_limits_store import counting

ADMIN = Identity(tenant_id="acme", user_id="root", scopes=frozenset({"admin"}))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'teams.db'}")
    await database.migrate()
    yield database
    await database.close()


async def test_calls_read_a_tenants_teams_once_until_the_entry_expires(db: Database) -> None:
    teams = Teams(db, ttl_s=60)
    created = await teams.create(ADMIN, NewTeam(name="ml", members=["ann"]))
    opened = counting(db)
    found = await asyncio.gather(*(teams.of_tenant("acme") for _ in range(32)))
    assert opened[0] == 1
    assert {id(f) for f in found} == {id(found[0])}
    team = found[0].of(Identity(tenant_id="acme", user_id="ann"))
    assert team is not None and team.id == created.id
    assert found[0].of(Identity(tenant_id="acme", team=created.id)) is team
    assert found[0].of(Identity(tenant_id="acme", user_id="bob")) is None
    for _ in range(10):
        await teams.of_tenant("acme")
    assert opened[0] == 1


async def test_a_change_on_this_replica_is_seen_by_the_next_call(db: Database) -> None:
    teams = Teams(db, ttl_s=60)
    created = await teams.create(ADMIN, NewTeam(name="ml"))
    assert (await teams.of_tenant("acme")).by_handle["ml"].caps.rpm is None
    await teams.update(ADMIN, created.id, TeamPatch.model_validate({"limits": {"rpm": 3}}))
    assert (await teams.of_tenant("acme")).by_handle["ml"].caps.rpm == 3
    await teams.delete(ADMIN, created.id)
    assert (await teams.of_tenant("acme")).by_handle == {}
    assert (await teams.of_tenant("globex")).by_handle == {}
