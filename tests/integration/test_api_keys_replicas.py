"""Two replicas of the gateway (each its own runtime, key cache and NATS connection) sharing a
real PostgreSQL database and NATS: a key created on one works on both through the official
`openai` SDK, and revoking or rotating it on one is a 401 on the other at once — long before
the key cache's TTL."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest

from faas.integrations.bus.nats import NatsBus
from faas.shared.config import Settings
from tests.conftest import auth, drop_streams
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream
from tests.support.pgvector import fresh_database

pytestmark = pytest.mark.integration

ADMIN = auth("acme", "root", scopes=["admin"])
A = auth("acme", "ada")
HI = [{"role": "user", "content": "hi"}]
MODELS = """\
models:
  - name: chat
    deployments:
      - provider: mock
        model: faas-mock
  - name: embed
    kind: embedding
    deployments:
      - provider: hash
        dimensions: 64
"""


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_url, "faas_keys") as url:
        yield url


@asynccontextmanager
async def sdk(replica: Platform, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    transport = httpx.ASGITransport(app=replica.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://faas.test") as http:
        yield openai.AsyncOpenAI(
            base_url="http://faas.test/v1", api_key=key, http_client=http, max_retries=0
        )


async def refused_within(client: openai.AsyncOpenAI, seconds: float) -> float:
    """How long until `client`'s key is refused (failing after `seconds`)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            await client.models.list()
        except openai.AuthenticationError as exc:
            assert "invalid or revoked API key" in str(exc)
            return time.monotonic() - started
        # An in-process (ASGI) request to a cached key never waits on I/O: without a pause
        # this loop would starve the NATS reader that delivers the revocation.
        await asyncio.sleep(0.005)
    raise AssertionError(f"the key still worked {seconds} s after it was revoked")


async def test_revoked_and_rotated_keys_stop_on_every_replica_at_once(
    make_settings: Callable[..., Settings], nats_url: str, database: str, tmp_path: Path
) -> None:
    routing = tmp_path / "models.yaml"
    routing.write_text(MODELS)
    settings = make_settings(
        nats_url=nats_url,
        nats_prefix=f"keys{uuid.uuid4().hex[:10]}",
        database_url=database,
        gateway_models=routing,
    )
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(platform(settings, ["gateway"]))
        two = await stack.enter_async_context(platform(settings, ["gateway"]))
        assert isinstance(one.runtime.bus, NatsBus) and one.runtime.db.backend == "postgres"
        assert one.runtime.keys is not two.runtime.keys
        ttl = two.runtime.keys.resolver.ttl_s
        try:
            created = await one.client.post(
                "/api/v1/keys", json={"name": "ci", "models": ["chat"]}, headers=ADMIN
            )
            assert created.status_code == 201, created.text
            key, key_id = created.json()["data"]["key"], created.json()["data"]["id"]

            async with sdk(one, key) as first, sdk(two, key) as second:
                for client in (first, second):
                    models = await client.models.list()
                    assert [m.id for m in models.data] == ["chat"]
                    reply = await client.chat.completions.create(model="chat", messages=HI)
                    assert reply.choices[0].message.content
                    with pytest.raises(openai.PermissionDeniedError, match="not allowed"):
                        await client.embeddings.create(model="embed", input="x")

                rotated = await one.client.post(f"/api/v1/keys/{key_id}/rotate", headers=ADMIN)
                assert rotated.status_code == 200, rotated.text
                assert await refused_within(second, 5.0) < ttl / 10

            fresh = rotated.json()["data"]["key"]
            async with sdk(one, fresh) as first, sdk(two, fresh) as second:
                for client in (first, second):
                    await client.chat.completions.create(model="chat", messages=HI)
                revoked = await two.client.delete(f"/api/v1/keys/{key_id}", headers=ADMIN)
                assert revoked.status_code == 200, revoked.text
                assert await refused_within(first, 5.0) < ttl / 10
                with pytest.raises(openai.AuthenticationError):
                    await second.chat.completions.create(model="chat", messages=HI)
        finally:
            await drop_streams(one.runtime.bus)


async def test_the_anthropic_sdk_sends_a_key_as_x_api_key_until_it_is_revoked(
    make_settings: Callable[..., Settings], nats_url: str, database: str, tmp_path: Path
) -> None:
    routing = tmp_path / "models.yaml"
    routing.write_text(MODELS)
    settings = make_settings(
        nats_url=nats_url,
        nats_prefix=f"keys{uuid.uuid4().hex[:10]}",
        database_url=database,
        gateway_models=routing,
    )
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(platform(settings, ["gateway"]))
        two = await stack.enter_async_context(platform(settings, ["gateway"]))
        try:
            created = await one.client.post(
                "/api/v1/keys", json={"name": "claude-code", "models": ["chat"]}, headers=ADMIN
            )
            assert created.status_code == 201, created.text
            key, key_id = created.json()["data"]["key"], created.json()["data"]["id"]
            # The anthropic SDK runs on httpx2 (httpx's successor), with its own ASGI transport.
            transport = httpx2.ASGITransport(app=two.app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://faas.test") as http:
                client = anthropic.AsyncAnthropic(
                    api_key=key, base_url="http://faas.test", http_client=http, max_retries=0
                )
                reply = await client.messages.create(model="chat", max_tokens=32, messages=HI)
                assert reply.content
                with pytest.raises(anthropic.PermissionDeniedError, match="not allowed"):
                    await client.messages.create(model="embed", max_tokens=32, messages=HI)
                revoked = await one.client.delete(f"/api/v1/keys/{key_id}", headers=ADMIN)
                assert revoked.status_code == 200, revoked.text
                started = time.monotonic()
                while time.monotonic() - started < 5:
                    try:
                        await client.messages.create(model="chat", max_tokens=32, messages=HI)
                    except anthropic.AuthenticationError:
                        break
                    await asyncio.sleep(0.005)
                with pytest.raises(anthropic.AuthenticationError, match="invalid or revoked"):
                    await client.messages.create(model="chat", max_tokens=32, messages=HI)
        finally:
            await drop_streams(one.runtime.bus)


async def test_a_provider_key_change_reaches_the_other_replica_at_once(
    make_settings: Callable[..., Settings], nats_url: str, database: str, tmp_path: Path
) -> None:
    """BYOK keys are cached per tenant for 30 s; a put or delete on one replica is seen by the
    other at once (the `gateway.provider_keys_changed` event), not after the TTL."""
    async with MockUpstream() as up:
        routing = tmp_path / "models.yaml"
        routing.write_text(
            "models:\n  - name: chat\n    deployments:\n      - provider: openai\n"
            f"        model: mock-model\n        api_base: {up.url}\n        api_key: sk-up\n"
        )
        settings = make_settings(
            nats_url=nats_url,
            nats_prefix=f"byok{uuid.uuid4().hex[:10]}",
            database_url=database,
            gateway_models=routing,
            secrets_key=base64.urlsafe_b64encode(b"k" * 32).decode(),
        )
        body = {"model": "chat", "messages": HI}
        keys = "/api/v1/gateway/provider-keys"
        async with AsyncExitStack() as stack:
            one = await stack.enter_async_context(platform(settings, ["gateway"]))
            two = await stack.enter_async_context(platform(settings, ["gateway"]))

            async def seen_by_two(expected: str) -> float:
                started = time.monotonic()
                while time.monotonic() - started < 5:
                    answer = await two.client.post("/v1/chat/completions", json=body, headers=A)
                    assert answer.status_code == 200, answer.text
                    if up.stats.last_headers["authorization"] == expected:
                        return time.monotonic() - started
                    await asyncio.sleep(0.01)
                raise AssertionError(f"replica two still sends the old key, not {expected}")

            try:
                # Replica two caches "no key of acme's" first.
                assert await seen_by_two("Bearer sk-up") < 1
                put = {"provider": "openai", "api_key": "sk-acme-own-0123456789"}
                stored = await one.client.put(keys, json=put, headers=ADMIN)
                assert stored.status_code == 200, stored.text
                ttl = two.app.state.services["gateway"].provider_keys.ttl_s
                assert await seen_by_two("Bearer sk-acme-own-0123456789") < ttl / 10
                gone = await one.client.delete(keys, params={"provider": "openai"}, headers=ADMIN)
                assert gone.status_code == 200, gone.text
                assert await seen_by_two("Bearer sk-up") < ttl / 10
            finally:
                await drop_streams(one.runtime.bus)
