"""The dashboard's alerts panel on a real `faas up`: a gateway call crosses a tenant's soft
budget, the gateway publishes the alert, LLMOps stores it, and headless Chromium shows it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_faas_up import faas, free_port
from tests.e2e.test_llmops_dashboard import DASHBOARD, chromium, llmops_env, serving

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = llmops_env(tmp_path, FAAS_ALERT_INTERVAL_S="0.2")
    with serving(env, free_port()) as url:
        yield url, env


def test_the_dashboard_shows_a_budget_alert(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    browser = chromium()
    url, env = server
    token = faas("token", "--tenant", "acme", "--user", "ann", env=env)
    operator = faas("token", "--tenant", "ops", "--platform-admin", env=env)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=20) as http:
        limits = {"daily_budget_usd": 1.0, "alert_thresholds": [0.001]}
        response = http.put(
            "/api/v1/gateway/limits/acme",
            json=limits,
            headers={"Authorization": f"Bearer {operator}"},
        )
        assert response.status_code == 200, response.text
        chat = http.post(
            "/v1/chat/completions",
            json={"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )
        assert chat.status_code == 200, chat.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alerts = http.get("/api/v1/llmops/alerts", headers=headers).json()["data"]
            if alerts:
                break
            time.sleep(0.2)
        assert [a["kind"] for a in alerts] == ["budget_threshold"]
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=8000",
    ]
    page = f"{url}{DASHBOARD}?token={token}"
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=90
    ).stdout
    assert 'data-loaded="true"' in dom, dom[-2000:]
    assert dom.count('class="alert" data-alert-kind="budget_threshold"') == 1
    assert "daily budget 0.1% reached" in dom and "<td>daily 0.1%</td>" in dom
