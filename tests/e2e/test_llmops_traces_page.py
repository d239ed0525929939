"""A real `faas up` process traces itself into its own LLMOps: its OTLP exporter posts to
`/llmops/otlp/v1/traces` with a platform token, a chat call's spans are filed under the caller's
tenant, and the traces page, rendered by headless Chromium, lists the run and opens it as a tree
(the server span, the gateway's `chat` model span with its tokens and cost)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.e2e.test_faas_up import faas, free_port
from tests.e2e.test_llmops_dashboard import chromium, llmops_env, serving

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = llmops_env(tmp_path, FAAS_JWT_SECRET=TEST_SECRET)
    collector = faas("token", "--tenant", "ops", "--user", "otel", "--platform-admin", env=env)
    port = free_port()
    traced = env | {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/llmops/otlp/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"authorization=Bearer {collector}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with serving(traced, port) as url:
        yield url, env


def wait_for_run(http: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        runs = http.get("/api/v1/llmops/traces", headers=headers).json()["data"]
        if any(r["input_tokens"] for r in runs):
            return list(runs)
        time.sleep(0.2)
    raise AssertionError("the chat call's trace never reached LLMOps")


def test_the_traces_page_shows_a_run_of_this_process_as_a_tree(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    browser = chromium()
    url, env = server
    token = faas("token", "--tenant", "acme", "--user", "ann", env=env)
    headers = {"Authorization": f"Bearer {token}"}
    other = {"Authorization": f"Bearer {faas('token', '--tenant', 'globex', env=env)}"}
    with httpx.Client(base_url=url, timeout=20) as http:
        body = {"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]}
        chat = http.post("/v1/chat/completions", json=body, headers=headers)
        assert chat.status_code == 200, chat.text
        [run] = [r for r in wait_for_run(http, headers) if r["input_tokens"]]
        assert run["name"] == "POST /v1/chat/completions"
        assert run["cost_usd"] > 0
        assert http.get("/api/v1/llmops/traces", headers=other).json()["data"] == []
    page = f"{url}/llmops/traces?token={token}&trace={run['trace_id']}"
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
    assert 'data-loaded="true"' in dom, dom[-2000:]
    assert 'data-opened="true"' in dom, dom[-2000:]
    assert f'data-trace-id="{run["trace_id"]}"' in dom
    server_span = dom.index('data-span-name="POST /v1/chat/completions"')
    model_span = dom.index('data-span-name="chat chat-default"')
    assert server_span < model_span  # nested under it
    assert 'data-span-kind="client"' in dom
    assert " in / " in dom and "$0.0" in dom
