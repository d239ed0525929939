"""Prompt generator through the real app: gateway (to a mock upstream scripting the model's
JSON answers), the agent service it creates resources through, feedback and permissions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream

A = auth("acme")
A2 = auth("acme", "u2")
ADMIN = auth("acme", "boss", scopes=["admin"])
B = auth("globex")

AGENT_SPEC = {
    "name": "refund-helper",
    "description": "Answers refund questions",
    "system_prompt": "You answer refund questions using the documents.",
    "tools": ["rag_search", "calculator"],
    "max_iterations": 4,
    "temperature": 0.2,
}
TOOL_SPEC = {
    "name": "weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "method": "GET",
    "url_template": "https://api.weather.test/v1/current?city={city}",
}


def json_answer(value: Any) -> dict[str, Any]:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return {"role": "assistant", "content": text}


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


WITH_GENERATOR = ("gateway", "cache", "rag", "prompt", "agent", "prompt_generator")


@asynccontextmanager
async def generator_platform(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    up: MockUpstream,
    names: Sequence[str] = WITH_GENERATOR,
    **overrides: Any,
) -> AsyncIterator[Platform]:
    """The services in one app, the gateway's chat model being the mock upstream."""
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        f"  - name: chat-default\n    deployments:\n      - provider: openai\n"
        f"        model: mock-model\n        api_base: {up.url}\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    settings = make_settings(gateway_models=routing, job_retry_base_s=0.01, **overrides)
    async with platform(settings, names) as env:
        yield env


@pytest.fixture
async def env(
    tmp_path: Path, make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[Platform]:
    async with generator_platform(tmp_path, make_settings, up) as env:
        yield env


async def generate_agent(
    env: Platform, up: MockUpstream, *answers: Any, headers: dict[str, str] = A
) -> Any:
    up.control(script=[json_answer(a) for a in answers])
    return await env.client.post(
        "/api/v1/prompt/agents", json={"prompt": "an agent for refunds"}, headers=headers
    )


async def test_valid_spec_creates_a_usable_agent(env: Platform, up: MockUpstream) -> None:
    response = await generate_agent(env, up, AGENT_SPEC)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["repaired"] is False
    assert data["generated_spec"] == AGENT_SPEC
    agent_id = data["agent"]["id"]
    fetched = await env.client.get(f"/api/v1/agents/{agent_id}", headers=A)
    assert fetched.status_code == 200
    agent = fetched.json()["data"]
    assert agent["name"] == "refund-helper"
    assert agent["tools"] == ["rag_search", "calculator"]
    assert agent["max_iterations"] == 4
    # JSON mode, deterministic, with the tenant's registered tools in the instructions.
    body = up.stats.last_body
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0
    assert "calculator" in body["messages"][0]["content"]
    # The agent runs.
    up.control(script=[json_answer("Refunds take 14 days.")])
    run = await env.client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"task": "refund time?"}, headers=A
    )
    assert run.status_code == 200, run.text
    assert run.json()["data"]["output"] == "Refunds take 14 days."
    # Other tenants do not see it.
    assert (await env.client.get(f"/api/v1/agents/{agent_id}", headers=B)).status_code == 404


async def test_invalid_then_repaired(env: Platform, up: MockUpstream) -> None:
    bad = {**AGENT_SPEC, "max_iterations": 99, "extra": 1}
    response = await generate_agent(env, up, bad, AGENT_SPEC)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["repaired"] is True
    repair = up.stats.last_body["messages"][-1]["content"]
    assert "max_iterations" in repair and "extra" in repair


async def test_invalid_twice_is_422_with_reasons(env: Platform, up: MockUpstream) -> None:
    response = await generate_agent(env, up, "not json at all", {"name": "x"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "after one repair round" in error["message"]
    assert "system_prompt" in error["message"]
    assert any("not valid JSON" in e for e in error["details"]["first_attempt_errors"])
    listed = await env.client.get("/api/v1/agents", headers=A)
    assert listed.json()["data"]["total"] == 0


async def test_unregistered_tool_is_422_listing_known(env: Platform, up: MockUpstream) -> None:
    spec = {**AGENT_SPEC, "tools": ["teleport"]}
    response = await generate_agent(env, up, spec, spec)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "teleport" in error["message"]
    assert "calculator" in error["details"]["known_tools"]


async def test_tool_generation_valid_and_invalid(env: Platform, up: MockUpstream) -> None:
    up.control(script=[json_answer(TOOL_SPEC)])
    response = await env.client.post(
        "/api/v1/prompt/tools", json={"prompt": "a weather tool"}, headers=A
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["tool"]["name"] == "weather"
    tools = (await env.client.get("/api/v1/agents/tools", headers=A)).json()["data"]
    assert any(t["name"] == "weather" and t["kind"] == "http" for t in tools)
    # The new tool can be given to a generated agent.
    response = await generate_agent(env, up, {**AGENT_SPEC, "tools": ["weather"]})
    assert response.status_code == 201, response.text

    host_placeholder = {**TOOL_SPEC, "name": "w2", "url_template": "https://{city}.test/x"}
    up.control(script=[json_answer(host_placeholder), json_answer({**TOOL_SPEC, "name": "1x"})])
    bad = await env.client.post("/api/v1/prompt/tools", json={"prompt": "again"}, headers=A)
    assert bad.status_code == 422, bad.text
    assert "name" in bad.json()["error"]["message"]
    first = bad.json()["error"]["details"]["first_attempt_errors"]
    assert any("host" in e for e in first)


async def test_ratings_and_feedback(env: Platform, up: MockUpstream) -> None:
    agent_id = (await generate_agent(env, up, AGENT_SPEC)).json()["data"]["agent"]["id"]
    for rating, text in ((5, "great"), (4, None), (5, "spot on")):
        rated = await env.client.post(
            f"/api/v1/prompt/agents/{agent_id}/rate",
            json={"rating": rating, "feedback": text},
            headers=A,
        )
        assert rated.status_code == 201, rated.text
    stats = (await env.client.get(f"/api/v1/prompt/agents/{agent_id}/feedback", headers=A)).json()
    data = stats["data"]
    assert data["count"] == 3
    assert data["average"] == pytest.approx(4.667, abs=0.001)
    assert data["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 2}
    assert len(data["recent"]) == 3
    out_of_range = await env.client.post(
        f"/api/v1/prompt/agents/{agent_id}/rate", json={"rating": 6}, headers=A
    )
    assert out_of_range.status_code == 422
    # Tenant isolation and kind mismatch.
    for url in (f"/api/v1/prompt/agents/{agent_id}/rate", f"/api/v1/prompt/tools/{agent_id}/rate"):
        headers = B if "agents" in url else A
        assert (await env.client.post(url, json={"rating": 3}, headers=headers)).status_code == 404
    other = await env.client.get(f"/api/v1/prompt/agents/{agent_id}/feedback", headers=B)
    assert other.status_code == 404


async def test_permissions_grant_check_revoke(env: Platform, up: MockUpstream) -> None:
    agent_id = (await generate_agent(env, up, AGENT_SPEC)).json()["data"]["agent"]["id"]

    async def change(headers: dict[str, str], **body: Any) -> Any:
        payload = {"resource_type": "agent", "resource_id": agent_id, **body}
        return await env.client.post("/api/v1/prompt/permissions", json=payload, headers=headers)

    async def allowed(user: str, permission: str, headers: dict[str, str] = A) -> bool:
        response = await env.client.get(
            "/api/v1/prompt/permissions/check",
            params={"resource_id": agent_id, "user_id": user, "permission": permission},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        return bool(response.json()["data"]["allowed"])

    assert await allowed("u1", "admin")  # the owner
    assert not await allowed("u2", "read")
    granted = await change(A, user_id="u2", permission="execute", action="grant")
    assert granted.status_code == 200, granted.text
    assert granted.json()["data"]["owner_user_id"] == "u1"
    assert await allowed("u2", "read") and await allowed("u2", "execute")
    assert not await allowed("u2", "admin")
    # A non-owner without the admin scope cannot grant, even holding execute.
    denied = await change(A2, user_id="u3", permission="read", action="grant")
    assert denied.status_code == 403
    # An admin-scoped caller can.
    assert (
        await change(ADMIN, user_id="u3", permission="admin", action="grant")
    ).status_code == 200
    assert await allowed("u3", "execute")
    listed = await env.client.get(
        "/api/v1/prompt/permissions", params={"resource_id": agent_id}, headers=A
    )
    grants = {(g["user_id"], g["permission"]) for g in listed.json()["data"]["grants"]}
    assert grants == {("u2", "execute"), ("u3", "admin")}
    revoked = await change(A, user_id="u2", permission="execute", action="revoke")
    assert revoked.status_code == 200
    assert not await allowed("u2", "read")
    # Another tenant: the resource does not exist there.
    assert (await change(B, user_id="u9", permission="read", action="grant")).status_code == 404
    assert not await allowed("u3", "read", headers=B)
    assert not await allowed("u1", "read", headers=B)
