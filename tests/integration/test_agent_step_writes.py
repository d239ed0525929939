"""What an agent run and a chat turn cost the database, counted on PostgreSQL: a fixed number
of transactions whatever the number of model steps (the steps are written with the run's end,
not one transaction per record), and no connection checked out while the upstream answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from sqlalchemy import event

from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream, MockUpstreamApp
from tests.support.pgvector import fresh_database

A = auth("acme")


@dataclass
class Counts:
    transactions: int = 0
    statements: list[str] = field(default_factory=list)

    @property
    def writes(self) -> list[str]:
        return [s for s in self.statements if s.split()[0] in ("INSERT", "UPDATE", "DELETE")]


class WatchingUpstream(MockUpstreamApp):
    """The mock upstream, noting how many pooled database connections the platform has
    checked out each time it answers a chat request: after its latency (`latency_ms`), so a
    connection counted here was held across the wait for the model. (A run's start is written
    while its first model call is on its way, so at the request's arrival it may be in use.)"""

    def __init__(self) -> None:
        super().__init__()
        self.checked_out: list[int] = []
        self.pool: Any = None

    async def _chat(self, request: dict[str, Any], send: Any) -> None:
        self.checked_out.append(self.pool.checkedout())
        await super()._chat(request, send)


@pytest.fixture
async def env(
    tmp_path: Any, make_settings: Callable[..., Settings], postgres_url: str
) -> AsyncIterator[tuple[Platform, MockUpstream, WatchingUpstream]]:
    up = MockUpstream()
    watcher = up.app = WatchingUpstream()
    async with up, fresh_database(postgres_url, "faas_agent_writes") as url:
        routing = tmp_path / "models.yaml"
        routing.write_text(
            "models:\n"
            f"  - name: chat-default\n    deployments:\n      - provider: openai\n"
            f"        model: mock-model\n        api_base: {up.url}\n"
            "  - name: embed-default\n    kind: embedding\n    deployments:\n"
            "      - provider: hash\n"
        )
        settings = make_settings(gateway_models=routing, database_url=url)
        async with platform(settings, ["gateway", "cache", "rag", "prompt", "agent"]) as env:
            watcher.pool = env.runtime.db.engine.pool
            yield env, up, watcher
            await env.runtime.db.close()


@contextmanager
def counted(env: Platform) -> Iterator[Counts]:
    counts = Counts()
    engine = env.runtime.db.engine.sync_engine

    def on_begin(_conn: Any) -> None:
        counts.transactions += 1

    def on_statement(*args: Any) -> None:
        counts.statements.append(str(args[2]))

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield counts
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "before_cursor_execute", on_statement)


def calculator(expression: str, call_id: str) -> dict[str, Any]:
    arguments = orjson.dumps({"expression": expression}).decode()
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "calculator", "arguments": arguments},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


async def post(env: Platform, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = await env.client.post(path, json=body, headers=A)
    assert response.status_code == status, response.text
    return response.json()["data"]


async def test_a_run_costs_three_statements_however_many_steps_it_takes(
    env: tuple[Platform, MockUpstream, WatchingUpstream],
) -> None:
    platform_env, up, watcher = env
    agent = await post(
        platform_env, "/api/v1/agents", {"name": "calc", "tools": ["calculator"]}, status=201
    )
    path = f"/api/v1/agents/{agent['id']}/execute"
    await post(platform_env, path, {"task": "warm up"})

    up.control(latency_ms=50)
    with counted(platform_env) as one_step:
        run = await post(platform_env, path, {"task": "say hi"})
    assert [s["type"] for s in run["steps"]] == ["model"]

    up.control(script=[calculator("17 * 3", "c1"), calculator("51 + 2", "c2")])
    watcher.checked_out.clear()
    with counted(platform_env) as three_steps:
        run = await post(platform_env, path, {"task": "what is 17 * 3 + 2?"})
    assert [s["type"] for s in run["steps"]] == ["model", "tool", "model", "tool", "model"]

    for counts in (one_step, three_steps):
        # The agent (read), the run's start (INSERT) and its end (one UPDATE, steps included):
        # three statements, each a transaction by itself (autocommit: no BEGIN, no COMMIT, and
        # no SET LOCAL, so each is one round trip).
        assert counts.transactions == 3, counts.statements
        assert [s.split()[0] for s in counts.statements] == ["SELECT", "INSERT", "UPDATE"]
        assert [w.split()[0:3] for w in counts.writes] == [
            ["INSERT", "INTO", "agent_runs"],
            ["UPDATE", "agent_runs", "SET"],
        ]
    assert watcher.checked_out == [0, 0, 0]  # no connection held while the model answers

    stored = await platform_env.client.get(
        f"/api/v1/agents/{agent['id']}/runs/{run['id']}", headers=A
    )
    assert stored.json()["data"]["steps"] == run["steps"]
    assert stored.json()["data"]["status"] == "completed"


async def test_a_chat_turn_writes_its_run_and_messages_in_two_transactions(
    env: tuple[Platform, MockUpstream, WatchingUpstream],
) -> None:
    platform_env, up, watcher = env
    agent = await post(platform_env, "/api/v1/agents", {"name": "chat", "tools": []}, status=201)
    path = f"/api/v1/agents/{agent['id']}/chat"
    await post(platform_env, path, {"message": "warm up"})
    up.control(latency_ms=50)

    watcher.checked_out.clear()
    with counted(platform_env) as first:
        session_id = (await post(platform_env, path, {"message": "hello"}))["session_id"]
    with counted(platform_env) as second:
        await post(platform_env, path, {"message": "again", "session_id": session_id})

    # First turn: agent (read), run start + new session, run end + messages + session touch.
    assert first.transactions == 3, first.statements
    assert len(first.writes) == 5  # run, session, run update, messages (one INSERT), session
    # Second turn: one more read, for the session and its history window together.
    assert second.transactions == 4, second.statements
    assert len(second.writes) == 4
    inserts = [w for w in second.writes if w.startswith("INSERT INTO agent_messages")]
    assert len(inserts) == 1  # the turn's two messages in one statement
    assert watcher.checked_out == [0, 0]

    history = await platform_env.client.get(
        f"/api/v1/agents/{agent['id']}/sessions/{session_id}", headers=A
    )
    assert [(m["role"], m.get("content")) for m in history.json()["data"]] == [
        ("user", "hello"),
        ("assistant", "Hello from the mock upstream."),
        ("user", "again"),
        ("assistant", "Hello from the mock upstream."),
    ]
