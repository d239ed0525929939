"""The LLMOps dashboard of a real `faas up` process, rendered by headless Chromium: the page
fetches the metrics API with the token from `?token=` and draws its charts as inline SVG."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_faas_up import faas, faas_env, free_port, stop, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DASHBOARD = "/llmops/dashboard"


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    message = "Chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("FAAS_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def llmops_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """`faas up` with the gateway and LLMOps, the priced mock model as `chat-default`."""
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "        price: {input_per_1k: 1.0, output_per_1k: 2.0}\n"
    )
    return faas_env(tmp_path / "data") | {
        "FAAS_SERVICES": "gateway,llmops",
        "FAAS_GATEWAY_MODELS": str(routing),
        **extra,
    }


@contextmanager
def serving(env: dict[str, str], port: int) -> Iterator[str]:
    """`faas up` on `port` with `env`, ready; stopped cleanly at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "faas", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        assert stop(proc) == 0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = llmops_env(tmp_path)
    with serving(env, free_port()) as url:
        yield url, env


def seed(url: str, headers: dict[str, str]) -> None:
    now = datetime.now(UTC)
    ops = [
        {
            "model": model,
            "occurred_at": (now - timedelta(hours=h)).isoformat(),
            "prompt_tokens": 100 * (h + 1),
            "completion_tokens": 40,
            "cost_usd": 0.01 * (h + 1),
            "latency_ms": 80.0 + 40 * h,
            "status": "error" if h == 2 else "ok",
        }
        for h in range(6)
        for model in ("gpt-alpha", "gpt-beta")
    ]
    with httpx.Client(base_url=url, timeout=20) as http:
        created = http.post("/api/v1/llmops/operations", json=ops, headers=headers)
        assert created.status_code == 201, created.text
        chat = http.post(
            "/v1/chat/completions",
            json={"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )
        assert chat.status_code == 200, chat.text


def test_dashboard_renders_charts_with_data(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    browser = chromium()
    url, env = server
    token = faas("token", "--tenant", "acme", "--user", "ann", env=env)
    headers = {"Authorization": f"Bearer {token}"}
    seed(url, headers)
    page = f"{url}{DASHBOARD}?token={token}"
    # A browser following the link sends no Authorization header: the page must be public.
    assert httpx.get(page, timeout=10).status_code == 200
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=8000",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=90
    ).stdout
    shot = tmp_path / "llmops-dashboard.png"
    subprocess.run(
        [browser, *flags, "--window-size=1280,1400", f"--screenshot={shot}", page],
        capture_output=True,
        timeout=90,
    )
    print(f"dashboard screenshot: {shot}")
    assert 'data-loaded="true"' in dom, dom[-2000:]
    assert dom.count("<svg") >= 5
    assert dom.count('class="point"') >= 6
    assert 'data-series="cost"' in dom and 'data-series="p95"' in dom
    assert 'data-label="gpt-alpha"' in dom and 'data-label="gpt-beta"' in dom
    assert 'data-label="chat-default"' in dom
    assert 'data-kpi="calls"><b>13</b>' in dom
    assert 'class="usage-group" data-group=""' in dom  # spend by API key: none used here
    assert shot.exists() and shot.stat().st_size > 1000
