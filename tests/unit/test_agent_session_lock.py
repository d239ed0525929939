"""A chat turn that cannot get its session's lock in time is 409, and nothing of it is stored;
the wait is a setting (120 s by default), so the test holds the first turn at the upstream
and sends the second with a short wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.services.agent_service.sessions import LOCK_WAIT_S
from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.held_upstream import HeldUpstreamApp, held_upstream

A = auth("acme")
# Bounds a test that would otherwise hang on a regression; never reached when the code works.
GIVE_UP_S = 30


@pytest.fixture
async def held(
    tmp_path: Any, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[Platform, HeldUpstreamApp]]:
    async with held_upstream() as (up, app):
        routing = tmp_path / "models.yaml"
        routing.write_text(
            "models:\n"
            f"  - name: chat-default\n    deployments:\n      - provider: openai\n"
            f"        model: mock-model\n        api_base: {up.url}\n"
            "  - name: embed-default\n    kind: embedding\n    deployments:\n"
            "      - provider: hash\n"
        )
        settings = make_settings(gateway_models=routing, agent_session_lock_wait_s=0.2)
        async with platform(settings, ["gateway", "cache", "rag", "prompt", "agent"]) as env:
            yield env, app


async def chat(env: Platform, agent_id: str, message: str, session_id: str | None) -> Any:
    body: dict[str, Any] = {"message": message}
    if session_id is not None:
        body["session_id"] = session_id
    return await env.client.post(f"/api/v1/agents/{agent_id}/chat", json=body, headers=A)


def test_the_session_lock_waits_120_seconds_by_default() -> None:
    assert LOCK_WAIT_S == 120
    assert Settings.model_fields["agent_session_lock_wait_s"].default == 120


async def test_a_turn_that_cannot_get_the_session_lock_in_time_is_409(
    held: tuple[Platform, HeldUpstreamApp],
) -> None:
    env, app = held
    created = await env.client.post("/api/v1/agents", json={"name": "h", "tools": []}, headers=A)
    agent_id = created.json()["data"]["id"]
    app.release.set()
    first = await chat(env, agent_id, "m0", None)
    assert first.status_code == 200, first.text
    session_id = first.json()["data"]["session_id"]

    app.release.clear()
    app.arrived.clear()
    in_flight = asyncio.create_task(chat(env, agent_id, "m1", session_id))
    try:
        await asyncio.wait_for(app.arrived.wait(), GIVE_UP_S)  # m1 holds the lock
        refused = await asyncio.wait_for(chat(env, agent_id, "m2", session_id), GIVE_UP_S)
    finally:
        app.release.set()
    assert refused.status_code == 409, refused.text
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "conflict"
    assert (await in_flight).status_code == 200

    history = await env.client.get(f"/api/v1/agents/{agent_id}/sessions/{session_id}", headers=A)
    users = [m["content"] for m in history.json()["data"] if m["role"] == "user"]
    assert users == ["m0", "m1"]
    after = await chat(env, agent_id, "m3", session_id)
    assert after.status_code == 200, after.text  # the lock was released
