"""Gateway alerts: budget thresholds, spend anomalies on a deterministic clock, and the signed,
SSRF-safe alert webhook (a real receiver on a socket)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from faas.backends.kv.memory import MemoryKeyValueStore
from faas.backends.limits.memory import MemoryLimitStore
from faas.integrations.bus import Message
from faas.integrations.bus.memory import InProcessBus
from faas.integrations.codec import JsonCodec
from faas.integrations.events import EventPublisher
from faas.services.gateway_service.alerts import (
    AlertMonitor,
    AnomalyRule,
    detect_anomaly,
)
from faas.services.gateway_service.alerts_webhook import (
    SIGNATURE_HEADER,
    AlertWebhook,
    sign,
    verify_signature,
)
from faas.services.gateway_service.limits import TenantLimits
from faas.shared.pinned_fetch import Allowlist
from tests.support.served import served

T0 = 1_796_000_000.0 - 1_796_000_000.0 % 86400 + 6 * 3600  # 06:00 UTC on a day
RULE = AnomalyRule(window_min=5, factor=3.0, floor_usd=1.0)
SECRET = b"whsec-test-0123456789"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    clock: Clock
    monitor: AlertMonitor
    store: MemoryLimitStore
    events: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = Clock()
    bus = InProcessBus()
    await bus.start()
    store = MemoryLimitStore(clock)
    caps = TenantLimits(
        daily_budget_usd=10.0, monthly_budget_usd=100.0, alert_thresholds=[0.5, 0.8]
    )

    async def limits_of(tenant: str) -> TenantLimits:
        return caps if tenant.startswith("acme") else TenantLimits()

    monitor = AlertMonitor(
        limits=store,
        limits_of=limits_of,
        kv=MemoryKeyValueStore(),
        events=EventPublisher(bus, JsonCodec()),
        rule=RULE,
        interval_s=3600,
        clock=clock,
    )
    found = Harness(clock, monitor, store)

    async def collect(message: Message) -> None:
        found.events.append(orjson.loads(message.data))

    await bus.subscribe("gateway.alert.>", collect)
    yield found
    await bus.close()


async def spend(h: Harness, tenant: str, usd: float) -> None:
    """A call reserved and reconciled at `usd`, as the gateway's admission does."""
    caps = await h.monitor.limits_of(tenant)
    reservation = await h.store.reserve(tenant, caps, 10, usd)
    await h.store.reconcile(reservation, 10, usd)
    h.monitor.note(tenant, usd)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- anomaly detection on a synthetic spend series ---------------------------------------------


def test_a_steady_spend_is_no_anomaly() -> None:
    buckets = {m: 0.5 for m in range(0, 70)}
    assert detect_anomaly(buckets, 69, RULE) is None


def test_recent_spend_over_factor_times_the_trailing_hour_is_an_anomaly() -> None:
    buckets = {m: 0.1 for m in range(0, 65)} | {m: 1.0 for m in range(65, 70)}
    alert = detect_anomaly(buckets, 69, RULE)
    assert alert is not None and alert.kind == "spend_anomaly"
    assert alert.spent == pytest.approx(5.0)
    assert alert.baseline == pytest.approx(0.1)
    assert alert.limit == pytest.approx(1.5)  # 3 x 0.1 USD/min x 5 min
    assert alert.window == "1970-01-01T01:05Z"


def test_a_spike_under_the_floor_is_no_anomaly() -> None:
    buckets = {m: 0.001 for m in range(0, 65)} | {m: 0.1 for m in range(65, 70)}
    assert detect_anomaly(buckets, 69, RULE) is None  # 0.5 USD < the 1 USD floor


def test_spend_just_at_the_factor_is_no_anomaly() -> None:
    buckets = {m: 0.5 for m in range(0, 65)} | {m: 1.5 for m in range(65, 70)}
    assert detect_anomaly(buckets, 69, RULE) is None  # exactly 3x is not over it


async def test_the_monitor_publishes_one_anomaly_per_window_after_its_warm_up(
    harness: Harness,
) -> None:
    tenant = "spiky"  # no budget: only anomalies apply
    for minute in range(62):  # a steady hour: 0.05 USD a minute
        harness.clock.now = T0 + minute * 60 + 1
        await spend(harness, tenant, 0.05)
        assert await harness.monitor.check() == []
    for minute in (62, 63):  # then a burst, 2 USD a minute
        harness.clock.now = T0 + minute * 60 + 1
        await spend(harness, tenant, 2.0)
    # Before the monitor has watched a full hour and a window, nothing is judged.
    assert await harness.monitor.check() == []
    harness.clock.now = T0 + 65 * 60 + 30
    published = await harness.monitor.check()
    assert [a.kind for a in published] == ["spend_anomaly"]
    assert published[0].spent == pytest.approx(4.0 + 0.05)  # minutes 61 to 65
    assert published[0].baseline == pytest.approx(0.05)
    assert await harness.monitor.check() == []  # the same window is published once
    await settle()
    anomalies = [e for e in harness.events if e["data"]["kind"] == "spend_anomaly"]
    assert len(anomalies) == 1 and anomalies[0]["tenant_id"] == tenant
    assert anomalies[0]["type"] == "gateway.alert"


# -- budget thresholds -------------------------------------------------------------------------


async def test_each_threshold_of_a_budget_is_published_once_per_window(harness: Harness) -> None:
    tenant = "acme"
    await spend(harness, tenant, 4.0)
    assert await harness.monitor.check() == []
    await spend(harness, tenant, 1.5)  # 5.5 of 10: the 50% threshold
    first = await harness.monitor.check()
    assert [(a.budget, a.threshold) for a in first] == [("daily", 0.5)]
    assert first[0].spent == pytest.approx(5.5) and first[0].limit == 10.0
    await spend(harness, tenant, 3.0)  # 8.5 of 10: 80% now, 50% already told
    second = await harness.monitor.check()
    assert [(a.budget, a.threshold) for a in second] == [("daily", 0.8)]
    harness.clock.now += 86400  # the next day: a new daily window, the month still far off
    await spend(harness, tenant, 6.0)
    # (A day on, 6 USD after a quiet hour is also a spend anomaly: only budgets are looked at.)
    third = [a for a in await harness.monitor.check() if a.kind == "budget_threshold"]
    assert [(a.budget, a.threshold, a.window) for a in third] == [
        ("daily", 0.5, time.strftime("%Y%m%d", time.gmtime(harness.clock.now)))
    ]
    await settle()
    assert sum(e["data"]["kind"] == "budget_threshold" for e in harness.events) == 3


async def test_a_tenant_that_spent_nothing_is_not_checked(harness: Harness) -> None:
    caps = await harness.monitor.limits_of("acme-quiet")
    reservation = await harness.store.reserve("acme-quiet", caps, 10, 9.0)
    await harness.store.reconcile(reservation, 10, 9.0)  # spent elsewhere, never noted here
    assert await harness.monitor.check() == []


# -- the webhook -------------------------------------------------------------------------------


@dataclass
class Receiver:
    answers: list[int] = field(default_factory=list)
    received: list[tuple[bytes, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.received.append((await request.body(), request.headers.get(SIGNATURE_HEADER, "")))
            status = self.answers.pop(0) if self.answers else 204
            return Response(status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def webhook(
    url: str, *, allowlist: Allowlist, attempts: int = 3
) -> tuple[AlertWebhook, list[float]]:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    hook = AlertWebhook(
        url, SECRET, allowlist=allowlist, timeout_s=5, attempts=attempts, base_s=0.5, sleep=sleep
    )
    return hook, delays


PAYLOAD = {"id": "evt-1", "type": "gateway.alert", "tenant_id": "acme", "data": {"kind": "x"}}


def test_a_signature_verifies_only_over_the_same_body_secret_and_recent_time() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, 1000, body)
    assert verify_signature(SECRET, header, body, now=1100)
    assert not verify_signature(SECRET, header, b'{"a":2}', now=1100)
    assert not verify_signature(b"other", header, body, now=1100)
    assert not verify_signature(SECRET, header, body, now=1000 + 301)
    assert not verify_signature(SECRET, "t=x,v1=00", body, now=1000)


async def test_the_webhook_posts_a_signed_alert_a_receiver_verifies() -> None:
    receiver = Receiver()
    async with served(receiver.app()) as base:
        hook, _ = webhook(f"{base}/hook", allowlist=Allowlist.parse(["127.0.0.1"]))
        assert await hook.deliver(PAYLOAD)
    [(body, header)] = receiver.received
    assert orjson.loads(body) == PAYLOAD
    assert verify_signature(SECRET, header, body, now=time.time())


async def test_the_webhook_retries_server_errors_with_backoff() -> None:
    receiver = Receiver(answers=[503, 500])
    async with served(receiver.app()) as base:
        hook, delays = webhook(f"{base}/hook", allowlist=Allowlist.parse(["127.0.0.1"]))
        assert await hook.deliver(PAYLOAD)
    assert len(receiver.received) == 3 and len(delays) == 2
    assert 0 <= delays[0] <= 0.5 and 0 <= delays[1] <= 1.0


async def test_the_webhook_gives_up_on_a_client_error_and_after_its_attempts() -> None:
    receiver = Receiver(answers=[400, 500, 500, 500])
    async with served(receiver.app()) as base:
        hook, _ = webhook(f"{base}/hook", allowlist=Allowlist.parse(["127.0.0.1"]))
        assert not await hook.deliver(PAYLOAD)  # 400: final
        assert not await hook.deliver(PAYLOAD)  # 500 three times
    assert len(receiver.received) == 4 and hook.failed == 2


async def test_the_webhook_refuses_a_private_address_not_allowlisted() -> None:
    receiver = Receiver()
    async with served(receiver.app()) as base:
        hook, delays = webhook(f"{base}/hook", allowlist=Allowlist())
        assert not await hook.deliver(PAYLOAD)
        metadata, _ = webhook("http://169.254.169.254/latest", allowlist=Allowlist())
        assert not await metadata.deliver(PAYLOAD)
    assert receiver.received == [] and delays == []  # refused once, never retried


async def test_a_published_alert_reaches_the_webhook_off_the_check(harness: Harness) -> None:
    receiver = Receiver()
    async with served(receiver.app()) as base:
        hook, _ = webhook(f"{base}/hook", allowlist=Allowlist.parse(["127.0.0.1"]))
        harness.monitor.webhook = hook
        harness.monitor.start()
        try:
            await spend(harness, "acme", 6.0)
            assert len(await harness.monitor.check()) == 1
            for _ in range(200):
                if receiver.received:
                    break
                await asyncio.sleep(0.01)
        finally:
            await harness.monitor.stop()
    [(body, header)] = receiver.received
    payload = orjson.loads(body)
    assert payload["type"] == "gateway.alert" and payload["tenant_id"] == "acme"
    assert payload["data"]["kind"] == "budget_threshold" and payload["data"]["threshold"] == 0.5
    assert verify_signature(SECRET, header, body, now=time.time())
