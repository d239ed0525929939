"""The Agent service enforces the Prompt Generator's permissions on what it generated: the
owner and admin-scoped callers always, others per grant (read, execute, admin), through the
real generator in the same app; without a reachable generator, non-owners get 503."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform
from tests.support.mock_upstream import MockUpstream
from tests.unit.test_agent_api import answer, call, tool_message
from tests.unit.test_prompt_generator_api import (
    AGENT_SPEC,
    generator_platform,
    json_answer,
)

OWNER = auth("acme", "u1")
OTHER = auth("acme", "u2")
ADMIN = auth("acme", "boss", scopes=["admin"])
GLOBEX = auth("globex", "u1")
WITHOUT_GENERATOR = ("gateway", "cache", "rag", "prompt", "agent")

PRICE_TOOL = {
    "kind": "expression",
    "name": "price_with_tax",
    "description": "A price with a tax rate in percent added",
    "expression": "price * (1 + rate / 100)",
    "parameters": {
        "type": "object",
        "properties": {"price": {"type": "number"}, "rate": {"type": "number"}},
        "required": ["price", "rate"],
    },
}


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def env(
    tmp_path: Path, make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[Platform]:
    async with generator_platform(tmp_path, make_settings, up) as env:
        yield env


async def generated_agent(env: Platform, up: MockUpstream, **spec: Any) -> str:
    up.control(script=[json_answer({**AGENT_SPEC, **spec})])
    response = await env.client.post(
        "/api/v1/prompt/agents", json={"prompt": "an agent for refunds"}, headers=OWNER
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["agent"]["id"])


async def change(
    env: Platform, resource_id: str, permission: str, action: str, resource_type: str = "agent"
) -> None:
    response = await env.client.post(
        "/api/v1/prompt/permissions",
        json={
            "resource_type": resource_type,
            "resource_id": resource_id,
            "user_id": "u2",
            "permission": permission,
            "action": action,
        },
        headers=OWNER,
    )
    assert response.status_code == 200, response.text


async def status(
    env: Platform, method: str, path: str, headers: dict[str, str], body: Any = None
) -> int:
    response = await env.client.request(method, path, json=body, headers=headers)
    return response.status_code


async def read(env: Platform, agent_id: str, headers: dict[str, str]) -> int:
    return await status(env, "GET", f"/api/v1/agents/{agent_id}", headers)


async def run(env: Platform, up: MockUpstream, agent_id: str, headers: dict[str, str]) -> int:
    up.control(script=[answer("done")])
    path = f"/api/v1/agents/{agent_id}/execute"
    return await status(env, "POST", path, headers, {"task": "go"})


async def edit(env: Platform, agent_id: str, headers: dict[str, str]) -> int:
    path = f"/api/v1/agents/{agent_id}"
    return await status(env, "PUT", path, headers, {"description": "edited"})


async def test_the_owner_uses_their_generated_agent(env: Platform, up: MockUpstream) -> None:
    agent_id = await generated_agent(env, up)
    fetched = await env.client.get(f"/api/v1/agents/{agent_id}", headers=OWNER)
    assert fetched.status_code == 200
    assert fetched.json()["data"]["origin"] == "prompt_generator"
    assert fetched.json()["data"]["created_by"] == "u1"
    assert await run(env, up, agent_id, OWNER) == 200
    assert await edit(env, agent_id, OWNER) == 200


async def test_another_user_needs_a_grant_for_every_use(env: Platform, up: MockUpstream) -> None:
    agent_id = await generated_agent(env, up)
    up.control(script=[answer("owner run")])
    run_id = (
        await env.client.post(
            f"/api/v1/agents/{agent_id}/execute", json={"task": "x"}, headers=OWNER
        )
    ).json()["data"]["id"]
    refused = [
        ("GET", f"/api/v1/agents/{agent_id}", None),
        ("GET", f"/api/v1/agents/{agent_id}/runs", None),
        ("GET", f"/api/v1/agents/{agent_id}/runs/{run_id}", None),
        ("GET", f"/api/v1/agents/{agent_id}/memory", None),
        ("POST", f"/api/v1/agents/{agent_id}/execute", {"task": "x"}),
        ("POST", f"/api/v1/agents/{agent_id}/execute", {"task": "x", "async": True}),
        ("POST", f"/api/v1/agents/{agent_id}/chat", {"message": "x"}),
        ("POST", f"/api/v1/agents/{agent_id}/memory", {"text": "x"}),
        ("PUT", f"/api/v1/agents/{agent_id}", {"description": "mine now"}),
        ("DELETE", f"/api/v1/agents/{agent_id}", None),
    ]
    for method, path, body in refused:
        response = await env.client.request(method, path, json=body, headers=OTHER)
        assert response.status_code == 403, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "forbidden"
        assert "u2" in error["message"]
        assert "POST /api/v1/prompt-generator/permissions" in error["message"]
    workflow = await env.client.post(
        "/api/v1/agents/workflows",
        json={"input": "x", "steps": [{"agent_id": agent_id}]},
        headers=OTHER,
    )
    assert workflow.status_code == 403

    await change(env, agent_id, "read", "grant")
    assert await read(env, agent_id, OTHER) == 200
    runs = await env.client.get(f"/api/v1/agents/{agent_id}/runs", headers=OTHER)
    assert runs.status_code == 200 and runs.json()["data"]["total"] == 1
    assert await run(env, up, agent_id, OTHER) == 403
    assert await edit(env, agent_id, OTHER) == 403

    await change(env, agent_id, "execute", "grant")
    assert await run(env, up, agent_id, OTHER) == 200
    up.control(script=[answer("chatting")])
    chat = await env.client.post(
        f"/api/v1/agents/{agent_id}/chat", json={"message": "hi"}, headers=OTHER
    )
    assert chat.status_code == 200 and chat.json()["data"]["reply"] == "chatting"
    assert await edit(env, agent_id, OTHER) == 403

    await change(env, agent_id, "admin", "grant")
    assert await edit(env, agent_id, OTHER) == 200

    for permission in ("admin", "execute"):
        await change(env, agent_id, permission, "revoke")
    assert await run(env, up, agent_id, OTHER) == 403
    assert await read(env, agent_id, OTHER) == 200  # read is still granted
    await change(env, agent_id, "read", "revoke")
    assert await read(env, agent_id, OTHER) == 403


async def test_an_admin_scoped_caller_is_always_allowed(env: Platform, up: MockUpstream) -> None:
    agent_id = await generated_agent(env, up)
    assert await read(env, agent_id, ADMIN) == 200
    assert await run(env, up, agent_id, ADMIN) == 200
    assert await edit(env, agent_id, ADMIN) == 200
    listed = (await env.client.get("/api/v1/agents", headers=ADMIN)).json()["data"]
    assert [a["id"] for a in listed["items"]] == [agent_id]


async def test_another_tenant_gets_404_not_403(env: Platform, up: MockUpstream) -> None:
    agent_id = await generated_agent(env, up)
    assert await read(env, agent_id, GLOBEX) == 404
    assert await run(env, up, agent_id, GLOBEX) == 404
    assert await edit(env, agent_id, GLOBEX) == 404


async def test_lists_leave_out_generated_agents_the_caller_cannot_read(
    env: Platform, up: MockUpstream
) -> None:
    first = await generated_agent(env, up, name="first")
    second = await generated_agent(env, up, name="second")
    plain = await env.client.post(
        "/api/v1/agents", json={"name": "plain", "tools": []}, headers=OWNER
    )
    plain_id = plain.json()["data"]["id"]

    async def listed(headers: dict[str, str]) -> tuple[set[str], int]:
        response = await env.client.get("/api/v1/agents", headers=headers)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        return {a["id"] for a in data["items"]}, data["total"]

    assert await listed(OWNER) == ({first, second, plain_id}, 3)
    assert await listed(OTHER) == ({plain_id}, 1)
    await change(env, second, "execute", "grant")  # execute implies read
    assert await listed(OTHER) == ({second, plain_id}, 2)
    assert await listed(ADMIN) == ({first, second, plain_id}, 3)
    accessible = await env.client.get(
        "/api/v1/prompt/permissions/accessible",
        params={"user_id": "u2", "permission": "read"},
        headers=OTHER,
    )
    assert accessible.json()["data"]["resource_ids"] == [second]
    paged = await env.client.get("/api/v1/agents", params={"limit": 1}, headers=OTHER)
    assert paged.json()["data"]["total"] == 2 and len(paged.json()["data"]["items"]) == 1


async def test_agents_not_generated_stay_open_to_the_tenant(
    tmp_path: Path, make_settings: Callable[..., Settings], up: MockUpstream
) -> None:
    # No generator in this deployment: plain agents must not need it.
    async with generator_platform(tmp_path, make_settings, up, WITHOUT_GENERATOR) as env:
        created = await env.client.post(
            "/api/v1/agents", json={"name": "plain", "tools": []}, headers=OWNER
        )
        agent_id = created.json()["data"]["id"]
        assert created.json()["data"]["origin"] is None
        assert await read(env, agent_id, OTHER) == 200
        assert await run(env, up, agent_id, OTHER) == 200
        assert await edit(env, agent_id, OTHER) == 200
        listed = (await env.client.get("/api/v1/agents", headers=OTHER)).json()["data"]
        assert listed["total"] == 1


@pytest.mark.parametrize("generator", ["absent", "unreachable"])
async def test_without_the_generator_non_owners_get_503(
    tmp_path: Path, make_settings: Callable[..., Settings], up: MockUpstream, generator: str
) -> None:
    # "unreachable": the generator is configured at a URL where nothing listens.
    overrides = {"prompt_generator_url": "http://127.0.0.1:9"} if generator == "unreachable" else {}
    async with generator_platform(
        tmp_path, make_settings, up, WITHOUT_GENERATOR, **overrides
    ) as env:
        created = await env.client.post(
            "/api/v1/agents",
            params={"origin": "prompt_generator"},
            json={"name": "generated", "tools": []},
            headers=OWNER,
        )
        assert created.status_code == 201, created.text
        agent_id = created.json()["data"]["id"]
        assert await read(env, agent_id, OWNER) == 200
        assert await read(env, agent_id, ADMIN) == 200
        for response in (
            await env.client.get(f"/api/v1/agents/{agent_id}", headers=OTHER),
            await env.client.post(
                f"/api/v1/agents/{agent_id}/execute", json={"task": "x"}, headers=OTHER
            ),
            await env.client.get("/api/v1/agents", headers=OTHER),
        ):
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "dependency_unavailable"
            assert "prompt_generator" in error["message"]
            assert error["details"]["service"] == "prompt_generator"


async def test_a_generated_tool_runs_only_for_users_with_execute_on_it(
    env: Platform, up: MockUpstream
) -> None:
    up.control(script=[json_answer(PRICE_TOOL)])
    made = await env.client.post(
        "/api/v1/prompt/tools", json={"prompt": "price with tax"}, headers=OWNER
    )
    assert made.status_code == 201, made.text
    assert made.json()["data"]["tool"]["origin"] == "prompt_generator"
    # A plain agent (open to the tenant) that uses the owner's generated tool.
    created = await env.client.post(
        "/api/v1/agents", json={"name": "shop", "tools": ["price_with_tax"]}, headers=OWNER
    )
    agent_id = created.json()["data"]["id"]

    async def tool_step(headers: dict[str, str]) -> dict[str, Any]:
        up.control(
            script=[
                tool_message(call("price_with_tax", {"price": 80, "rate": 25})),
                answer("100"),
            ]
        )
        response = await env.client.post(
            f"/api/v1/agents/{agent_id}/execute", json={"task": "price?"}, headers=headers
        )
        assert response.status_code == 200, response.text
        step: dict[str, Any] = response.json()["data"]["steps"][1]
        return step

    owner_step = await tool_step(OWNER)
    assert owner_step["error"] is None and owner_step["result"] == {"result": 100.0}
    refused = await tool_step(OTHER)
    assert refused["result"] is None
    assert "no execute permission on the generated tool 'price_with_tax'" in refused["error"]
    await change(env, "price_with_tax", "read", "grant", resource_type="tool")
    assert (await tool_step(OTHER))["result"] is None
    await change(env, "price_with_tax", "execute", "grant", resource_type="tool")
    allowed = await tool_step(OTHER)
    assert allowed["error"] is None and allowed["result"] == {"result": 100.0}
    # Deleting the tool takes admin on it.
    path = "/api/v1/agents/tools/price_with_tax"
    assert (await env.client.delete(path, headers=OTHER)).status_code == 403
    assert (await env.client.delete(path, headers=OWNER)).status_code == 204


async def test_bulk_check_answers_in_order(env: Platform, up: MockUpstream) -> None:
    agent_id = await generated_agent(env, up)
    await change(env, agent_id, "read", "grant")
    checks = [
        {"resource_type": "agent", "resource_id": agent_id, "permission": p}
        for p in ("read", "execute")
    ]
    response = await env.client.post(
        "/api/v1/prompt/permissions/check", json={"user_id": "u2", "checks": checks}, headers=OTHER
    )
    assert response.status_code == 200, response.text
    results = response.json()["data"]["results"]
    assert [(r["permission"], r["allowed"]) for r in results] == [
        ("read", True),
        ("execute", False),
    ]
    owner = await env.client.post(
        "/api/v1/prompt/permissions/check", json={"user_id": "u1", "checks": checks}, headers=OTHER
    )
    assert [r["reason"] for r in owner.json()["data"]["results"]] == ["owner", "owner"]
