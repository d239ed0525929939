"""A retry with the same `Idempotency-Key` while the first request is still at the upstream is
409 and never reaches the upstream; once the first is done, the retry replays its answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.shared.config import Settings
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.held_upstream import HeldUpstreamApp, held_upstream

A = auth("acme")
# Bounds a test that would otherwise hang on a regression; never reached when the code works.
GIVE_UP_S = 30


@pytest.fixture
async def held(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[GatewayEnv, HeldUpstreamApp]]:
    async with held_upstream() as (up, app):
        deployment = {
            "provider": "openai",
            "model": "mock-model",
            "api_base": up.url,
            "api_key": "sk-up",
            "timeout_s": 120,
        }
        table = routing({"name": "chat", "deployments": [deployment]})
        async with gateway_env(make_settings(), table) as env:
            yield env, app


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {"model": "chat", "messages": [{"role": "user", "content": "pay"}]},
        ),
        ("/api/v1/gateway/generate", {"model": "chat", "prompt": "pay"}),
    ],
)
async def test_a_repeated_idempotency_key_still_in_flight_is_409(
    held: tuple[GatewayEnv, HeldUpstreamApp], path: str, body: dict[str, Any]
) -> None:
    env, app = held
    headers = A | {"Idempotency-Key": "order-8"}
    first = asyncio.create_task(env.client.post(path, json=body, headers=headers))
    try:
        await asyncio.wait_for(app.arrived.wait(), GIVE_UP_S)
        retried = await asyncio.wait_for(
            env.client.post(path, json=body, headers=headers), GIVE_UP_S
        )
    finally:
        app.release.set()
    assert retried.status_code == 409, retried.text
    assert retried.json()["error"]["code"] == "conflict"
    assert retried.headers["retry-after"] == "1"
    answered = await first
    assert answered.status_code == 200, answered.text
    replayed = await env.client.post(path, json=body, headers=headers)
    assert replayed.status_code == 200
    assert replayed.headers["idempotent-replayed"] == "true"
    assert "Hello from the mock upstream." in replayed.text
    assert app.held == 1  # neither the 409 nor the replay reached the upstream
