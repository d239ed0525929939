"""Bring your own key: a tenant's provider keys are sealed at rest, never shown or logged, and
used for that tenant's calls only."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from faas.services.gateway_service.provider_keys import (
    ProviderKeyBody,
    ProviderKeyRow,
    ProviderKeys,
)
from faas.shared.config import Settings
from faas.shared.secrets import SealError, SecretBox
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import MockUpstream

KEY_A = base64.urlsafe_b64encode(b"a" * 32).decode()
KEY_B = base64.urlsafe_b64encode(b"b" * 32).decode()
ACME_ADMIN = auth("acme", "root", scopes=["admin"])
ACME = auth("acme")
GLOBEX = auth("globex")
GLOBEX_ADMIN = auth("globex", "root", scopes=["admin"])
PLATFORM = auth("ops", platform_admin=True)
TENANT_KEY = "sk-acme-own-0123456789abcdef"
KEYS = "/api/v1/gateway/provider-keys"
CHAT = "/v1/chat/completions"


def ask(model: str = "chat") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def table(up: MockUpstream, **deployment: Any) -> Any:
    base = {"provider": "openai", "model": "mock-model", "api_base": up.url, "timeout_s": 5}
    return routing(
        {"name": "chat", "deployments": [base | {"api_key": "sk-up"} | deployment]},
        {"name": "other", "deployments": [base | {"api_key": "sk-up"}]},
    )


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[GatewayEnv]:
    settings = make_settings(secrets_key=KEY_A, gateway_breaker_failures=2)
    async with gateway_env(settings, table(up)) as gateway:
        yield gateway


async def put_key(env: GatewayEnv, key: str = TENANT_KEY, **target: str) -> Any:
    body = {"api_key": key, **(target or {"provider": "openai"})}
    return await env.client.put(KEYS, json=body, headers=ACME_ADMIN)


async def test_a_stored_key_is_sealed_at_rest_and_never_returned(env: GatewayEnv) -> None:
    put = await put_key(env)
    assert put.status_code == 200, put.text
    listed = await env.client.get(KEYS, headers=ACME_ADMIN)
    assert TENANT_KEY not in put.text and TENANT_KEY not in listed.text
    [view] = listed.json()["data"]
    assert view["provider"] == "openai" and view["key_suffix"] == "…cdef"
    async with env.service.provider_keys.db.session() as session:
        [row] = (await session.scalars(select(ProviderKeyRow))).all()
    assert TENANT_KEY.encode() not in row.sealed and b"0123456789abcdef" not in row.sealed
    assert row.tenant_id == "acme"


async def test_the_upstream_receives_the_tenants_key_and_nobody_sees_it(
    env: GatewayEnv, up: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert (await put_key(env)).status_code == 200
    answer = await env.client.post(CHAT, json=ask(), headers=ACME)
    assert answer.status_code == 200, answer.text
    assert up.stats.last_headers["authorization"] == f"Bearer {TENANT_KEY}"
    other = await env.client.post(CHAT, json=ask(), headers=GLOBEX)
    assert other.status_code == 200
    assert up.stats.last_headers["authorization"] == "Bearer sk-up"  # globex: the platform's
    assert TENANT_KEY not in caplog.text
    assert caplog.records  # the request did log: the assertion above could fail
    assert TENANT_KEY not in answer.text and TENANT_KEY not in str(env.events)


async def test_another_tenant_neither_sees_nor_deletes_the_key(env: GatewayEnv) -> None:
    assert (await put_key(env)).status_code == 200
    listed = await env.client.get(KEYS, headers=GLOBEX_ADMIN)
    assert listed.json()["data"] == []
    gone = await env.client.delete(KEYS, params={"provider": "openai"}, headers=GLOBEX_ADMIN)
    assert gone.status_code == 404
    assert len((await env.client.get(KEYS, headers=ACME_ADMIN)).json()["data"]) == 1


async def test_a_models_key_wins_over_the_providers(env: GatewayEnv, up: MockUpstream) -> None:
    assert (await put_key(env)).status_code == 200
    assert (await put_key(env, "sk-acme-for-chat-only", model="chat")).status_code == 200
    await env.client.post(CHAT, json=ask("chat"), headers=ACME)
    assert up.stats.last_headers["authorization"] == "Bearer sk-acme-for-chat-only"
    await env.client.post(CHAT, json=ask("other"), headers=ACME)
    assert up.stats.last_headers["authorization"] == f"Bearer {TENANT_KEY}"


async def test_deleting_the_key_returns_to_the_deployments_at_once(
    env: GatewayEnv, up: MockUpstream
) -> None:
    assert (await put_key(env)).status_code == 200
    await env.client.post(CHAT, json=ask(), headers=ACME)
    gone = await env.client.delete(KEYS, params={"provider": "openai"}, headers=ACME_ADMIN)
    assert gone.status_code == 200
    await env.client.post(CHAT, json=ask(), headers=ACME)
    assert up.stats.last_headers["authorization"] == "Bearer sk-up"


async def test_a_rejected_tenant_key_is_502_and_leaves_the_deployment_healthy(
    env: GatewayEnv, up: MockUpstream
) -> None:
    up.control(require_api_key="sk-up")
    assert (await put_key(env, "sk-acme-wrong-key-000")).status_code == 200
    for _ in range(4):  # the breaker opens after 2 failures of the deployment's own
        refused = await env.client.post(CHAT, json=ask(), headers=ACME)
        assert refused.status_code == 502
        assert "provider key" in refused.json()["error"]["message"]
        assert "sk-acme-wrong" not in refused.text
    assert (await env.client.post(CHAT, json=ask(), headers=GLOBEX)).status_code == 200


async def test_a_tenant_key_serves_a_deployment_whose_variable_is_unset(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> None:
    settings = make_settings(secrets_key=KEY_A)
    async with gateway_env(settings, table(up, api_key="env:FAAS_TEST_UNSET_KEY_VAR")) as env:
        assert (await env.client.post(CHAT, json=ask(), headers=GLOBEX)).status_code == 503
        assert (await put_key(env)).status_code == 200
        assert (await env.client.post(CHAT, json=ask(), headers=ACME)).status_code == 200
        assert up.stats.last_headers["authorization"] == f"Bearer {TENANT_KEY}"


async def test_without_a_key_ring_the_endpoint_is_409_naming_the_variable(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> None:
    async with gateway_env(make_settings(), table(up)) as env:
        refused = await put_key(env)
        assert refused.status_code == 409
        assert "FAAS_SECRETS_KEY" in refused.json()["error"]["message"]
        assert (await env.client.get(KEYS, headers=ACME_ADMIN)).status_code == 409
        assert (await env.client.post(CHAT, json=ask(), headers=ACME)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"api_key": TENANT_KEY},
        {"api_key": TENANT_KEY, "provider": "openai", "model": "chat"},
        {"api_key": "sk-7x", "provider": "openai"},
        {"api_key": " sk-with-spaces ", "provider": "openai"},
        {"api_key": TENANT_KEY, "provider": "nope"},
    ],
)
async def test_invalid_bodies_are_422_without_echoing_the_key(
    env: GatewayEnv, body: dict[str, Any]
) -> None:
    answer = await env.client.put(KEYS, json=body, headers=ACME_ADMIN)
    assert answer.status_code == 422
    assert body["api_key"].strip() not in answer.text


async def test_keys_need_the_admin_scope_and_rotation_the_platform_admin(env: GatewayEnv) -> None:
    assert (await put_key(env)).status_code == 200
    body = {"provider": "openai", "api_key": TENANT_KEY}
    assert (await env.client.put(KEYS, json=body, headers=ACME)).status_code == 403
    assert (await env.client.get(KEYS, headers=ACME)).status_code == 403
    assert (await env.client.post(f"{KEYS}/rotate", headers=ACME_ADMIN)).status_code == 403
    rotated = await env.client.post(f"{KEYS}/rotate", headers=PLATFORM)
    assert rotated.json()["data"] == {"resealed": 0}  # already under the first key


async def test_rotation_reseals_under_the_first_key_of_the_ring(env: GatewayEnv) -> None:
    db = env.service.provider_keys.db
    old = ProviderKeys(db, SecretStr(KEY_A))
    body = ProviderKeyBody(provider="openai", api_key=SecretStr(TENANT_KEY))
    await old.put("acme", body, by="root")
    ring = ProviderKeys(db, SecretStr(f"{KEY_B},{KEY_A}"))
    assert (await ring.for_tenant("acme")).keys["provider:openai"].get_secret_value() == TENANT_KEY
    assert await ring.rotate() == 1
    assert await ring.rotate() == 0
    only_new = ProviderKeys(db, SecretStr(KEY_B))
    assert (await only_new.for_tenant("acme")).keys["provider:openai"].get_secret_value() == (
        TENANT_KEY
    )
    with pytest.raises(Exception, match="FAAS_SECRETS_KEY"):
        await ProviderKeys(db, SecretStr(KEY_A)).for_tenant("acme")


def test_a_sealed_value_opens_only_in_its_own_context() -> None:
    box = SecretBox(KEY_A)
    sealed = box.seal(b"secret", b"acme")
    assert box.open(sealed, b"acme") == b"secret"
    with pytest.raises(SealError):
        box.open(sealed, b"globex")
    with pytest.raises(SealError):
        SecretBox(KEY_B).open(sealed, b"acme")
    assert SecretBox(f"{KEY_B},{KEY_A}").needs_rotation(sealed)
