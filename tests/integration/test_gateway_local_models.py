"""The default routing with the real local models behind the gateway API: SmolLM2-135M through
llama.cpp for `chat-default`, all-MiniLM-L6-v2 for `embed-default`. CI installs both; elsewhere
these tests skip and say what is missing (under FAAS_TEST_REQUIRE_SERVICES=1 they fail)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import numpy as np
import orjson
import pytest

from faas.shared.config import Settings
from tests.conftest import INSTALL_LLAMACPP, INSTALL_MINILM, auth, require_extra
from tests.gateway_app import GatewayEnv, gateway_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = auth("acme")
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def local_chat() -> None:
    require_extra("llamacpp", INSTALL_LLAMACPP)


@pytest.fixture(scope="module")
def local_embeddings() -> None:
    require_extra("minilm", INSTALL_MINILM)


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[GatewayEnv]:
    async with gateway_env(make_settings()) as gateway:  # no table: the built-in defaults
        yield gateway


async def test_chat_default_is_served_by_llamacpp(local_chat: None, env: GatewayEnv) -> None:
    models = (await env.client.get("/api/v1/gateway/models", headers=A)).json()["data"]
    assert models["source"] == "built-in defaults"
    chat = next(m for m in models["models"] if m["name"] == "chat-default")
    assert [d["provider"] for d in chat["deployments"]] == ["llamacpp"]

    response = await env.client.post(
        "/api/v1/gateway/generate",
        json={"prompt": "Say hello.", "max_tokens": MAX_TOKENS, "temperature": 0.2},
        headers=A,
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["model"] == "chat-default" and data["deployment"].startswith("llamacpp:")
    assert data["text"] and data["text"].strip()
    usage = data["usage"]
    assert usage["usage_source"] == "provider"
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    body = {
        "model": "chat-default",
        "messages": [{"role": "user", "content": "Count to three."}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with env.client.stream("POST", "/v1/chat/completions", json=body, headers=A) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        payloads = [line[6:] async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert not any("error" in c for c in chunks)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert text.strip()
    finishes = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
    assert finishes[-1] in ("stop", "length")


async def test_embed_default_is_minilm_with_meaningful_unit_vectors(
    local_embeddings: None, env: GatewayEnv
) -> None:
    models = (await env.client.get("/api/v1/gateway/models", headers=A)).json()["data"]
    embed = next(m for m in models["models"] if m["name"] == "embed-default")
    assert [d["provider"] for d in embed["deployments"]] == ["minilm"]

    texts = [
        "The cat sat on the mat.",
        "A kitten was sitting on the rug.",
        "Quarterly revenue grew by eight percent.",
    ]
    response = await env.client.post(
        "/v1/embeddings", json={"model": "embed-default", "input": texts}, headers=A
    )
    assert response.status_code == 200, response.text
    vectors = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float64)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    paraphrase = float(vectors[0] @ vectors[1])
    unrelated = float(vectors[0] @ vectors[2])
    assert paraphrase > unrelated + 0.2, (paraphrase, unrelated)
