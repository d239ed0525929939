"""The semantic cache's index lives in the key/value store: gateways sharing a store share it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from faas.backends.kv import KeyValueStore, MemoryKeyValueStore
from faas.backends.kv.redis import RedisKeyValueStore
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.models import CacheOptions
from faas.services.gateway_service.semantic_cache import SemanticCache, Vector
from faas.services.gateway_service.service import GatewayService
from faas.shared.config import Settings
from faas.shared.context import Identity
from faas.shared.exceptions import DependencyUnavailable
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import MockUpstream

CHAT = "/v1/chat/completions"
SEMANTIC = {"semantic": True, "threshold": 0.8}


def unit(*values: float) -> Vector:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def ask(text: str) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], "cache": SEMANTIC}


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    if request.param == "memory":
        store: KeyValueStore = MemoryKeyValueStore()
    else:
        store = RedisKeyValueStore.with_url(request.getfixturevalue("redis_url"))
    yield store
    await store.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# -- two gateway instances -------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def gateways(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[GatewayEnv, GatewayService]]:
    """One gateway app, and a second gateway service on the same store: the same memory store
    object, or its own connection to the same Redis (as another replica has)."""
    extra = {"redis_url": request.getfixturevalue("redis_url")} if request.param == "redis" else {}
    settings = make_settings(**extra)
    async with MockUpstream() as up:
        deployment = {"provider": "openai", "model": "mock-model", "api_base": up.url}
        table = routing(
            {"name": "chat", "deployments": [deployment | {"api_key": "sk-up"}]},
            {"name": "embed-default", "kind": "embedding", "deployments": [{"provider": "hash"}]},
        )
        async with gateway_env(settings, table) as env:
            shared = env.runtime.kv
            if request.param == "redis":
                shared = RedisKeyValueStore.with_url(extra["redis_url"])
            other = GatewayService(
                settings,
                kv=shared,
                db=env.runtime.db,
                events=env.runtime.events,
                meter=env.runtime.telemetry.meter,
                routing=table,
            )
            yield env, other
            await other.stop()
            if shared is not env.runtime.kv:
                await shared.close()


async def test_two_gateways_on_one_store_see_each_others_semantic_entries(
    gateways: tuple[GatewayEnv, GatewayService], tenant: str
) -> None:
    env, other = gateways
    headers = auth(tenant)
    first = await env.client.post(CHAT, json=ask("What is the capital of France?"), headers=headers)
    assert first.headers["x-cache"] == "MISS"

    async def from_other(text: str) -> Any:
        body = ask(text)
        options = CacheOptions.model_validate(body.pop("cache"))
        done = await other.pipeline.complete(Identity(tenant), body, TenantLimits(), cache=options)
        return done.call.cached

    assert await from_other("what is the capital of france") == "semantic"
    assert await from_other("Explain photosynthesis in plants") is False
    again = await env.client.post(
        CHAT, json=ask("explain photosynthesis in plants"), headers=headers
    )
    assert again.headers["x-cache"] == "SEMANTIC_HIT"


# -- the index itself ------------------------------------------------------------------------


async def test_nearest_is_scoped_by_tenant_and_model_and_needs_the_threshold(
    kv: KeyValueStore, tenant: str
) -> None:
    cache = SemanticCache(kv, ttl_s=60)
    await cache.add(tenant, "chat", unit(1, 0, 0), "key-a")
    await cache.add(tenant, "chat", unit(0, 1, 0), "key-b")
    found = await cache.nearest(tenant, "chat", unit(1, 0.1, 0), threshold=0.9)
    assert found is not None and found[0] == "key-a" and found[1] == pytest.approx(0.995, 1e-3)
    assert await cache.nearest(tenant, "chat", unit(1, 1, 0), threshold=0.9) is None
    assert await cache.nearest(tenant, "other-model", unit(1, 0, 0), threshold=0.5) is None
    assert await cache.nearest(f"{tenant}-x", "chat", unit(1, 0, 0), threshold=0.5) is None
    assert await cache.nearest(tenant, "chat", unit(1, 0, 0, 0), threshold=0.5) is None


async def test_forget_and_expiry_remove_an_entry(kv: KeyValueStore, tenant: str) -> None:
    cache = SemanticCache(kv, ttl_s=0.2)
    await cache.add(tenant, "chat", unit(1, 0), "key-a")
    await cache.forget(tenant, "chat", "key-a")
    assert await cache.nearest(tenant, "chat", unit(1, 0), threshold=0.5) is None
    await cache.add(tenant, "chat", unit(1, 0), "key-b")
    await asyncio.sleep(0.3)
    assert await cache.nearest(tenant, "chat", unit(1, 0), threshold=0.5) is None
    assert await kv.scan(f"faas:{tenant}:*") == []


async def test_each_scope_keeps_its_newest_entries(kv: KeyValueStore, tenant: str) -> None:
    cache = SemanticCache(kv, ttl_s=60, per_scope=2)
    for index, key in enumerate(["oldest", "older", "newer", "newest"]):
        await cache.add(tenant, "chat", unit(1, index * 0.01), key)
        await asyncio.sleep(0.002)  # entries are ordered by the time they were added
    found = await cache.nearest(tenant, "chat", unit(1, 0), threshold=0.5)
    assert found is not None and found[0] == "newer"
    assert len(await kv.scan(f"faas:{tenant}:*")) == 3  # the scope's set and two vectors


class Unreachable(MemoryKeyValueStore):
    async def smembers(self, key: str) -> set[str]:
        raise DependencyUnavailable("down")

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        raise DependencyUnavailable("down")


async def test_an_unreachable_store_is_a_miss_not_an_error() -> None:
    cache = SemanticCache(Unreachable(), ttl_s=60)
    await cache.add("t", "chat", unit(1, 0), "key-a")
    assert await cache.nearest("t", "chat", unit(1, 0), threshold=0.5) is None
