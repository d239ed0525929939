"""The gateway on real servers: limits and budgets in Redis (shared by two replicas), the
behaviour when Redis is down, and usage events over real NATS."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from faas.backends.limits import MICRO, Windows
from faas.backends.limits.redis import RedisLimitStore
from faas.integrations.bus import Message
from faas.integrations.bus.nats import NatsBus
from faas.integrations.bus.nats_admin import server_barrier
from faas.shared.config import Settings
from tests.conftest import auth, drop_streams
from tests.gateway_app import GatewayEnv, gateway_env, priced_table
from tests.support.mock_upstream import USAGE, MockUpstream

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
DEAD_REDIS = "redis://127.0.0.1:6390/0"  # nothing listens here


def ask(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], **extra}


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def table(up: MockUpstream) -> Any:
    return priced_table(up.url)


async def away_from_minute_edge(margin_s: float = 3.0) -> None:
    """Per-minute counters reset on the minute: start a burst that cannot straddle one."""
    left = 60 - time.time() % 60
    if left < margin_s:
        await asyncio.sleep(left + 0.05)


async def set_limits(env: GatewayEnv, tenant_id: str, **limits: Any) -> None:
    admin = auth("ops", platform_admin=True)
    response = await env.client.put(
        f"/api/v1/gateway/limits/{tenant_id}", json=limits, headers=admin
    )
    assert response.status_code == 200, response.text


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as server:
        yield server


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def cleanup(redis: Redis) -> AsyncIterator[list[str]]:
    """Tenants whose limit counters are deleted after the test."""
    tenants: list[str] = []
    yield tenants
    for name in tenants:
        keys = [k async for k in redis.scan_iter(match=f"faas-meta:{name}:*")]
        if keys:
            await redis.delete(*keys)


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], redis_url: str, up: MockUpstream
) -> AsyncIterator[GatewayEnv]:
    async with gateway_env(make_settings(redis_url=redis_url), table(up)) as gateway:
        yield gateway


async def counters(redis: Redis, tenant_id: str) -> dict[str, int]:
    keys = RedisLimitStore._keys(tenant_id, Windows.at(time.time()))
    values = await redis.mget(keys)
    return dict(zip(["req", "tok", "day", "month"], (int(v or 0) for v in values), strict=True))


# -- limits in Redis -------------------------------------------------------------------------


async def test_rpm_holds_under_concurrency_in_redis(
    env: GatewayEnv, redis: Redis, cleanup: list[str], up: MockUpstream
) -> None:
    assert env.service.limits.backend == "redis"
    acme = tenant()
    cleanup.append(acme)
    await set_limits(env, acme, rpm=5)
    await away_from_minute_edge()
    headers = auth(acme)
    responses = await asyncio.gather(
        *(env.client.post(CHAT, json=ask(temperature=0.5), headers=headers) for _ in range(30))
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 5 and statuses.count(429) == 25, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert up.stats.requests == 5
    used = await counters(redis, acme)
    assert used["req"] == 5
    assert used["tok"] == 5 * USAGE["total_tokens"]  # reconciled to what the upstream reported
    view = (await env.client.get("/api/v1/gateway/rate-limits", headers=headers)).json()["data"]
    assert view["remaining"]["requests_this_minute"] == 0


async def test_daily_budget_never_overshoots_under_concurrency(
    env: GatewayEnv, redis: Redis, cleanup: list[str]
) -> None:
    # Admission reserves (8 prompt + 10 max_tokens) → 0.028 USD; each call then costs
    # (10 * 1.0 + 7 * 2.0) / 1000 = 0.024 USD. A 0.1 USD budget admits 1 to 4 calls.
    acme = tenant()
    cleanup.append(acme)
    await set_limits(env, acme, daily_budget_usd=0.1)
    headers = auth(acme)
    responses = await asyncio.gather(
        *(
            env.client.post(CHAT, json=ask(temperature=0.5, max_tokens=10), headers=headers)
            for _ in range(30)
        )
    )
    ok = sum(r.status_code == 200 for r in responses)
    assert all(r.status_code in (200, 429) for r in responses)
    assert 1 <= ok <= 4
    refused = next(r for r in responses if r.status_code == 429)
    assert "budget" in refused.json()["error"]["message"].lower()
    used = await counters(redis, acme)
    cost = round((USAGE["prompt_tokens"] * 1.0 + USAGE["completion_tokens"] * 2.0) / 1000 * MICRO)
    assert used["day"] <= 0.1 * MICRO
    assert used["day"] == used["month"] == ok * cost
    assert used["req"] == ok


async def test_two_replicas_sharing_redis_share_the_limit(
    make_settings: Callable[..., Settings],
    redis_url: str,
    up: MockUpstream,
    redis: Redis,
    cleanup: list[str],
    tmp_path: Any,
) -> None:
    acme = tenant()
    cleanup.append(acme)
    headers = auth(acme)

    def replica(name: str) -> Any:
        settings = make_settings(
            redis_url=redis_url, data_dir=tmp_path / name, gateway_default_rpm=6
        )
        return gateway_env(settings, table(up))

    async with replica("one") as one, replica("two") as two:
        assert one.runtime is not two.runtime
        await away_from_minute_edge()
        calls = [
            gateway.client.post(CHAT, json=ask(temperature=0.5), headers=headers)
            for gateway in (one, two)
            for _ in range(10)
        ]
        responses = await asyncio.gather(*calls)
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 6 and statuses.count(429) == 14, statuses
        # Each replica served some, neither alone could have known the total.
        assert up.stats.requests == 6
        assert (await counters(redis, acme))["req"] == 6


# -- Redis down --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_error", "status"), [("closed", 503), ("open", 200)], ids=["closed", "open"]
)
async def test_limit_store_down(
    make_settings: Callable[..., Settings], up: MockUpstream, on_error: str, status: int
) -> None:
    settings = make_settings(redis_url=DEAD_REDIS, gateway_limits_on_store_error=on_error)
    async with gateway_env(settings, table(up)) as env:
        assert env.service.limits.backend == "redis"
        headers = auth(tenant())
        # temperature > 0: not cacheable, so only the limit store is consulted.
        response = await env.client.post(CHAT, json=ask(temperature=0.5), headers=headers)
        assert response.status_code == status, response.text
        native = await env.client.post(
            "/api/v1/gateway/generate",
            json={"prompt": "hi", "model": "chat", "temperature": 0.5},
            headers=headers,
        )
        assert native.status_code == status, native.text
        if on_error == "closed":
            error = response.json()["error"]
            assert error["code"] == "dependency_unavailable" and error["type"] == "api_error"
            envelope = native.json()
            assert envelope["success"] is False
            assert envelope["error"]["code"] == "dependency_unavailable"
            assert up.stats.requests == 0
        else:
            assert (
                response.json()["choices"][0]["message"]["content"]
                == "Hello from the mock upstream."
            )
            assert native.json()["data"]["text"] == "Hello from the mock upstream."
            assert up.stats.requests == 2
        stream = await env.client.post(CHAT, json=ask(stream=True), headers=headers)
        assert stream.status_code == status
        embedded = await env.client.post(
            "/v1/embeddings", json={"model": "embed", "input": "x"}, headers=headers
        )
        assert embedded.status_code == status


@pytest.mark.parametrize(
    ("on_error", "status"), [("closed", 503), ("open", 200)], ids=["closed", "open"]
)
async def test_cacheable_chat_with_the_store_down_is_not_a_500(
    make_settings: Callable[..., Settings], up: MockUpstream, on_error: str, status: int
) -> None:
    """temperature=0 makes the request cacheable: the exact-cache read hits the dead Redis
    first. That must end like the limit store's documented behaviour (503 closed / served
    open), not as an unhandled ConnectionError → 500 internal_error."""
    settings = make_settings(redis_url=DEAD_REDIS, gateway_limits_on_store_error=on_error)
    async with gateway_env(settings, table(up)) as env:
        response = await env.client.post(CHAT, json=ask(temperature=0), headers=auth(tenant()))
        assert response.status_code == status, response.text


# -- usage events over NATS --------------------------------------------------------------------


async def test_usage_events_over_real_nats(
    make_settings: Callable[..., Settings], nats_url: str, up: MockUpstream
) -> None:
    prefix = f"gwtest{uuid.uuid4().hex[:12]}"
    acme = tenant()
    settings = make_settings(nats_url=nats_url, nats_prefix=prefix)
    listener = NatsBus(nats_url, prefix, name="usage-listener")
    received: list[Message] = []

    async def collect(message: Message) -> None:
        received.append(message)

    await listener.start()
    try:
        await listener.subscribe("gateway.usage.>", collect)
        async with gateway_env(settings, table(up)) as env:
            assert env.runtime.bus.backend == "nats"
            try:
                await exercise_usage(env, acme, received)
                # Nothing more arrives: the gateway's publishes are all through the server.
                assert env.runtime.bus.client is not None and listener.client is not None
                await server_barrier(env.runtime.bus.client)
                await server_barrier(listener.client)
                await asyncio.sleep(0.05)
                assert len(received) == 3
            finally:
                await drop_streams(env.runtime.bus)
    finally:
        await listener.close()


async def exercise_usage(env: GatewayEnv, acme: str, received: list[Message]) -> None:
    headers = auth(acme, user="ann")
    chat = await env.client.post(CHAT, json=ask(temperature=0.5), headers=headers)
    assert chat.status_code == 200, chat.text
    async with env.client.stream("POST", CHAT, json=ask(stream=True), headers=headers) as stream:
        assert stream.status_code == 200
        lines = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    embedded = await env.client.post(
        "/v1/embeddings", json={"model": "embed", "input": ["one two", "three"]}, headers=headers
    )
    assert embedded.status_code == 200, embedded.text

    await eventually(lambda: len(received) >= 3)
    ids = [m.headers["Nats-Msg-Id"] for m in received]
    assert len(set(ids)) == len(ids) == 3
    events = []
    for message in received:
        event = orjson.loads(message.data)
        assert message.subject == f"gateway.usage.{acme}"
        assert message.headers["X-Tenant-ID"] == acme
        assert message.headers["Nats-Msg-Id"] == event["id"]
        assert event["type"] == "gateway.usage" and event["tenant_id"] == acme
        events.append(event["data"])
    by_kind = {(e["operation"], e["stream"]): e for e in events}
    assert set(by_kind) == {("chat", False), ("chat", True), ("embeddings", False)}
    chat_cost = (USAGE["prompt_tokens"] * 1.0 + USAGE["completion_tokens"] * 2.0) / 1000
    for key in [("chat", False), ("chat", True)]:
        data = by_kind[key]
        assert data["prompt_tokens"] == USAGE["prompt_tokens"]
        assert data["completion_tokens"] == USAGE["completion_tokens"]
        assert data["total_tokens"] == USAGE["total_tokens"]
        assert data["usage_source"] == "provider"
        assert data["cost_usd"] == pytest.approx(chat_cost)
        assert data["status"] == "ok" and data["user_id"] == "ann"
    embed = by_kind[("embeddings", False)]
    # The mock upstream reports one token per word: "one two" + "three".
    assert embed["prompt_tokens"] == embed["total_tokens"] == 3
    assert embed["completion_tokens"] == 0
    assert embed["cost_usd"] == pytest.approx(3 * 0.5 / 1000)
    assert embed["model"] == "embed"


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
