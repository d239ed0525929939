"""Agents using MCP servers: servers built with the `mcp` SDK (`MCPServer`) and served on
127.0.0.1 by uvicorn, registered per tenant, their tools called by a faas agent whose model is
the offline mock (it calls the tool a question names and answers from its result)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mcp.server.mcpserver import MCPServer
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from faas.services.agent_service.mcp_servers import HeaderSeal
from faas.services.agent_service.tables import McpServerRow
from faas.shared.config import Settings
from faas.shared.exceptions import DependencyUnavailable
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.served import served

ADMIN = auth("acme", scopes=["admin"])
USER = auth("acme", "u2")
OTHER_ADMIN = auth("globex", scopes=["admin"])
SECRET = "Bearer upstream-s3cret"


class SeenHeaders:
    """Records the Authorization header of every request the wrapped app receives."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.authorizations: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            self.authorizations.append(headers.get(b"authorization", b"").decode())
        await self.app(scope, receive, send)


def weather_server() -> MCPServer:
    server = MCPServer("weather")

    @server.tool(description="The weather forecast for a city")
    def forecast(city: str) -> str:
        return f"The forecast for Paris is sunny and 21 degrees (asked: {city[:40]})."

    @server.tool(description="A very long report")
    def report(topic: str) -> str:
        return "word " * 100_000

    return server


def stuck_server() -> MCPServer:
    server = MCPServer("stuck")

    @server.tool(description="Waits for an answer that never comes")
    async def wait(question: str) -> str:
        await asyncio.sleep(3600)
        return "never"

    return server


async def garbage(request: Request) -> PlainTextResponse:
    return PlainTextResponse("{not json at all", media_type="application/json")


@pytest.fixture
async def weather() -> AsyncIterator[tuple[str, SeenHeaders]]:
    app = SeenHeaders(weather_server().streamable_http_app(stateless_http=True))
    async with served(app, lifespan="on") as base:
        yield f"{base}/mcp", app


@pytest.fixture
async def stuck() -> AsyncIterator[str]:
    async with served(stuck_server().streamable_http_app(stateless_http=True), lifespan="on") as b:
        yield f"{b}/mcp"


@pytest.fixture
async def junk() -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/mcp", garbage, methods=["GET", "POST", "DELETE"])])
    async with served(app) as base:
        yield f"{base}/mcp"


@pytest.fixture
async def env(tmp_path: Any, make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n        model: m\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    settings = make_settings(gateway_models=routing, agent_http_allowlist="127.0.0.1")
    async with platform(settings, ["gateway", "cache", "rag", "prompt", "agent"]) as env:
        yield env


async def register(
    env: Platform, name: str, url: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    body = {"name": name, "url": url, "headers": headers or {}}
    response = await env.client.post("/api/v1/agents/mcp-servers", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


async def agent_with(env: Platform, *tools: str) -> str:
    spec = {"name": "helper", "system_prompt": "Use your tools.", "tools": list(tools)}
    response = await env.client.post("/api/v1/agents", json=spec, headers=USER)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def execute(env: Platform, agent_id: str, task: str) -> Any:
    return await env.client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"task": task}, headers=USER
    )


async def test_registered_server_headers_are_sealed_and_masked(
    env: Platform, weather: tuple[str, SeenHeaders]
) -> None:
    url, _ = weather
    view = await register(env, "weather", url, {"Authorization": SECRET})
    assert view["headers"] == {"Authorization": "********"}
    listed = await env.client.get("/api/v1/agents/mcp-servers", headers=USER)
    assert [s["name"] for s in listed.json()["data"]] == ["weather"]
    assert "s3cret" not in listed.text
    async with env.runtime.db.session() as session:
        row = (await session.scalars(select(McpServerRow))).one()
    assert row.sealed_headers is not None and b"s3cret" not in row.sealed_headers
    # Another tenant sees nothing; a non-admin can neither register nor delete.
    other = await env.client.get("/api/v1/agents/mcp-servers", headers=OTHER_ADMIN)
    assert other.json()["data"] == []
    body = {"name": "mine", "url": url}
    refused = await env.client.post("/api/v1/agents/mcp-servers", json=body, headers=USER)
    assert refused.status_code == 403
    assert (
        await env.client.delete("/api/v1/agents/mcp-servers/weather", headers=USER)
    ).status_code == 403
    duplicate = await env.client.post(
        "/api/v1/agents/mcp-servers", json={"name": "weather", "url": url}, headers=ADMIN
    )
    assert duplicate.status_code == 409
    gone = await env.client.delete("/api/v1/agents/mcp-servers/weather", headers=ADMIN)
    assert gone.status_code == 204
    assert (
        await env.client.delete("/api/v1/agents/mcp-servers/weather", headers=ADMIN)
    ).status_code == 404


async def test_private_address_outside_the_allowlist_is_refused(env: Platform) -> None:
    body = {"name": "inside", "url": "http://10.1.2.3/mcp"}
    response = await env.client.post("/api/v1/agents/mcp-servers", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert "10.1.2.3" in response.json()["error"]["message"]


async def test_agent_calls_an_mcp_tool_and_answers_from_it(
    env: Platform, weather: tuple[str, SeenHeaders]
) -> None:
    url, seen = weather
    await register(env, "weather", url, {"Authorization": SECRET})
    unknown = await env.client.post(
        "/api/v1/agents", json={"name": "x", "tools": ["mcp:nowhere"]}, headers=USER
    )
    assert unknown.status_code == 422
    agent_id = await agent_with(env, "mcp:weather")
    response = await execute(env, agent_id, "Use weather__forecast: how is the weather in Paris?")
    assert response.status_code == 200, response.text
    run = response.json()["data"]
    assert run["status"] == "completed"
    tool_step = next(s for s in run["steps"] if s["type"] == "tool")
    assert tool_step["name"] == "weather__forecast" and tool_step["error"] is None
    assert "sunny" in tool_step["result"]["text"]
    assert "sunny" in run["output"]
    # The tenant's credentials reached the server, on every request of the exchange.
    assert seen.authorizations and set(seen.authorizations) == {SECRET}


async def test_a_hanging_mcp_server_fails_the_step_not_the_run(
    env: Platform, stuck: str, weather: tuple[str, SeenHeaders]
) -> None:
    await register(env, "stuck", stuck)
    agent_id = await agent_with(env, "mcp:stuck")
    response = await execute(env, agent_id, "Use stuck__wait on this question")
    assert response.status_code == 200, response.text
    run = response.json()["data"]
    step = next(s for s in run["steps"] if s["type"] == "tool")
    assert step["name"] == "stuck__wait"
    assert "timed out" in step["error"] and "stuck" in step["error"]
    assert run["status"] == "completed" and "failed" in run["output"]
    # The platform keeps serving, MCP tools included.
    assert (await env.client.get("/livez")).status_code == 200
    await register(env, "weather", weather[0])
    other = await agent_with(env, "mcp:weather")
    again = await execute(env, other, "Use weather__forecast for Paris")
    assert again.status_code == 200 and "sunny" in again.json()["data"]["output"]


async def test_a_server_answering_garbage_fails_the_run_with_a_clear_error(
    env: Platform, junk: str
) -> None:
    await register(env, "junk", junk)
    agent_id = await agent_with(env, "mcp:junk")
    response = await execute(env, agent_id, "Use junk__anything please")
    assert response.status_code == 502, response.text
    assert "MCP server 'junk' could not list its tools" in response.json()["error"]["message"]
    assert (await env.client.get("/livez")).status_code == 200


async def test_an_answer_over_the_size_limit_fails_the_step(
    env: Platform, weather: tuple[str, SeenHeaders]
) -> None:
    await register(env, "weather", weather[0])
    agent_id = await agent_with(env, "mcp:weather")
    response = await execute(env, agent_id, "Use weather__report on the climate")
    run = response.json()["data"]
    step = next(s for s in run["steps"] if s["type"] == "tool")
    assert step["name"] == "weather__report"
    assert "more than 262144 bytes" in step["error"]


def test_sealed_headers_open_only_for_their_server_and_secret() -> None:
    seal = HeaderSeal(lambda: "k" * 48)
    sealed = seal.seal({"Authorization": SECRET}, b"acme\x00weather")
    assert sealed is not None and b"s3cret" not in sealed
    assert seal.open(sealed, b"acme\x00weather") == {"Authorization": SECRET}
    with pytest.raises(DependencyUnavailable, match="register it again"):
        seal.open(sealed, b"globex\x00weather")
    with pytest.raises(DependencyUnavailable, match="register it again"):
        HeaderSeal(lambda: "other" * 10).open(sealed, b"acme\x00weather")
    without = HeaderSeal(lambda: None)
    assert without.seal({}, b"acme\x00x") is None
    with pytest.raises(DependencyUnavailable, match="FAAS_JWT_SECRET"):
        without.seal({"Authorization": SECRET}, b"acme\x00x")
