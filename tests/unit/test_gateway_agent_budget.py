"""An agent run's budget, the gateway's `agent` level: the agent service's gateway client sends
`x-faas-agent-run` on every model call of a run with `budget_usd`, and the gateway reserves each
call against it as well as against the tenant's and the caller's other levels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.services.gateway_service.agent_run import parse
from faas.shared.config import Settings
from faas.shared.exceptions import BadRequest
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream

A = auth("acme")
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def env(
    tmp_path: Any, make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: openai\n"
        f"        model: mock-model\n        api_base: {up.url}\n"
        "        price: {input_per_1k: 1.0, output_per_1k: 1.0}\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    settings = make_settings(gateway_models=routing)
    async with platform(settings, ["gateway", "cache", "rag", "prompt", "agent"]) as env:
        yield env


def test_the_run_header_is_a_run_id_and_a_budget() -> None:
    run = parse("r1;budget_usd=0.5")
    assert (run.run_id, run.monthly_budget_usd) == ("r1", 0.5)
    assert parse(" ab-9 ; budget_usd = 1e-3 ").monthly_budget_usd == pytest.approx(0.001)
    for bad in (
        "r1",
        "r1;budget_usd=-1",
        "r1;budget_usd=nan",
        "r1;budget_usd=1e99",
        ";budget_usd=1",
    ):
        with pytest.raises(BadRequest):
            parse(bad)


async def test_a_call_over_its_runs_budget_is_refused_naming_the_agent_level(
    env: Platform,
) -> None:
    chat = {"model": "chat-default", "messages": HI, "max_tokens": 10}
    spent = {"x-faas-agent-run": "run-1;budget_usd=0.001"} | A
    refused = await env.client.post("/api/v1/gateway/generate", json=chat, headers=spent)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["details"] == {"level": "agent", "limit": "monthly_budget"}
    openai = await env.client.post("/v1/chat/completions", json=chat, headers=spent)
    assert openai.status_code == 429
    assert openai.json()["error"]["message"] == "agent 'run-1' monthly budget exceeded"
    roomy = {"x-faas-agent-run": "run-2;budget_usd=5"} | A
    assert (await env.client.post("/v1/chat/completions", json=chat, headers=roomy)).is_success
    assert (await env.client.post("/v1/chat/completions", json=chat, headers=A)).is_success
    bad = {"x-faas-agent-run": "run-3"} | A
    assert (
        await env.client.post("/v1/chat/completions", json=chat, headers=bad)
    ).status_code == 400


async def test_an_agent_runs_model_calls_reserve_against_its_budget(
    env: Platform, up: MockUpstream
) -> None:
    created = await env.client.post(
        "/api/v1/agents", json={"name": "helper", "tools": ["calculator"]}, headers=A
    )
    assert created.status_code == 201, created.text
    url = f"/api/v1/agents/{created.json()['data']['id']}/execute"
    up.control(script=[{"role": "assistant", "content": "done"}])
    tight = await env.client.post(url, json={"task": "hi", "budget_usd": 0.0}, headers=A)
    assert tight.status_code == 429, tight.text
    assert "agent" in tight.json()["error"]["message"]
    up.control(script=[{"role": "assistant", "content": "done"}])
    roomy = await env.client.post(url, json={"task": "hi", "budget_usd": 50.0}, headers=A)
    assert roomy.status_code == 200, roomy.text
    assert roomy.json()["data"]["status"] == "completed"
    negative = await env.client.post(url, json={"task": "hi", "budget_usd": -1}, headers=A)
    assert negative.status_code == 422
