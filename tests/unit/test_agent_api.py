"""Agents through the real app: gateway (to a real mock upstream that scripts tool calls),
RAG, prompt, cache and agent services in one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from faas.services.agent_service.runs import RunLog
from faas.shared.config import Settings
from faas.shared.exceptions import DependencyUnavailable
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream

A = auth("acme")
B = auth("globex")


def call(name: str, arguments: dict[str, Any], call_id: str = "c1") -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def tool_message(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": list(calls)}


def answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


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
        f"  - name: chat-default\n    deployments:\n      - provider: openai\n"
        f"        model: mock-model\n        api_base: {up.url}\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    settings = make_settings(gateway_models=routing, job_retry_base_s=0.01)
    async with platform(settings, ["gateway", "cache", "rag", "prompt", "agent"]) as env:
        yield env


async def create_agent(env: Platform, headers: dict[str, str] = A, **spec: Any) -> str:
    body = {"name": "helper", "tools": ["rag_search", "calculator"], **spec}
    response = await env.client.post("/api/v1/agents", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def execute(env: Platform, agent_id: str, task: str, headers: dict[str, str] = A) -> Any:
    response = await env.client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"task": task}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def test_unknown_tool_or_model_is_422(env: Platform) -> None:
    bad_tool = await env.client.post(
        "/api/v1/agents", json={"name": "x", "tools": ["teleport"]}, headers=A
    )
    assert bad_tool.status_code == 422
    assert "teleport" in bad_tool.json()["error"]["message"]
    bad_model = await env.client.post(
        "/api/v1/agents", json={"name": "x", "model": "nope"}, headers=A
    )
    assert bad_model.status_code == 422


async def test_multi_step_run_rag_search_then_calculator_then_answer(
    env: Platform, up: MockUpstream
) -> None:
    await env.client.post(
        "/api/v1/rag/documents",
        json={"title": "Refunds", "content": "Refunds are paid within 14 days."},
        headers=A,
    )
    agent_id = await create_agent(env)
    up.control(
        script=[
            tool_message(call("rag_search", {"query": "refund days"})),
            tool_message(call("calculator", {"expression": "14 * 2"}, "c2")),
            answer("Refunds take 14 days; twice that is 28."),
        ]
    )
    run = await execute(env, agent_id, "How long do refunds take, and twice that?")
    assert run["status"] == "completed"
    assert run["output"] == "Refunds take 14 days; twice that is 28."
    kinds = [(s["type"], s.get("name")) for s in run["steps"]]
    assert kinds == [
        ("model", None),
        ("tool", "rag_search"),
        ("model", None),
        ("tool", "calculator"),
        ("model", None),
    ]
    assert "14 days" in orjson.dumps(run["steps"][1]["result"]).decode()
    assert run["steps"][3]["result"]["result"] == 28
    assert run["usage"]["total_tokens"] > 0 and run["usage"]["overhead_ms"] >= 0
    fetched = await env.client.get(f"/api/v1/agents/{agent_id}/runs/{run['id']}", headers=A)
    assert fetched.json()["data"]["steps"] == run["steps"]
    # The tool results went back to the model in OpenAI's format.
    messages = up.stats.last_body["messages"]
    assert [m["role"] for m in messages][-4:] == ["assistant", "tool", "assistant", "tool"]


async def test_tool_errors_are_fed_back_to_the_model(env: Platform, up: MockUpstream) -> None:
    agent_id = await create_agent(env)
    up.control(
        script=[
            tool_message(call("calculator", {"expression": "1/0"})),
            answer("Division by zero is undefined."),
        ]
    )
    run = await execute(env, agent_id, "what is 1/0?")
    assert run["status"] == "completed"
    assert run["steps"][1]["error"]
    last_tool = up.stats.last_body["messages"][-1]
    assert last_tool["role"] == "tool" and "error" in orjson.loads(last_tool["content"])


async def test_parallel_tool_calls_and_unknown_tool(env: Platform, up: MockUpstream) -> None:
    agent_id = await create_agent(env)
    up.control(
        script=[
            tool_message(call("calculator", {"expression": "2+2"}, "a"), call("teleport", {}, "b")),
            answer("done"),
        ]
    )
    run = await execute(env, agent_id, "go")
    tools = [s for s in run["steps"] if s["type"] == "tool"]
    assert [t["name"] for t in tools] == ["calculator", "teleport"]
    assert tools[0]["result"]["result"] == 4 and "unknown tool" in tools[1]["error"]


async def test_max_iterations_stops_the_loop(env: Platform, up: MockUpstream) -> None:
    agent_id = await create_agent(env, max_iterations=2)
    up.control(script=[tool_message(call("calculator", {"expression": "1+1"}))] * 3)
    run = await execute(env, agent_id, "loop forever")
    assert run["status"] == "max_iterations"
    assert len([s for s in run["steps"] if s["type"] == "model"]) == 2


async def test_http_request_cannot_reach_private_addresses(env: Platform, up: MockUpstream) -> None:
    agent_id = await create_agent(env, tools=["http_request"])
    up.control(
        script=[
            tool_message(call("http_request", {"url": "http://169.254.169.254/latest/meta-data"})),
            answer("I could not fetch it."),
        ]
    )
    run = await execute(env, agent_id, "fetch metadata")
    assert run["steps"][1]["error"]
    assert run["steps"][1]["result"] is None


async def test_other_tenants_get_404_everywhere(env: Platform, up: MockUpstream) -> None:
    agent_id = await create_agent(env)
    up.control(script=[answer("hi")])
    run = await execute(env, agent_id, "hello")
    paths = [
        ("GET", f"/api/v1/agents/{agent_id}", None),
        ("PUT", f"/api/v1/agents/{agent_id}", {"description": "mine now"}),
        ("POST", f"/api/v1/agents/{agent_id}/execute", {"task": "x"}),
        ("POST", f"/api/v1/agents/{agent_id}/chat", {"message": "x"}),
        ("GET", f"/api/v1/agents/{agent_id}/runs/{run['id']}", None),
        ("GET", f"/api/v1/agents/{agent_id}/memory", None),
        ("POST", f"/api/v1/agents/{agent_id}/memory", {"text": "x"}),
        ("DELETE", f"/api/v1/agents/{agent_id}", None),
    ]
    for method, path, body in paths:
        response = await env.client.request(method, path, json=body, headers=B)
        assert response.status_code == 404, (method, path, response.text)
    assert (await env.client.get("/api/v1/agents", headers=B)).json()["data"]["total"] == 0
    # Delegation to another tenant's agent fails inside the tool, not across tenants.
    theirs = await create_agent(env, headers=B, tools=["call_agent"])
    up.control(
        script=[
            tool_message(call("call_agent", {"agent_id": agent_id, "task": "x"})),
            answer("no access"),
        ]
    )
    result = await execute(env, theirs, "delegate", headers=B)
    assert result["steps"][1]["error"]


async def test_chat_sessions_keep_history(env: Platform, up: MockUpstream) -> None:
    agent_id = await create_agent(env, tools=[])
    up.control(script=[answer("Nice to meet you, Ada."), answer("Your name is Ada.")])
    first = await env.client.post(
        f"/api/v1/agents/{agent_id}/chat", json={"message": "I am Ada."}, headers=A
    )
    session_id = first.json()["data"]["session_id"]
    second = await env.client.post(
        f"/api/v1/agents/{agent_id}/chat",
        json={"message": "What is my name?", "session_id": session_id},
        headers=A,
    )
    assert second.json()["data"]["reply"] == "Your name is Ada."
    sent = [m.get("content") for m in up.stats.last_body["messages"]]
    assert "I am Ada." in sent and "Nice to meet you, Ada." in sent
    history = await env.client.get(f"/api/v1/agents/{agent_id}/sessions/{session_id}", headers=A)
    assert [m["role"] for m in history.json()["data"]] == ["user", "assistant"] * 2


async def test_concurrent_messages_to_one_session_do_not_interleave(
    env: Platform, up: MockUpstream
) -> None:
    agent_id = await create_agent(env, tools=[])
    up.control(script=[answer("first"), answer("second"), answer("third")], latency_ms=50)
    start = await env.client.post(
        f"/api/v1/agents/{agent_id}/chat", json={"message": "m0"}, headers=A
    )
    session_id = start.json()["data"]["session_id"]
    await asyncio.gather(
        *(
            env.client.post(
                f"/api/v1/agents/{agent_id}/chat",
                json={"message": f"m{i}", "session_id": session_id},
                headers=A,
            )
            for i in (1, 2)
        )
    )
    history = (
        await env.client.get(f"/api/v1/agents/{agent_id}/sessions/{session_id}", headers=A)
    ).json()["data"]
    roles = [m["role"] for m in history]
    assert roles == ["user", "assistant"] * 3


async def test_streaming_chat_sends_tool_events_and_tokens(env: Platform, up: MockUpstream) -> None:
    agent_id = await create_agent(env)
    up.control(
        script=[
            tool_message(call("calculator", {"expression": "6*7"})),
            answer("The answer is 42."),
        ]
    )
    events: list[dict[str, Any]] = []
    async with env.client.stream(
        "POST",
        f"/api/v1/agents/{agent_id}/chat",
        json={"message": "6 times 7?", "stream": True},
        headers=A,
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(orjson.loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("token")
    assert kinds[-1] == "done" and events[-1]["reply"] == "The answer is 42."
    assert "".join(e["content"] for e in events if e["type"] == "token") == "The answer is 42."


async def test_long_term_memory_is_recalled_into_the_system_prompt(
    env: Platform, up: MockUpstream
) -> None:
    agent_id = await create_agent(env, tools=[], memory={"long_term": True})
    saved = await env.client.post(
        f"/api/v1/agents/{agent_id}/memory",
        json={"text": "The user's favourite colour is teal."},
        headers=A,
    )
    assert saved.status_code == 201
    up.control(script=[answer("Teal.")])
    await execute(env, agent_id, "What is the user's favourite colour?")
    system = up.stats.last_body["messages"][0]
    assert system["role"] == "system" and "teal" in system["content"]
    listed = (await env.client.get(f"/api/v1/agents/{agent_id}/memory", headers=A)).json()
    memory_id = listed["data"][0]["id"]
    removed = await env.client.delete(f"/api/v1/agents/{agent_id}/memory/{memory_id}", headers=A)
    assert removed.status_code == 204


async def test_async_execution_is_a_job(env: Platform, up: MockUpstream) -> None:
    agent_id = await create_agent(env, tools=[])
    up.control(script=[answer("async done")])
    response = await env.client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"task": "later", "async": True}, headers=A
    )
    assert response.status_code == 202
    location = response.headers["location"]
    for _ in range(300):
        job = (await env.client.get(location, headers=A)).json()["data"]
        if job["status"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.02)
    assert job["status"] == "succeeded", job
    run = await env.client.get(
        f"/api/v1/agents/{agent_id}/runs/{job['result']['run_id']}", headers=A
    )
    assert run.json()["data"]["output"] == "async done"


async def test_sequential_workflow_passes_output_along(env: Platform, up: MockUpstream) -> None:
    first = await create_agent(env, name="drafter", tools=[])
    second = await create_agent(env, name="editor", tools=[])
    up.control(script=[answer("a rough draft"), answer("a polished draft")])
    response = await env.client.post(
        "/api/v1/agents/workflows",
        json={
            "input": "write",
            "steps": [{"agent_id": first}, {"agent_id": second, "task": "Edit: {input}"}],
        },
        headers=A,
    )
    data = response.json()["data"]
    assert data["output"] == "a polished draft"
    assert data["runs"][1]["input"] == "Edit: a rough draft"


async def test_declarative_http_tool_is_validated_and_listed(env: Platform) -> None:
    spec = {
        "name": "weather",
        "description": "Weather by city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "method": "GET",
        "url_template": "https://api.example.com/weather?city={city}",
    }
    created = await env.client.post("/api/v1/agents/tools", json=spec, headers=A)
    assert created.status_code == 201, created.text
    clash = await env.client.post(
        "/api/v1/agents/tools", json=spec | {"name": "calculator"}, headers=A
    )
    assert clash.status_code in (409, 422)
    bad_host = await env.client.post(
        "/api/v1/agents/tools",
        json=spec | {"name": "w2", "url_template": "https://{city}.example.com/"},
        headers=A,
    )
    assert bad_host.status_code == 422
    names = {
        t["name"] for t in (await env.client.get("/api/v1/agents/tools", headers=A)).json()["data"]
    }
    assert {"weather", "calculator", "rag_search"} <= names
    theirs = {
        t["name"] for t in (await env.client.get("/api/v1/agents/tools", headers=B)).json()["data"]
    }
    assert "weather" not in theirs
    assert await create_agent(env, tools=["weather"])


async def test_a_tool_acts_only_once_the_run_is_on_record(
    env: Platform, up: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's start is written while its first model call is on its way; the tool the model
    asks for waits for that write."""
    agent_id = await create_agent(env)
    write_start = RunLog.record_start
    release = asyncio.Event()

    async def slow_start(self: RunLog, *args: Any, **kwargs: Any) -> None:
        await release.wait()
        await write_start(self, *args, **kwargs)

    monkeypatch.setattr(RunLog, "record_start", slow_start)
    up.control(script=[tool_message(call("calculator", {"expression": "6 * 7"})), answer("42")])
    chats = "/v1/chat/completions"
    before = up.stats.paths[chats]
    running = asyncio.create_task(execute(env, agent_id, "6 * 7?"))
    for _ in range(200):  # the first model call goes out while the start is held
        if up.stats.paths[chats] == before + 1:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    # Still one model call: the tool (and so the second call) waits for the run's record.
    assert up.stats.paths[chats] == before + 1 and not running.done()
    release.set()
    run = await running
    assert [s["type"] for s in run["steps"]] == ["model", "tool", "model"]
    assert run["steps"][1]["result"]["result"] == 42
    fetched = await env.client.get(f"/api/v1/agents/{agent_id}/runs/{run['id']}", headers=A)
    assert fetched.json()["data"]["status"] == "completed"


async def test_a_run_whose_start_cannot_be_written_fails_before_any_tool_acts(
    env: Platform, up: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_id = await create_agent(env)

    async def no_database(self: RunLog, *args: Any, **kwargs: Any) -> None:
        raise DependencyUnavailable("the database is not answering")

    monkeypatch.setattr(RunLog, "record_start", no_database)
    up.control(script=[tool_message(call("calculator", {"expression": "6 * 7"})), answer("42")])
    chats = "/v1/chat/completions"
    before = up.stats.paths[chats]
    response = await env.client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"task": "6 * 7?"}, headers=A
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "dependency_unavailable"
    assert up.stats.paths[chats] - before <= 1  # at most the first model call, no tool after it
    runs = await env.client.get(f"/api/v1/agents/{agent_id}/runs", headers=A)
    assert runs.json()["data"]["total"] == 0
