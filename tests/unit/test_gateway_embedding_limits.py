"""Embeddings input limits (OpenAI's: 2048 inputs, 8192 tokens each, 300,000 in all), refused
before any work; large-but-allowed embeddings and long prompts computed off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, ParamSpec, TypeVar

import httpx
import pytest

from faas.services.gateway_service import admission, inputs
from faas.services.gateway_service.providers import hash as hash_provider
from faas.shared.config import Settings
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import MockUpstream

A = auth("acme")
OPENAI = "/v1/embeddings"
NATIVE = "/api/v1/gateway/embeddings"
P = ParamSpec("P")
T = TypeVar("T")


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as server:
        yield server


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[GatewayEnv]:
    upstream = {"provider": "openai", "model": "m", "api_base": up.url, "api_key": "sk-up"}
    table = routing(
        {"name": "embed", "kind": "embedding", "deployments": [upstream]},
        {"name": "local", "kind": "embedding", "deployments": [{"provider": "hash"}]},
        {"name": "small", "deployments": [{"provider": "mock", "context_window": 50}]},
    )
    async with gateway_env(make_settings(), table) as gateway:
        yield gateway


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_more_than_2048_inputs_is_422_naming_input(env: GatewayEnv, up: MockUpstream) -> None:
    body = {"model": "embed", "input": ["a"] * 2049}
    error = openai_error(await env.client.post(OPENAI, json=body, headers=A), 422)
    assert error["param"] == "input"
    native = await env.client.post(
        NATIVE, json={"model": "embed", "texts": ["a"] * 2049}, headers=A
    )
    assert native.status_code == 422
    assert native.json()["error"]["details"]["errors"][0]["loc"] == ["body", "texts"]
    assert up.stats.requests == 0


async def test_an_input_too_long_to_count_is_413_before_any_work(
    env: GatewayEnv, up: MockUpstream
) -> None:
    body = {"model": "embed", "input": ["fine", "x" * (inputs.MAX_EMBED_ITEM_CHARS + 1)]}
    error = openai_error(await env.client.post(OPENAI, json=body, headers=A), 413)
    assert error["param"] == "input" and "input 1" in error["message"]
    assert up.stats.requests == 0


async def test_an_input_over_8192_tokens_is_413_naming_input(
    env: GatewayEnv, up: MockUpstream
) -> None:
    body = {"model": "embed", "input": "x " * 9000}  # 18,000 characters, 9,001 tokens
    error = openai_error(await env.client.post(OPENAI, json=body, headers=A), 413)
    assert error["param"] == "input" and "9001 tokens" in error["message"]
    native = await env.client.post(
        NATIVE, json={"model": "embed", "texts": ["ok", "x " * 9000]}, headers=A
    )
    assert native.status_code == 413
    details = native.json()["error"]["details"]
    assert details["field"] == "texts" and details["index"] == 1 and details["tokens"] == 9001
    assert up.stats.requests == 0


async def test_exactly_8192_tokens_is_served(env: GatewayEnv) -> None:
    response = await env.client.post(
        OPENAI, json={"model": "local", "input": " x" * 8192}, headers=A
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 8192


async def test_inputs_over_300000_tokens_in_all_are_413(env: GatewayEnv, up: MockUpstream) -> None:
    body = {"model": "embed", "input": [" x" * 8000] * 38}  # 304,000 tokens
    error = openai_error(await env.client.post(OPENAI, json=body, headers=A), 413)
    assert error["param"] == "input" and "304000 tokens" in error["message"]
    too_many_characters = {"model": "embed", "input": ["x" * 60_000] * 41}
    error = openai_error(await env.client.post(OPENAI, json=too_many_characters, headers=A), 413)
    assert error["param"] == "input" and "characters" in error["message"]
    assert up.stats.requests == 0


class LoopWitness:
    """Wraps CPU-heavy functions so that each, once started, waits until the event loop has
    answered a `/livez`: run in a thread it soon goes on; run on the loop it would wait for
    itself, so the wait gives up and is recorded as False."""

    def __init__(self) -> None:
        self.beat = threading.Event()
        self.waits: list[bool] = []

    def gate(self, fn: Callable[P, T]) -> Callable[P, T]:
        def gated(*args: P.args, **kwargs: P.kwargs) -> T:
            self.beat.clear()
            self.waits.append(self.beat.wait(timeout=10))
            return fn(*args, **kwargs)

        return gated

    async def heartbeat(self, client: httpx.AsyncClient, stop: asyncio.Event) -> int:
        beats = 0
        while not stop.is_set():
            assert (await client.get("/livez")).status_code == 200
            beats += 1
            self.beat.set()
            await asyncio.sleep(0.001)
        return beats


async def test_a_large_allowed_request_leaves_the_loop_serving_livez(
    env: GatewayEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = LoopWitness()
    monkeypatch.setattr(inputs, "count_item_tokens", witness.gate(inputs.count_item_tokens))
    monkeypatch.setattr(hash_provider, "embed_texts", witness.gate(hash_provider.embed_texts))
    texts = ["lorem ipsum dolor sit amet " * 150] * 256  # 1 MB, 192,512 tokens: allowed
    stop = asyncio.Event()
    heartbeat = asyncio.create_task(witness.heartbeat(env.client, stop))
    try:
        response = await env.client.post(OPENAI, json={"model": "local", "input": texts}, headers=A)
    finally:
        stop.set()
        beats = await heartbeat
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 256
    assert witness.waits == [True, True]  # counting, then hashing: both while /livez answered
    assert beats >= 2


async def test_small_requests_stay_on_the_loop(
    env: GatewayEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []

    def spy(texts: list[str], dimensions: int = 384) -> Any:
        threads.append(threading.current_thread().name)
        return original(texts, dimensions)

    original = hash_provider.embed_texts
    monkeypatch.setattr(hash_provider, "embed_texts", spy)
    response = await env.client.post(OPENAI, json={"model": "local", "input": "hi"}, headers=A)
    assert response.status_code == 200
    assert threads == [threading.main_thread().name]


async def test_counting_a_long_prompt_leaves_the_loop_serving_livez(
    env: GatewayEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = LoopWitness()
    monkeypatch.setattr(
        admission, "exact_prompt_tokens", witness.gate(admission.exact_prompt_tokens)
    )
    body = {"model": "small", "messages": [{"role": "user", "content": "word " * 20_000}]}
    stop = asyncio.Event()
    heartbeat = asyncio.create_task(witness.heartbeat(env.client, stop))
    try:
        response = await env.client.post("/v1/chat/completions", json=body, headers=A)
    finally:
        stop.set()
        await heartbeat
    assert response.status_code == 413  # counted exactly (off the loop): over the window
    assert witness.waits == [True]
