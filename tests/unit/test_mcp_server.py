"""faas as an MCP server: the real `mcp` client (`ClientSession` over streamable HTTP with a
bearer token) against the platform's app served by uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import mcp_types as types
import orjson
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

from faas.shared.config import Settings
from tests.conftest import auth, token_for
from tests.platform_app import Platform, platform
from tests.support.served import served

A = auth("acme")
B = auth("globex")
FAAS_TOOLS = {
    "rag_search",
    "rag_query",
    "prompt_render",
    "agent_run",
    "cache_get",
    "cache_set",
    "ml_predict",
}


@pytest.fixture
async def env(tmp_path: Any, make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n        model: m\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    settings = make_settings(gateway_models=routing)
    names = ["gateway", "cache", "rag", "prompt", "ml", "prompt_generator", "agent"]
    async with platform(settings, names) as env:
        yield env


@pytest.fixture
async def url(env: Platform) -> AsyncIterator[str]:
    async with served(env.app) as base:
        yield f"{base}/mcp"


@asynccontextmanager
async def session(url: str, tenant: str = "acme") -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        yield client


def payload(result: types.CallToolResult) -> Any:
    assert not result.is_error, result.content
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return orjson.loads(block.text)


def error_text(result: types.CallToolResult) -> str:
    assert result.is_error
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_lists_faas_tools_and_the_tenants_own(env: Platform, url: str) -> None:
    tool = {
        "kind": "expression",
        "name": "with_vat",
        "description": "A net price with 20% VAT added",
        "expression": "price * 1.2",
        "parameters": {
            "type": "object",
            "properties": {"price": {"type": "number"}},
            "required": ["price"],
        },
    }
    created = await env.client.post("/api/v1/agents/tools", json=tool, headers=A)
    assert created.status_code == 201, created.text
    async with session(url) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == FAAS_TOOLS | {"tenant.with_vat"}
        result = await client.call_tool("tenant.with_vat", {"price": 10})
        assert payload(result) == {"result": 12.0}
    async with session(url, "globex") as other:
        assert {t.name for t in (await other.list_tools()).tools} == FAAS_TOOLS
        refused = await other.call_tool("tenant.with_vat", {"price": 10})
        assert "unknown tool" in error_text(refused)


async def test_rag_search_prompt_render_and_cache_round_trip(env: Platform, url: str) -> None:
    document = {"title": "Refunds", "content": "Refunds are paid within 14 days."}
    indexed = await env.client.post("/api/v1/rag/documents", json=document, headers=A)
    assert indexed.status_code == 201, indexed.text
    template = {"name": "greet", "content": "Hello {{ name }}!", "labels": ["production"]}
    made = await env.client.post("/api/v1/prompts/templates", json=template, headers=A)
    assert made.status_code == 201, made.text
    async with session(url) as client:
        found = payload(await client.call_tool("rag_search", {"query": "refunds days"}))
        assert "14 days" in found["results"][0]["text"]
        rendered = payload(
            await client.call_tool("prompt_render", {"name": "greet", "variables": {"name": "Ada"}})
        )
        assert rendered["rendered"] == "Hello Ada!"
        stored = await client.call_tool("cache_set", {"key": "k1", "value": {"n": 1}})
        assert not stored.is_error
        entry = payload(await client.call_tool("cache_get", {"key": "k1"}))
        assert entry["found"] and entry["value"] == {"n": 1}
    # The same cache as the HTTP API's, for the same tenant only.
    via_http = await env.client.get("/api/v1/cache/k1", headers=A)
    assert via_http.json()["data"]["value"] == {"n": 1}
    async with session(url, "globex") as other:
        assert not payload(await other.call_tool("cache_get", {"key": "k1"}))["found"]
        missing = await other.call_tool("prompt_render", {"name": "greet"})
        assert "not_found" in error_text(missing)


async def test_resources_are_the_tenants_templates_and_documents(env: Platform, url: str) -> None:
    await env.client.post(
        "/api/v1/prompts/templates", json={"name": "greet", "content": "Hi {{ x }}"}, headers=A
    )
    doc = await env.client.post(
        "/api/v1/rag/documents", json={"title": "Notes", "content": "Alpha beta."}, headers=A
    )
    doc_id = doc.json()["data"]["document_id"]
    async with session(url) as client:
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"faas://prompts/greet", f"faas://documents/{doc_id}"} <= uris
        read = await client.read_resource("faas://prompts/greet")
        content = read.contents[0]
        assert isinstance(content, types.TextResourceContents)
        assert orjson.loads(content.text)["content"] == "Hi {{ x }}"
    async with session(url, "globex") as other:
        theirs = {str(r.uri) for r in (await other.list_resources()).resources}
        assert "faas://prompts/greet" not in theirs
        assert not any(uri.startswith("faas://documents/") for uri in theirs)
        with pytest.raises(MCPError, match="not_found"):
            await other.read_resource(f"faas://documents/{doc_id}")


async def test_failing_tools_answer_is_error_and_the_session_goes_on(url: str) -> None:
    async with session(url) as client:
        bad = await client.call_tool("rag_search", {"query": ""})
        assert "invalid arguments" in error_text(bad)
        unknown_model = await client.call_tool("ml_predict", {"model": "nope", "features": {}})
        assert "not_found" in error_text(unknown_model)
        no_agent = await client.call_tool("agent_run", {"agent_id": "missing", "task": "hi"})
        assert "not_found" in error_text(no_agent)
        assert "unknown tool" in error_text(await client.call_tool("teleport", {}))
        assert len((await client.list_tools()).tools) == len(FAAS_TOOLS)


async def test_agent_run_runs_the_tenants_agent(env: Platform, url: str) -> None:
    spec = {"name": "helper", "system_prompt": "Be brief.", "tools": ["calculator"]}
    agent = await env.client.post("/api/v1/agents", json=spec, headers=A)
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["data"]["id"]
    async with session(url) as client:
        run = payload(await client.call_tool("agent_run", {"agent_id": agent_id, "task": "17*23"}))
    assert run["status"] == "completed" and "391" in run["output"]
    async with session(url, "globex") as other:
        foreign = await other.call_tool("agent_run", {"agent_id": agent_id, "task": "17*23"})
        assert "not_found" in error_text(foreign)


async def test_without_a_token_mcp_is_401_with_one_a_plain_post_answers(url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        forged = await http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": "Bearer not-a-token"},
        )
        assert forged.status_code == 401
        raw = await http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={**A, "Accept": "application/json, text/event-stream"},
        )
        assert raw.status_code == 200, raw.text
        assert {t["name"] for t in raw.json()["result"]["tools"]} == FAAS_TOOLS
