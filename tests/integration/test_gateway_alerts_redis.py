"""Budget alerts on real servers: two gateway replicas share the budget counters and the alert
keys in Redis, so a threshold crossed through both is published exactly once, however many
checks run at the same time; and an alert reaches LLMOps over JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import orjson
import pytest
from redis.asyncio import Redis

from faas.integrations.bus import Message
from faas.integrations.bus.subjects import event_stream_name
from faas.shared.config import Settings
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, priced_table
from tests.platform_app import platform
from tests.support.mock_upstream import MockUpstream
from tests.support.pgvector import fresh_database

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"


def ask() -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.5,
        "max_tokens": 10,
    }


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as server:
        yield server


@pytest.fixture
async def acme(redis_url: str) -> AsyncIterator[str]:
    """A fresh tenant; its counters and alert keys are deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    yield name
    client = Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"*{name}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def collect_alerts(env: GatewayEnv) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def on_alert(message: Message) -> None:
        found.append(orjson.loads(message.data))

    await env.runtime.bus.subscribe("gateway.alert.>", on_alert)
    return found


async def test_two_replicas_publish_a_crossed_threshold_once(
    make_settings: Callable[..., Settings],
    redis_url: str,
    up: MockUpstream,
    acme: str,
    tmp_path: Any,
) -> None:
    def replica(name: str) -> Any:
        settings = make_settings(
            redis_url=redis_url,
            data_dir=tmp_path / name,
            gateway_default_daily_budget_usd=0.1,
            alert_interval_s=3600,  # checks run below, all at once, not on the timer
        )
        return gateway_env(settings, priced_table(up.url))

    async with replica("one") as one, replica("two") as two:
        assert one.service.alerts is not None and two.service.alerts is not None
        seen = [await collect_alerts(one), await collect_alerts(two)]
        # Each call costs (10 * 1.0 + 7 * 2.0) / 1000 = 0.024 USD: four make 0.096 of 0.1,
        # past the default 80% threshold; each replica served two of them.
        for gateway in (one, two, one, two):
            response = await gateway.client.post(CHAT, json=ask(), headers=auth(acme))
            assert response.status_code == 200, response.text
        checks = [g.service.alerts.check() for g in (one, two) for _ in range(8)]
        published = [alert for found in await asyncio.gather(*checks) for alert in found]
        assert [(a.kind, a.budget, a.threshold) for a in published] == [
            ("budget_threshold", "daily", 0.8)
        ]
        assert published[0].spent == pytest.approx(0.096) and published[0].limit == 0.1
        for _ in range(100):
            if sum(map(len, seen)):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        events = seen[0] + seen[1]
        assert len(events) == 1
        assert events[0]["tenant_id"] == acme and events[0]["type"] == "gateway.alert"
        # Later calls and checks in the same day do not publish it again.
        response = await two.client.post(CHAT, json={**ask(), "max_tokens": 1}, headers=auth(acme))
        assert await one.service.alerts.check() == []
        assert await two.service.alerts.check() == []


async def test_alert_thresholds_are_part_of_a_tenants_limits(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> None:
    admin = auth("ops", platform_admin=True)
    async with gateway_env(make_settings(), priced_table(up.url)) as env:
        path = "/api/v1/gateway/limits/acme"
        good = {"daily_budget_usd": 5.0, "alert_thresholds": [0.5, 0.9]}
        response = await env.client.put(path, json=good, headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["data"]["alert_thresholds"] == [0.5, 0.9]
        for bad in ([1.5], [0], ["x"], [0.1] * 9):
            response = await env.client.put(path, json={"alert_thresholds": bad}, headers=admin)
            assert response.status_code == 422, (bad, response.text)


async def test_an_alert_reaches_llmops_over_jetstream(
    make_settings: Callable[..., Settings],
    nats_url: str,
    postgres_url: str,
    redis_url: str,
    up: MockUpstream,
    acme: str,
) -> None:
    prefix = f"alerts{uuid.uuid4().hex[:10]}"
    headers = auth(acme, "ann")
    try:
        async with fresh_database(postgres_url, "faas_alerts") as database:
            common = {"nats_url": nats_url, "nats_prefix": prefix, "database_url": database}
            gateway_settings = make_settings(
                **common,
                redis_url=redis_url,
                gateway_default_daily_budget_usd=0.1,
                alert_interval_s=0.1,
            )
            async with (
                platform(make_settings(**common), ["llmops"]) as llmops,
                gateway_env(gateway_settings, priced_table(up.url)) as gateway,
            ):
                for _ in range(4):  # 0.096 of 0.1 USD
                    response = await gateway.client.post(CHAT, json=ask(), headers=headers)
                    assert response.status_code == 200, response.text
                listed: list[dict[str, Any]] = []
                for _ in range(300):
                    got = await llmops.client.get("/api/v1/llmops/alerts", headers=headers)
                    assert got.status_code == 200, got.text
                    listed = got.json()["data"]
                    if listed:
                        break
                    await asyncio.sleep(0.05)
                assert [(a["kind"], a["budget"], a["threshold"]) for a in listed] == [
                    ("budget_threshold", "daily", 0.8)
                ]
                assert listed[0]["spent_usd"] == pytest.approx(0.096)
    finally:
        nc = await nats.connect(nats_url)
        try:
            for name in ("usage", "alerts", "jobs", "dlq"):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await nc.jetstream().delete_stream(event_stream_name(prefix, name))
        finally:
            await nc.close()
