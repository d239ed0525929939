"""Many chat sessions at once on SQLite: every turn answered (never a 5xx), and recorded exactly
once (its run, its two messages, in order). A database that cannot hand out a connection in
time is a 503 with Retry-After, never a 500."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from faas.services.agent_service.tables import MessageRow, RunRow
from faas.shared.config import Settings
from faas.shared.database import Database
from faas.shared.exceptions import DependencyUnavailable
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream

A = auth("acme")
SESSIONS = 200


@pytest.fixture
async def env(tmp_path: Path, make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    async with MockUpstream(latency_ms=5) as up:
        routing = tmp_path / "models.yaml"
        routing.write_text(
            "models:\n"
            f"  - name: chat-default\n    deployments:\n      - provider: openai\n"
            f"        model: mock-model\n        api_base: {up.url}\n"
            "  - name: embed-default\n    kind: embedding\n    deployments:\n"
            "      - provider: hash\n"
        )
        settings = make_settings(gateway_models=routing)
        async with platform(settings, ["gateway", "cache", "rag", "prompt", "agent"]) as env:
            yield env


async def test_200_sessions_of_two_turns_at_once_are_all_answered_and_recorded_once(
    env: Platform,
) -> None:
    assert env.runtime.db.is_sqlite
    created = await env.client.post("/api/v1/agents", json={"name": "c", "tools": []}, headers=A)
    agent_id = created.json()["data"]["id"]
    path = f"/api/v1/agents/{agent_id}/chat"
    statuses: Counter[int] = Counter()

    async def conversation(i: int) -> str:
        first = await env.client.post(path, json={"message": f"u{i} t1"}, headers=A)
        statuses[first.status_code] += 1
        assert first.status_code == 200, first.text
        session_id = str(first.json()["data"]["session_id"])
        body = {"message": f"u{i} t2", "session_id": session_id}
        second = await env.client.post(path, json=body, headers=A)
        statuses[second.status_code] += 1
        assert second.status_code == 200, second.text
        return session_id

    session_ids = await asyncio.gather(*(conversation(i) for i in range(SESSIONS)))

    assert statuses == {200: 2 * SESSIONS}
    assert len(set(session_ids)) == SESSIONS
    async with env.runtime.db.session() as session:
        runs = (await session.execute(select(RunRow.session_id, RunRow.status, RunRow.input))).all()
        messages = (
            await session.execute(
                select(MessageRow.session_id, MessageRow.ordinal, MessageRow.message)
            )
        ).all()
    assert len(runs) == 2 * SESSIONS
    assert {status for _, status, _ in runs} == {"completed"}
    assert Counter(sid for sid, _, _ in runs) == dict.fromkeys(session_ids, 2)
    by_session: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for sid, ordinal, message in messages:
        by_session.setdefault(sid, []).append((ordinal, message))
    for i, sid in enumerate(session_ids):
        stored = sorted(by_session[sid], key=lambda row: row[0])
        assert [ordinal for ordinal, _ in stored] == [1, 2, 3, 4]
        assert [(m["role"], m["content"]) for _, m in stored if m["role"] == "user"] == [
            ("user", f"u{i} t1"),
            ("user", f"u{i} t2"),
        ]
        assert [m["role"] for _, m in stored] == ["user", "assistant", "user", "assistant"]


async def test_no_free_connection_in_time_is_503_with_retry_after(tmp_path: Path) -> None:
    db = Database(
        f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}", pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    try:
        async with db.engine.connect():  # the pool's only connection, held
            with pytest.raises(DependencyUnavailable) as caught:
                async with db.session() as session:
                    await session.execute(select(1))
        assert caught.value.status_code == 503
        assert caught.value.headers["Retry-After"]
        async with db.session() as session:  # free again: served
            await session.execute(select(1))
    finally:
        await db.close()


async def test_sqlite_writers_of_a_process_take_turns_and_a_long_wait_is_503(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}", pool_timeout=0.3)
    entered: list[str] = []

    async def writer(name: str) -> None:
        async with db.session(writes=True) as session:
            entered.append(name)
            await session.execute(select(1))

    try:
        async with db.session(writes=True):
            second = asyncio.create_task(writer("second"))
            await asyncio.sleep(0.05)
            assert entered == []  # waits for its turn, holding no connection
            async with db.session() as reader:  # readers never wait
                await reader.execute(select(1))
        await second
        assert entered == ["second"]

        async with db.session(writes=True):
            with pytest.raises(DependencyUnavailable) as caught:
                await writer("late")
        assert caught.value.status_code == 503
        assert caught.value.headers["Retry-After"]
    finally:
        await db.close()
