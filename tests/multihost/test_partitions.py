"""Hosts cut off and restored: usage published while app2 could not reach NATS still reaches
LLMOps exactly once, and a caller of a cut-off service host answers 503 at once (its breaker
is open) until the host is back."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter

import pytest

from tests.multihost.client import token, wait_for
from tests.multihost.cluster import AGENT_CLIENT, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

CHAT = "/v1/chat/completions"
# A duplicate delivery would come within one ack-wait (FAAS_JOB_ACK_WAIT_S) of the original.
DUPLICATE_WINDOW_S = 3.0


def chat(cluster: Cluster, replica: str, tenant: str) -> str:
    """One gateway call; its request id (which LLMOps records with the operation)."""
    body = {"model": "chat-default", "messages": [{"role": "user", "content": "hello"}]}
    url = cluster.url(replica, "gateway") + CHAT
    answer = cluster.http.post(url, json=body, headers=token(tenant))
    assert answer.status_code == 200, answer.text
    return answer.headers["x-request-id"]


def recorded(cluster: Cluster, tenant: str) -> Counter[str]:
    """Request ids of the tenant's operations in LLMOps, with how often each was recorded."""
    url = f"{cluster.url('infra', 'llmops')}/api/v1/llmops/operations"
    page = cluster.http.get(url, params={"limit": 200}, headers=token(tenant))
    assert page.status_code == 200, page.text
    return Counter(op["request_id"] for op in page.json()["data"]["items"])


def nats_check(cluster: Cluster, replica: str) -> str:
    ready = cluster.http.get(f"{cluster.url(replica, 'gateway')}/readyz").json()
    return str(ready["checks"]["nats"])


def test_usage_from_both_replicas_reaches_llmops_once_across_a_nats_cut(
    cluster: Cluster,
) -> None:
    tenant = f"usage-{uuid.uuid4().hex[:8]}"
    sent = [chat(cluster, replica, tenant) for replica in ("app1", "app2") * 3]
    wait_for("the calls in LLMOps", lambda: set(recorded(cluster, tenant)) >= set(sent), 30)
    app2 = cluster["app2"]
    nats = cluster.nats_address
    # app2 loses its route to NATS (PostgreSQL and Redis, on infra's other address, stay
    # reachable, and so does app2 itself through the edge). A silent cut is noticed only when
    # the NATS client's pings go unanswered (minutes): closing app2's NATS connection stands
    # for that, so the test takes seconds.
    app2.ip("route", "add", "blackhole", f"{nats}/32")
    try:
        subprocess.run([*app2.enter(), "ss", "-K", "dst", nats], capture_output=True)
        wait_for("app2 to see NATS down", lambda: nats_check(cluster, "app2") == "down", 30)
        during_cut = [chat(cluster, "app2", tenant) for _ in range(3)]
        time.sleep(DUPLICATE_WINDOW_S)  # time enough for them to arrive, were they sent
        assert not set(recorded(cluster, tenant)) & set(during_cut), "sent while cut off?"
    finally:
        app2.ip("route", "del", "blackhole", f"{nats}/32")
    restored = time.monotonic()
    everything = sent + during_cut
    wait_for(
        "every call in LLMOps",
        lambda: set(recorded(cluster, tenant)) >= set(everything),
        60,
        cluster.log("infra-llmops"),
    )
    delivered_s = time.monotonic() - restored
    time.sleep(DUPLICATE_WINDOW_S)  # absence cannot be polled for
    counts = recorded(cluster, tenant)
    assert counts == Counter({request_id: 1 for request_id in everything}), counts
    assert nats_check(cluster, "app2") == "ok"
    cluster.record(
        f"llmops: {len(sent)} calls over app1/app2 + {len(during_cut)} on app2 while NATS was "
        f"cut: {len(counts)} operations, each once; the buffered ones landed "
        f"{delivered_s:.1f} s after the route came back"
    )


def agent_chat(cluster: Cluster, url: str, headers: dict[str, str]) -> tuple[int, float, str]:
    started = time.monotonic()
    answer = cluster.http.post(url, json={"message": "hello"}, headers=headers)
    code = answer.json().get("error", {}).get("code", "") if answer.status_code >= 400 else ""
    return answer.status_code, time.monotonic() - started, code


def test_a_cut_off_service_host_makes_callers_fail_fast_and_recover(cluster: Cluster) -> None:
    headers = token(f"breaker-{uuid.uuid4().hex[:8]}")
    agents = cluster.url("app1", "agent")
    created = cluster.http.post(f"{agents}/api/v1/agents", json={"name": "b"}, headers=headers)
    assert created.status_code == 201, created.text
    url = f"{agents}/api/v1/agents/{created.json()['data']['id']}/chat"
    assert agent_chat(cluster, url, headers)[0] == 200  # the prompt service on svc renders
    timeout_s = float(AGENT_CLIENT["FAAS_CLIENT_TIMEOUT_S"])
    failures = int(AGENT_CLIENT["FAAS_BREAKER_FAILURES"])
    cluster["svc"].cut()
    try:
        tripping = [agent_chat(cluster, url, headers) for _ in range(failures)]
        fast = [agent_chat(cluster, url, headers) for _ in range(5)]
    finally:
        cluster["svc"].plug()
    assert all(code >= 500 and took >= timeout_s * 0.9 for code, took, _ in tripping), tripping
    assert all(code == 503 and took < timeout_s / 2 for code, took, _ in fast), fast
    plugged = time.monotonic()
    wait_for("the agent to recover", lambda: agent_chat(cluster, url, headers)[0] == 200, 30)
    recovered_s = time.monotonic() - plugged
    slow_ms = ", ".join(f"{took * 1000:.0f}" for _, took, _ in tripping)
    fast_ms = ", ".join(f"{took * 1000:.0f}" for _, took, _ in fast)
    cluster.record(
        f"breaker: svc cut: {failures} calls timed out ({slow_ms} ms, client timeout "
        f"{timeout_s:.0f} s), then 503 {fast[0][2]} in {fast_ms} ms; answered again "
        f"{recovered_s:.1f} s after svc came back (cooldown "
        f"{AGENT_CLIENT['FAAS_BREAKER_COOLDOWN_S']} s)"
    )
