"""Budget and rate-limit scenarios under concurrency, run against each limit store (memory in
tests/unit/test_gateway_budgets.py, Redis in tests/integration/test_gateway_budget_redis.py).

The upstream reports more completion tokens (400) than the gateway's default estimate (256):
admission must reserve the worst case (the request's max_tokens, else the model's max output)
for spend to stay within the budget whatever mix of calls runs at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from faas.services.gateway_service.limits import TenantLimits
from faas.shared.config import Settings
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import MockUpstream

CHAT = "/v1/chat/completions"
PRICE = {"input_per_1k": 0.01, "output_per_1k": 0.1}
MAX_OUTPUT = 500
REPORTED = {"prompt_tokens": 5, "completion_tokens": 400, "total_tokens": 405}
CALL_COST = (5 * 0.01 + 400 * 0.1) / 1000  # what one call really costs: 0.04005 USD
# Inside one minute, day and month, far from their edges: the windows never turn mid-test.
NOW = datetime(2026, 12, 15, 12, 0, 20, tzinfo=UTC).timestamp()


class ManualClock:
    """The limit store's time, moved by the test alone."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


@asynccontextmanager
async def budget_env(
    settings: Settings, clock: ManualClock | None = None
) -> AsyncIterator[tuple[GatewayEnv, MockUpstream]]:
    async with MockUpstream(usage=REPORTED) as up:
        deployment = {
            "provider": "openai",
            "model": "mock-model",
            "api_base": up.url,
            "api_key": "sk-up",
            "timeout_s": 10,
            "price": PRICE,
            "max_output_tokens": MAX_OUTPUT,
        }
        table = routing({"name": "chat", "deployments": [deployment]})
        async with gateway_env(settings, table, clock=clock or ManualClock()) as env:
            yield env, up


def mixed_call(index: int) -> dict[str, Any]:
    """Streamed or not, with or without max_tokens (450 still covers what is reported)."""
    body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    if index % 2:
        body["stream"] = True
    if index % 4 >= 2:
        body["max_tokens"] = 450
    return body


async def burst(env: GatewayEnv, tenant_id: str, count: int = 64) -> list[httpx.Response]:
    headers = auth(tenant_id)
    return await asyncio.gather(
        *(env.client.post(CHAT, json=mixed_call(i), headers=headers) for i in range(count))
    )


async def used(env: GatewayEnv, tenant_id: str) -> dict[str, float]:
    response = await env.client.get("/api/v1/gateway/rate-limits", headers=auth(tenant_id))
    assert response.status_code == 200, response.text
    values: dict[str, float] = response.json()["data"]["used"]
    return values


def refused_for(responses: list[httpx.Response], limit: str) -> int:
    """How many were refused with 429, each for `limit` (e.g. `daily_budget`, `rpm`)."""
    refused = [orjson.loads(r.content)["error"] for r in responses if r.status_code == 429]
    assert all(e["code"] == "rate_limited" for e in refused)
    assert all(limit.replace("_", " ") in e["message"] for e in refused)
    return len(refused)


def statuses(responses: list[httpx.Response]) -> set[int]:
    return {r.status_code for r in responses}


async def spend_stays_within_budget(env: GatewayEnv, budget: str) -> None:
    tenant_id = tenant()
    await env.service.tenant_limits.set(tenant_id, TenantLimits(**{budget: 0.25}), by="test")
    first = await burst(env, tenant_id)
    second = await burst(env, tenant_id)  # after the first has settled: fills what is left
    responses = first + second
    assert statuses(responses) == {200, 429}
    served = sum(r.status_code == 200 for r in responses)
    key = "usd_today" if budget == "daily_budget_usd" else "usd_this_month"
    spent = (await used(env, tenant_id))[key]
    assert spent <= 0.25
    assert abs(spent - served * CALL_COST) <= served * 1e-6  # counted in whole micro-USD
    assert refused_for(responses, budget.removesuffix("_usd")) > 0


async def overspend_is_seen_by_the_next_admission(env: GatewayEnv, up: MockUpstream) -> None:
    tenant_id = tenant()
    await env.service.tenant_limits.set(tenant_id, TenantLimits(daily_budget_usd=0.045), by="test")
    # The caller asks for at most 100 tokens (0.01 USD reserved), the upstream bills 400.
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}
    assert (await env.client.post(CHAT, json=body, headers=auth(tenant_id))).status_code == 200
    assert abs((await used(env, tenant_id))["usd_today"] - CALL_COST) <= 1e-6
    refused = await env.client.post(CHAT, json=body, headers=auth(tenant_id))
    assert refused_for([refused], "daily_budget") == 1
    assert up.stats.requests == 1


async def rpm_holds_under_concurrency(env: GatewayEnv) -> None:
    tenant_id = tenant()
    await env.service.tenant_limits.set(tenant_id, TenantLimits(rpm=5), by="test")
    responses = await burst(env, tenant_id)
    assert sum(r.status_code == 200 for r in responses) == 5
    assert refused_for(responses, "rpm") == 59
    assert (await used(env, tenant_id))["requests_this_minute"] == 5


async def tpm_holds_under_concurrency(env: GatewayEnv) -> None:
    tenant_id = tenant()
    await env.service.tenant_limits.set(tenant_id, TenantLimits(tpm=2000), by="test")
    responses = await burst(env, tenant_id)
    served = sum(r.status_code == 200 for r in responses)
    assert statuses(responses) == {200, 429}
    assert refused_for(responses, "tpm") > 0
    tokens = (await used(env, tenant_id))["tokens_this_minute"]
    assert tokens <= 2000
    assert tokens == served * REPORTED["total_tokens"]


async def minute_windows_follow_the_injected_clock(env: GatewayEnv, clock: ManualClock) -> None:
    tenant_id = tenant()
    await env.service.tenant_limits.set(tenant_id, TenantLimits(rpm=2), by="test")
    body = mixed_call(0)
    for _ in range(2):
        assert (await env.client.post(CHAT, json=body, headers=auth(tenant_id))).status_code == 200
    refused = await env.client.post(CHAT, json=body, headers=auth(tenant_id))
    assert refused_for([refused], "rpm") == 1
    assert int(refused.headers["retry-after"]) == 40  # NOW is 20 s into its minute
    clock.now += 39.5
    assert (await env.client.post(CHAT, json=body, headers=auth(tenant_id))).status_code == 429
    clock.now += 0.5  # the next minute
    assert (await env.client.post(CHAT, json=body, headers=auth(tenant_id))).status_code == 200
