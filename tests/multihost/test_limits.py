"""A tenant's rate limit and budget hold across both replicas: the counters live in Redis, so
the N+1-th request is refused whichever replica takes it."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from tests.multihost.client import token
from tests.multihost.cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

CHAT = "/v1/chat/completions"
# The svc host's upstream bills 400 output tokens per call at 0.1 USD/1k: 0.04 USD a call.
REPORTED = {"prompt_tokens": 5, "completion_tokens": 400, "total_tokens": 405}


def set_limits(cluster: Cluster, tenant: str, limits: dict[str, float]) -> None:
    url = f"{cluster.url('app1', 'gateway')}/api/v1/gateway/limits/{tenant}"
    saved = cluster.http.put(url, json=limits, headers=token("ops", platform_admin=True))
    assert saved.status_code == 200, saved.text


def calls(cluster: Cluster, tenant: str, replicas: list[str], model: str) -> list[int]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    headers = token(tenant)
    codes = []
    for replica in replicas:
        answer = cluster.http.post(
            cluster.url(replica, "gateway") + CHAT, json=body, headers=headers
        )
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "rate_limited", answer.text
        codes.append(answer.status_code)
    return codes


def used(cluster: Cluster, replica: str, tenant: str) -> dict[str, float]:
    url = f"{cluster.url(replica, 'gateway')}/api/v1/gateway/rate-limits"
    answer = cluster.http.get(url, headers=token(tenant))
    assert answer.status_code == 200, answer.text
    values: dict[str, float] = answer.json()["data"]["used"]
    return values


def away_from_a_minute_boundary() -> None:
    """rpm counts per clock minute: a burst must not straddle two."""
    second = datetime.now(UTC).second
    if second >= 50:
        time.sleep(61 - second)


@pytest.mark.parametrize(
    ("rpm", "refused_on"), [(4, "app1"), (3, "app2")], ids=["refused-on-app1", "refused-on-app2"]
)
def test_the_rpm_limit_holds_across_replicas(cluster: Cluster, rpm: int, refused_on: str) -> None:
    tenant = f"rpm-{uuid.uuid4().hex[:8]}"
    set_limits(cluster, tenant, {"rpm": rpm})
    away_from_a_minute_boundary()
    replicas = ["app1", "app2"] * 3
    codes = calls(cluster, tenant, replicas[: rpm + 2], "chat-default")
    assert codes == [200] * rpm + [429, 429]
    assert replicas[rpm] == refused_on
    for replica in ("app1", "app2"):
        assert used(cluster, replica, tenant)["requests_this_minute"] == rpm
    cluster.record(
        f"limits: rpm={rpm} over app1/app2 alternately: {codes} (first refusal on {refused_on})"
    )


def test_the_daily_budget_holds_across_replicas(cluster: Cluster) -> None:
    tenant = f"budget-{uuid.uuid4().hex[:8]}"
    control = cluster.http.post(f"{cluster.upstream}/_control", json={"usage": REPORTED})
    assert control.status_code == 200, control.text
    set_limits(cluster, tenant, {"daily_budget_usd": 0.1})
    codes = calls(cluster, tenant, ["app1", "app2", "app1", "app2"], "metered")
    assert codes == [200, 200, 429, 429]
    for replica in ("app1", "app2"):
        assert used(cluster, replica, tenant)["usd_today"] == pytest.approx(0.08, abs=1e-6)
    cluster.record(f"limits: daily budget 0.10 USD at 0.04 USD a call over app1/app2: {codes}")
