"""The gateway's usage metrics (calls and cost tallied and observed at collection, tokens as a
histogram) and the limit windows built once a minute."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Sum

from faas.backends.limits import MemoryLimitStore, Windows
from faas.services.gateway_service.accounting import CallRecord, UsageMetrics
from faas.services.gateway_service.providers.base import Usage
from faas.services.gateway_service.routing_table import Deployment, Price
from faas.shared.exceptions import RateLimited

PRICED = Deployment(provider="mock", model="m", price=Price(input_per_1k=1.0, output_per_1k=2.0))


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                assert isinstance(metric.data, Sum | Histogram)
                found[metric.name] = [
                    (dict(p.attributes or {}), p) for p in metric.data.data_points
                ]
    return found


def call(status: str = "ok", *, cached: bool = False, usage: Usage | None = None) -> CallRecord:
    record = CallRecord("chat", model="chat-default", deployment=PRICED)
    record.status = status  # type: ignore[assignment]
    record.cached = "exact" if cached else False
    record.usage = usage
    return record


def test_calls_cost_and_tokens_are_exported_per_tenant_model_and_status() -> None:
    reader = InMemoryMetricReader()
    usage_metrics = UsageMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"))
    used = Usage(prompt_tokens=1000, completion_tokens=500)
    usage_metrics.add("acme", call(usage=used))
    usage_metrics.add("acme", call(usage=used))
    usage_metrics.add("acme", call("error"))
    usage_metrics.add("acme", call(cached=True, usage=used))  # a cache hit costs nothing
    usage_metrics.add("globex", call(usage=used))

    got = points(reader)
    calls = {(a["faas.tenant"], a["faas.status"]): p.value for a, p in got["faas.gateway.calls"]}
    assert calls == {("acme", "ok"): 3, ("acme", "error"): 1, ("globex", "ok"): 1}
    cost = {a["faas.tenant"]: p.value for a, p in got["faas.gateway.cost"]}
    assert cost == {"acme": pytest.approx(4.0), "globex": pytest.approx(2.0)}
    tokens = {
        (a["faas.tenant"], a["gen_ai.token.type"]): (p.count, p.sum)
        for a, p in got["gen_ai.client.token.usage"]
    }
    assert tokens == {
        ("acme", "input"): (2, 2000),
        ("acme", "output"): (2, 1000),
        ("globex", "input"): (1, 1000),
        ("globex", "output"): (1, 500),
    }
    assert all(a["gen_ai.request.model"] == "chat-default" for a, _ in got["faas.gateway.calls"])


def test_the_windows_of_a_minute_are_built_once_and_roll_over() -> None:
    start = 1_767_225_540.0  # 2025-12-31 23:59:00 UTC
    first = Windows.at(start + 1)
    assert Windows.at(start + 59.9) is first
    assert (first.minute, first.day, first.month) == (str(int(start)), "20251231", "202512")
    assert first.minute_end == start + 60
    assert first.day_end == first.month_end == start + 60  # midnight, new year
    after = Windows.at(start + 60)
    assert (after.minute, after.day, after.month) == (str(int(start) + 60), "20260101", "202601")
    assert after.day_end == start + 60 + 86400


async def test_a_refusal_says_when_its_window_rolls_over() -> None:
    now = [1_767_225_540.0 + 45]  # 15 s before the minute ends
    store = MemoryLimitStore(clock=lambda: now[0])

    class Caps:
        rpm, tpm, daily_budget_usd, monthly_budget_usd = 1, None, None, None

    await store.reserve("acme", Caps(), 0, 0.0)
    now[0] += 5
    with pytest.raises(RateLimited) as refused:
        await store.reserve("acme", Caps(), 0, 0.0)
    assert refused.value.retry_after_s == pytest.approx(10.0)
    assert refused.value.details == {"level": "tenant", "limit": "rpm"}
