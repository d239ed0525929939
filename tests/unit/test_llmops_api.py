"""LLMOps through the real app: gateway calls (mock provider, priced) publish usage events on
the in-process bus, the LLMOps service ingests them in batches, and the API answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from faas.services.llmops_service.service import LlmopsService
from faas.services.llmops_service.stats import percentile
from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme", "ann")
A2 = auth("acme", "bob")
B = auth("globex")
ADMIN = auth("acme", "root", scopes=["admin"])
B_ADMIN = auth("globex", "root", scopes=["admin"])
PLATFORM = auth("ops", "operator", platform_admin=True)
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
WINDOW = {
    "from": (NOW - timedelta(days=3)).isoformat(),
    "to": (NOW + timedelta(hours=2)).isoformat(),
}


@pytest.fixture
async def env(tmp_path: Any, make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "        price: {input_per_1k: 1.0, output_per_1k: 2.0}\n"
    )
    settings = make_settings(gateway_models=routing)
    async with platform(settings, ["gateway", "llmops"]) as env:
        yield env


def llmops(env: Platform) -> LlmopsService:
    service = env.app.state.services["llmops"]
    assert isinstance(service, LlmopsService)
    return service


async def wait_for(env: Platform, headers: dict[str, str], total: int) -> list[dict[str, Any]]:
    for _ in range(100):
        got = await env.client.get("/api/v1/llmops/operations", headers=headers)
        assert got.status_code == 200, got.text
        data = got.json()["data"]
        if data["total"] >= total:
            assert data["total"] == total
            return list(data["items"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {total} operations")


async def chat(env: Platform, headers: dict[str, str], text: str) -> dict[str, Any]:
    response = await env.client.post(
        "/v1/chat/completions",
        json={"model": "chat-default", "messages": [{"role": "user", "content": text}]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    usage: dict[str, Any] = response.json()["usage"]
    return usage


def cost(usage: dict[str, Any]) -> float:
    return float(usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1000


async def test_gateway_calls_become_operations_with_their_cost(env: Platform) -> None:
    usages = [await chat(env, A, f"question number {i} " * (i + 1)) for i in range(3)]
    items = await wait_for(env, A, 3)
    assert {i["source"] for i in items} == {"gateway"}
    assert {i["model"] for i in items} == {"chat-default"}
    assert {i["user_id"] for i in items} == {"ann"}
    assert sorted(i["cost_usd"] for i in items) == pytest.approx(sorted(map(cost, usages)))
    assert sorted(i["total_tokens"] for i in items) == sorted(
        u["prompt_tokens"] + u["completion_tokens"] for u in usages
    )
    metrics = (
        await env.client.get(
            "/api/v1/llmops/metrics", params={**WINDOW, "group_by": "model"}, headers=A
        )
    ).json()["data"]
    totals = metrics["totals"]
    assert totals["count"] == 3 and totals["errors"] == 0 and totals["error_rate"] == 0
    assert totals["cost_usd"] == pytest.approx(sum(map(cost, usages)))
    assert totals["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert totals["latency_p50_ms"] is not None
    assert [s["key"] for s in metrics["series"]] == ["chat-default"]
    # another tenant sees nothing
    assert (await wait_for(env, B, 0)) == []


async def test_duplicate_events_are_counted_once(env: Platform) -> None:
    body = {
        "id": "evt-1",
        "type": "gateway.usage",
        "tenant_id": "acme",
        "occurred_at": NOW.isoformat(),
        "data": {
            "operation": "chat",
            "model": "m1",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "cost_usd": 0.02,
            "latency_ms": 40.0,
            "status": "ok",
            "user_id": "ann",
        },
    }
    payload = orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    for _ in range(2):
        await env.runtime.bus.publish("gateway.usage.acme", payload, headers)
    await wait_for(env, A, 1)
    await env.runtime.bus.publish("gateway.usage.acme", payload, headers)
    await asyncio.sleep(0.05)
    await wait_for(env, A, 1)
    totals = (await env.client.get("/api/v1/llmops/metrics", params=WINDOW, headers=A)).json()[
        "data"
    ]["totals"]
    assert totals["count"] == 1 and totals["total_tokens"] == 15
    assert totals["cost_usd"] == pytest.approx(0.02)


def op(model: str, hours_ago: int, cost_usd: float, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "occurred_at": (NOW - timedelta(hours=hours_ago)).isoformat(),
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "cost_usd": cost_usd,
        "latency_ms": extra.pop("latency_ms", 60.0),
        **extra,
    }


async def seed(env: Platform) -> None:
    ops = [
        op("gpt-a", 0, 0.5, id="o1"),
        op("gpt-a", 0, 0.25, id="o2", status="error", error_code="timeout", latency_ms=900.0),
        op("gpt-b", 1, 1.0, id="o3", operation="embeddings", agent_id="agent-7"),
        op("gpt-b", 30, 2.0, id="o4", metadata={"agent_id": "agent-9"}),
    ]
    created = await env.client.post("/api/v1/llmops/operations", json=ops, headers=A)
    assert created.status_code == 201, created.text
    assert created.json()["data"]["accepted"] == 4
    again = await env.client.post("/api/v1/llmops/operations", json=ops[0], headers=A2)
    assert again.json()["data"] == {"accepted": 0, "duplicates": 1, "ids": ["o1"]}
    other = await env.client.post(
        "/api/v1/llmops/operations", json=op("gpt-z", 0, 9.0, id="o1"), headers=B
    )
    assert other.json()["data"]["accepted"] == 1  # ids are per tenant


async def test_metrics_are_exact(env: Platform) -> None:
    await seed(env)
    by_model = (
        await env.client.get(
            "/api/v1/llmops/metrics", params={**WINDOW, "group_by": "model"}, headers=A
        )
    ).json()["data"]
    assert by_model["totals"]["count"] == 4
    assert by_model["totals"]["errors"] == 1
    assert by_model["totals"]["error_rate"] == 0.25
    assert by_model["totals"]["total_tokens"] == 600
    assert by_model["totals"]["cost_usd"] == pytest.approx(3.75)
    series = {s["key"]: s for s in by_model["series"]}
    assert series["gpt-a"]["count"] == 2 and series["gpt-a"]["cost_usd"] == pytest.approx(0.75)
    assert series["gpt-a"]["error_rate"] == 0.5
    assert series["gpt-a"]["latency_avg_ms"] == pytest.approx(480.0)
    assert series["gpt-b"]["cost_usd"] == pytest.approx(3.0)
    hourly = (
        await env.client.get(
            "/api/v1/llmops/metrics", params={**WINDOW, "group_by": "hour"}, headers=A
        )
    ).json()["data"]
    assert [s["count"] for s in hourly["series"]] == [1, 1, 2]
    daily = (
        await env.client.get(
            "/api/v1/llmops/metrics", params={**WINDOW, "group_by": "day"}, headers=A
        )
    ).json()["data"]
    assert sum(s["count"] for s in daily["series"]) == 4
    only_b = (
        await env.client.get(
            "/api/v1/llmops/metrics", params={**WINDOW, "model": "gpt-b"}, headers=A
        )
    ).json()["data"]["totals"]
    assert only_b["count"] == 2
    listed = (
        await env.client.get("/api/v1/llmops/operations", params={"status": "error"}, headers=A)
    ).json()["data"]
    assert [i["id"] for i in listed["items"]] == ["o2"]
    paged = (
        await env.client.get("/api/v1/llmops/operations", params={"limit": 2}, headers=A)
    ).json()["data"]
    assert paged["total"] == 4 and len(paged["items"]) == 2


async def test_cost_analysis(env: Platform) -> None:
    await seed(env)
    data = (await env.client.get("/api/v1/llmops/cost-analysis", params=WINDOW, headers=A)).json()[
        "data"
    ]
    assert data["total_cost_usd"] == pytest.approx(3.75)
    assert [(i["key"], i["cost_usd"]) for i in data["by_model"]] == [
        ("gpt-b", pytest.approx(3.0)),
        ("gpt-a", pytest.approx(0.75)),
    ]
    ops = {i["key"]: i["cost_usd"] for i in data["by_operation"]}
    assert ops == {"chat": pytest.approx(2.75), "embeddings": pytest.approx(1.0)}
    agents = {i["key"]: i["cost_usd"] for i in data["by_agent"]}
    assert agents == {
        "agent-9": pytest.approx(2.0),
        "agent-7": pytest.approx(1.0),
        "ann": pytest.approx(0.75),
    }
    assert data["by_tenant"] is None
    assert sum(i["cost_usd"] for i in data["trend"]) == pytest.approx(3.75)
    assert len(data["trend"]) in (2, 3)
    platform = (
        await env.client.get("/api/v1/llmops/cost-analysis", params=WINDOW, headers=PLATFORM)
    ).json()["data"]
    tenants = {i["key"]: i["cost_usd"] for i in platform["by_tenant"]}
    assert tenants == {"acme": pytest.approx(3.75), "globex": pytest.approx(9.0)}


async def test_a_tenant_admin_sees_only_its_own_tenant_in_by_tenant(env: Platform) -> None:
    await seed(env)
    for headers, own, cost_usd in ((ADMIN, "acme", 3.75), (B_ADMIN, "globex", 9.0)):
        data = (
            await env.client.get("/api/v1/llmops/cost-analysis", params=WINDOW, headers=headers)
        ).json()["data"]
        assert [(i["key"], i["cost_usd"]) for i in data["by_tenant"]] == [
            (own, pytest.approx(cost_usd))
        ]


async def test_a_tenant_admin_cannot_read_another_tenants_operations(env: Platform) -> None:
    await seed(env)
    acme = {"tenant_id": "acme"}
    listed = await env.client.get("/api/v1/llmops/operations", params=acme, headers=B_ADMIN)
    assert listed.status_code == 200
    assert [i["model"] for i in listed.json()["data"]["items"]] == ["gpt-z"]  # globex's own
    assert {i["tenant_id"] for i in listed.json()["data"]["items"]} == {"globex"}
    metrics = await env.client.get(
        "/api/v1/llmops/metrics", params={**WINDOW, **acme}, headers=B_ADMIN
    )
    assert metrics.json()["data"]["tenant_id"] == "globex"
    assert metrics.json()["data"]["totals"]["count"] == 1
    costs = await env.client.get(
        "/api/v1/llmops/cost-analysis", params={**WINDOW, **acme}, headers=B_ADMIN
    )
    assert costs.json()["data"]["tenant_id"] == "globex"
    assert costs.json()["data"]["total_cost_usd"] == pytest.approx(9.0)
    # the platform admin may name any tenant
    theirs = await env.client.get("/api/v1/llmops/operations", params=acme, headers=PLATFORM)
    assert sorted(i["id"] for i in theirs.json()["data"]["items"]) == ["o1", "o2", "o3", "o4"]
    platform_metrics = await env.client.get(
        "/api/v1/llmops/metrics", params={**WINDOW, **acme}, headers=PLATFORM
    )
    assert platform_metrics.json()["data"]["totals"]["count"] == 4


async def test_tenant_param_is_ignored_without_admin(env: Platform) -> None:
    await seed(env)
    ignored = await env.client.get(
        "/api/v1/llmops/metrics", params={**WINDOW, "tenant_id": "globex"}, headers=A
    )
    assert ignored.status_code == 200
    assert ignored.json()["data"]["tenant_id"] == "acme"
    assert ignored.json()["data"]["totals"]["count"] == 4  # acme's, not globex's one
    listed = await env.client.get(
        "/api/v1/llmops/operations", params={"tenant_id": "globex"}, headers=A
    )
    assert "gpt-z" not in [i["model"] for i in listed.json()["data"]["items"]]
    costs = await env.client.get(
        "/api/v1/llmops/cost-analysis", params={**WINDOW, "tenant_id": "globex"}, headers=A
    )
    assert costs.json()["data"]["total_cost_usd"] == pytest.approx(3.75)
    own = await env.client.get(
        "/api/v1/llmops/metrics", params={**WINDOW, "tenant_id": "acme"}, headers=A
    )
    assert own.status_code == 200
    theirs = await env.client.get(
        "/api/v1/llmops/operations", params={"tenant_id": "globex"}, headers=PLATFORM
    )
    assert theirs.status_code == 200
    assert [i["model"] for i in theirs.json()["data"]["items"]] == ["gpt-z"]
    globex = (await env.client.get("/api/v1/llmops/metrics", params=WINDOW, headers=B)).json()[
        "data"
    ]["totals"]
    assert globex["count"] == 1 and globex["cost_usd"] == pytest.approx(9.0)
    assert (await env.client.get("/api/v1/llmops/metrics")).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"prompt_tokens": 1},  # no model
        {"model": "m", "prompt_tokens": -1},
        {"model": "m", "cost_usd": -0.5},
        {"model": "m", "status": "weird"},
        {"model": "m", "occurred_at": "2026-01-01T00:00:00"},  # naive
        {"model": "m", "unknown": 1},
        [],
    ],
)
async def test_post_operations_validation(env: Platform, body: Any) -> None:
    response = await env.client.post("/api/v1/llmops/operations", json=body, headers=A)
    assert response.status_code == 422, response.text


async def test_bad_ranges_and_retention(env: Platform) -> None:
    bad = await env.client.get(
        "/api/v1/llmops/metrics",
        params={"from": WINDOW["to"], "to": WINDOW["from"]},
        headers=A,
    )
    assert bad.status_code == 422
    huge = await env.client.get(
        "/api/v1/llmops/metrics",
        params={"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=A,
    )
    assert huge.status_code == 422
    old = op("gpt-a", 24 * 200, 1.0, id="old")
    await env.client.post("/api/v1/llmops/operations", json=[old, op("gpt-a", 0, 1.0)], headers=A)
    assert await llmops(env).purge() == 1
    assert len(await wait_for(env, A, 1)) == 1


async def test_dashboard_page_is_self_contained(env: Platform) -> None:
    page = await env.client.get("/llmops/dashboard", headers=A)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/api/v1/llmops/metrics" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page.text


def test_percentile_interpolates_inside_buckets() -> None:
    assert percentile([0] * 19, 0.5) is None
    counts = [0] * 19
    counts[3] = 10  # (25, 50] ms
    assert percentile(counts, 0.5) == pytest.approx(37.5)
    counts[18] = 10
    assert percentile(counts, 0.99) == 30000.0
