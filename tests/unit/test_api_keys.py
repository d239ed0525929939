"""API keys through the real app: shown once, stored as a hash, scoped to their tenant, never
given more than their creator holds, accepted wherever a bearer token is, expired and revoked
at once, and limiting the gateway to their models."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from faas.integrations.bus.memory import InProcessBus
from faas.integrations.bus.memory_broker import InProcessBroker
from faas.integrations.codec import default_registry
from faas.integrations.events import EventPublisher
from faas.keys import ApiKeys, NewKey
from faas.keys.tables import ApiKeyRow
from faas.shared.config import Settings
from faas.shared.context import Identity
from faas.shared.database import Database
from faas.shared.exceptions import Unauthenticated
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing

KEYS = "/api/v1/keys"
CHAT = "/v1/chat/completions"
ADMIN = auth("acme", "root", scopes=["admin"])
USER = auth("acme", "ann")
OTHER_ADMIN = auth("globex", "root", scopes=["admin"])
PLATFORM = auth("ops", "operator", platform_admin=True)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(model: str = "chat") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[GatewayEnv]:
    table = routing(
        {"name": "chat", "deployments": [{"provider": "mock", "model": "faas-mock"}]},
        {"name": "other", "deployments": [{"provider": "mock", "model": "faas-mock"}]},
        {
            "name": "embed",
            "kind": "embedding",
            "deployments": [{"provider": "hash", "model": "hash-64", "dimensions": 64}],
        },
    )
    async with gateway_env(make_settings(), table) as gateway:
        yield gateway


async def create(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **body: Any
) -> dict[str, Any]:
    response = await client.post(KEYS, json={"name": "ci", **body}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


async def test_a_created_key_is_shown_once_and_stored_only_as_its_hash(env: GatewayEnv) -> None:
    created = await create(
        env.client, user="ann", team="ml", scopes=["prompts:read"], metadata={"ci": True}
    )
    key = created["key"]
    assert key.startswith("fk-") and len(key) >= 3 + 43
    assert key.startswith(created["prefix"]) and len(created["prefix"]) < 16
    assert (created["user"], created["team"], created["scopes"]) == ("ann", "ml", ["prompts:read"])
    assert created["metadata"] == {"ci": True} and created["models"] is None

    listed = await env.client.get(KEYS, headers=ADMIN)
    one = await env.client.get(f"{KEYS}/{created['id']}", headers=ADMIN)
    digest = hashlib.sha256(key.encode()).hexdigest()
    for response in (listed, one):
        assert response.status_code == 200, response.text
        assert key not in response.text and digest not in response.text
        assert created["prefix"] in response.text
    assert listed.json()["data"]["total"] == 1
    assert "key" not in listed.json()["data"]["items"][0]

    async with env.runtime.db.session() as session:
        row = (await session.execute(select(ApiKeyRow))).scalar_one()
    assert row.key_hash == digest
    assert key not in repr(vars(row))


async def test_a_key_authenticates_like_a_jwt_of_its_tenant(env: GatewayEnv) -> None:
    created = await create(env.client, user="ann", scopes=["keys:read"])
    headers = bearer(created["key"])
    # A non-gateway route: the key reads its own tenant's keys with the scope it was given.
    listed = await env.client.get(KEYS, headers=headers)
    assert listed.status_code == 200, listed.text
    assert [k["id"] for k in listed.json()["data"]["items"]] == [created["id"]]
    chat = await env.client.post(CHAT, json=ask(), headers=headers)
    assert chat.status_code == 200, chat.text
    for _ in range(100):
        if env.events:
            break
        await asyncio.sleep(0.01)
    assert env.events[0]["tenant_id"] == "acme"
    assert env.events[0]["data"]["user_id"] == "ann"
    # The key cannot be used to act for another tenant.
    refused = await env.client.get(KEYS, headers=headers | {"X-Tenant-ID": "globex"})
    assert refused.status_code == 403


async def test_unknown_malformed_and_revoked_keys_are_refused_alike(env: GatewayEnv) -> None:
    created = await create(env.client)
    assert (await env.client.delete(f"{KEYS}/{created['id']}", headers=ADMIN)).status_code == 200
    for key in (created["key"], "fk-" + "A" * 43, "fk-short"):
        response = await env.client.get(KEYS, headers=bearer(key))
        assert response.status_code == 401, response.text
        assert response.json()["error"]["message"] == "invalid or revoked API key"
    openai_shape = await env.client.post(CHAT, json=ask(), headers=bearer(created["key"]))
    assert openai_shape.status_code == 401
    assert openai_shape.json()["error"]["type"] == "authentication_error"


async def test_revocation_takes_effect_at_once_despite_the_cache(env: GatewayEnv) -> None:
    created = await create(env.client)
    headers = bearer(created["key"])
    assert (await env.client.post(CHAT, json=ask(), headers=headers)).status_code == 200
    revoked = await env.client.delete(f"{KEYS}/{created['id']}", headers=ADMIN)
    assert revoked.json()["data"]["revoked_at"] is not None
    assert (await env.client.post(CHAT, json=ask(), headers=headers)).status_code == 401
    assert (await env.client.get(KEYS, headers=ADMIN)).json()["data"]["total"] == 0
    again = await env.client.delete(f"{KEYS}/{created['id']}", headers=ADMIN)
    assert again.status_code == 404


async def test_rotation_gives_a_new_key_and_stops_the_old_one(env: GatewayEnv) -> None:
    created = await create(env.client, scopes=["keys:read"])
    old = bearer(created["key"])
    assert (await env.client.get(KEYS, headers=old)).status_code == 200
    rotated = await env.client.post(f"{KEYS}/{created['id']}/rotate", headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()["data"]
    assert fresh["id"] == created["id"] and fresh["key"] != created["key"]
    assert fresh["scopes"] == ["keys:read"] and fresh["prefix"] == fresh["key"][:11]
    assert (await env.client.get(KEYS, headers=old)).status_code == 401
    assert (await env.client.get(KEYS, headers=bearer(fresh["key"]))).status_code == 200


async def test_an_expired_key_is_refused(env: GatewayEnv) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    created = await create(env.client, expires_at=soon.isoformat())
    headers = bearer(created["key"])
    assert (await env.client.get(f"{KEYS}/{created['id']}", headers=ADMIN)).status_code == 200
    assert (await env.client.post(CHAT, json=ask(), headers=headers)).status_code == 200
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    expired = await env.client.post(CHAT, json=ask(), headers=headers)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    past = await env.client.post(
        KEYS, json={"name": "old", "expires_at": "2020-01-01T00:00:00Z"}, headers=ADMIN
    )
    assert past.status_code == 422 and "past" in past.json()["error"]["message"]


@pytest.mark.parametrize(
    ("creator", "body", "status"),
    [
        (USER, {}, 403),  # no keys:write
        (auth("acme", "w", scopes=["keys:write"]), {"scopes": ["admin"]}, 403),
        (auth("acme", "w", scopes=["keys:write"]), {"scopes": ["prompts:write"]}, 403),
        (auth("acme", "w", scopes=["keys:write"]), {"scopes": ["keys:write"]}, 201),
        (ADMIN, {"scopes": ["platform:admin"]}, 403),
        (PLATFORM, {"scopes": ["platform:admin"]}, 403),
        (ADMIN, {"scopes": ["admin", "prompts:write"]}, 201),
    ],
)
async def test_a_key_never_gets_scopes_its_creator_lacks(
    env: GatewayEnv, creator: dict[str, str], body: dict[str, Any], status: int
) -> None:
    response = await env.client.post(KEYS, json={"name": "k", **body}, headers=creator)
    assert response.status_code == status, response.text


async def test_a_key_cannot_mint_a_broader_key_or_rotate_one(env: GatewayEnv) -> None:
    writer = await create(env.client, scopes=["keys:write"], models=["chat"])
    as_writer = bearer(writer["key"])
    narrower = await create(env.client, as_writer)
    assert narrower["scopes"] == [] and narrower["models"] == ["chat"]
    wider = await env.client.post(
        KEYS, json={"name": "w", "models": ["chat", "other"]}, headers=as_writer
    )
    assert wider.status_code == 403
    admin_key = await create(env.client, scopes=["admin"])
    rotate = await env.client.post(f"{KEYS}/{admin_key['id']}/rotate", headers=as_writer)
    assert rotate.status_code == 403
    assert (await env.client.get(KEYS, headers=bearer(admin_key["key"]))).status_code == 200


async def test_keys_stay_in_their_tenant_except_for_the_platform_admin(env: GatewayEnv) -> None:
    created = await create(env.client)
    path = f"{KEYS}/{created['id']}"
    for headers in (OTHER_ADMIN, OTHER_ADMIN | {"X-Tenant-ID": "acme"}):
        listed = await env.client.get(KEYS, headers=headers)
        assert listed.status_code in (200, 403)
        assert created["id"] not in listed.text
        for method, url in (("GET", path), ("DELETE", path), ("POST", f"{path}/rotate")):
            response = await env.client.request(method, url, headers=headers)
            assert response.status_code in (403, 404), response.text
    assert (await env.client.post(CHAT, json=ask(), headers=bearer(created["key"]))).is_success
    as_platform = PLATFORM | {"X-Tenant-ID": "acme"}
    listed = await env.client.get(KEYS, headers=as_platform)
    assert [k["id"] for k in listed.json()["data"]["items"]] == [created["id"]]
    assert (await env.client.delete(path, headers=as_platform)).status_code == 200
    assert (
        await env.client.post(CHAT, json=ask(), headers=bearer(created["key"]))
    ).status_code == 401


async def test_a_key_limited_to_models_sees_and_calls_only_them(env: GatewayEnv) -> None:
    created = await create(env.client, name="reports", models=["chat", "embed"])
    headers = bearer(created["key"])
    models = await env.client.get("/v1/models", headers=headers)
    assert [m["id"] for m in models.json()["data"]] == ["chat", "embed"]
    gateway_models = await env.client.get("/api/v1/gateway/models", headers=headers)
    assert [m["name"] for m in gateway_models.json()["data"]["models"]] == ["chat", "embed"]
    assert (await env.client.post(CHAT, json=ask("chat"), headers=headers)).status_code == 200
    refused = await env.client.post(CHAT, json=ask("other"), headers=headers)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["message"] == "model 'other' is not allowed for API key 'reports'"
    assert error["type"] == "permission_error"
    stream = await env.client.post(CHAT, json=ask("other") | {"stream": True}, headers=headers)
    assert stream.status_code == 403
    embedded = await env.client.post(
        "/v1/embeddings", json={"model": "embed", "input": "x"}, headers=headers
    )
    assert embedded.status_code == 200, embedded.text
    everything = await env.client.get("/v1/models", headers=ADMIN)
    assert [m["id"] for m in everything.json()["data"]] == ["chat", "other", "embed"]


async def test_the_default_model_is_checked_too(env: GatewayEnv) -> None:
    created = await create(env.client, name="embed-only", models=["embed"])
    generate = await env.client.post(
        "/api/v1/gateway/generate",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers=bearer(created["key"]),
    )
    assert generate.status_code == 403, generate.text
    assert "'chat' is not allowed for API key 'embed-only'" in generate.text


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "k", "rpm": 0},
        {"name": "k", "budget_usd": -1},
        {"name": "k", "scopes": ["has space"]},
        {"name": "k", "expires_at": "2030-01-01T00:00:00"},  # no offset
        {"name": "k", "expires_at": "9999-12-31T23:59:59-12:00"},
        {"name": "k", "metadata": {"x": "y" * 5000}},
        {"name": "k", "unknown": 1},
    ],
)
async def test_bad_key_bodies_are_422(env: GatewayEnv, body: dict[str, Any]) -> None:
    response = await env.client.post(KEYS, json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"]


async def test_revocation_reaches_another_in_memory_replica_at_once(tmp_path: Any) -> None:
    """Two replicas' key components, each with its own cache and bus, sharing one database and
    one in-process broker: a revocation on one stops the key on the other although its cache
    would keep the key for an hour."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    await db.migrate()
    broker = InProcessBroker()
    buses = [InProcessBus("r", broker=broker) for _ in range(2)]
    codec = default_registry().get("application/json")
    one, two = (ApiKeys(db, bus, EventPublisher(bus, codec), cache_ttl_s=3600) for bus in buses)
    try:
        for bus, keys in zip(buses, (one, two), strict=True):
            await bus.start()
            await keys.start()
        admin = Identity("acme", "root", frozenset({"admin"}))
        for revoke in (one.revoke, one.rotate):
            created = await one.create(admin, NewKey(name="k"))
            assert (await two.resolver.resolve(created.key)).key_id == created.id
            await revoke(admin, created.id)
            started = time.monotonic()
            while time.monotonic() - started < 2:
                try:
                    await two.resolver.resolve(created.key)
                except Unauthenticated:
                    break
                await asyncio.sleep(0.005)
            with pytest.raises(Unauthenticated, match="invalid or revoked"):
                await two.resolver.resolve(created.key)
    finally:
        for bus, keys in zip(buses, (one, two), strict=True):
            await keys.stop()
            await bus.close()
        await db.close()
