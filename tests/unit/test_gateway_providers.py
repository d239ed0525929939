"""Gateway providers against real servers and real models (skipped when an extra is missing)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest

from faas.services.gateway_service.providers import (
    build_chat_provider,
    build_embedding_provider,
    provider_available,
)
from faas.services.gateway_service.providers.base import (
    ChatProvider,
    ChatRequest,
    EmbeddingProvider,
    MissingExtra,
    ProviderError,
    StreamEvent,
)
from faas.services.gateway_service.providers.hash import HashEmbeddingProvider, embed_texts
from faas.services.gateway_service.providers.mock import MockProvider
from faas.services.gateway_service.providers.openai import OpenAICompatibleProvider, SSEDecoder
from faas.services.gateway_service.routing_table import Deployment
from faas.shared import tokens as tok
from tests.conftest import INSTALL_LLAMACPP, INSTALL_MINILM, require_extra
from tests.support.mock_upstream import MockUpstream

KEY = "sk-test-secret-key-123456"
HELLO = ChatRequest(messages=[{"role": "user", "content": "hi"}])
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as up:
        yield up


@pytest.fixture
async def openai() -> AsyncIterator[OpenAICompatibleProvider]:
    provider = OpenAICompatibleProvider()
    yield provider
    await provider.aclose()


def deployment_for(up: MockUpstream | str, **overrides: Any) -> Deployment:
    base = up if isinstance(up, str) else up.url
    values: dict[str, Any] = {"provider": "openai", "model": "m1", "api_base": base}
    values |= {"api_key": KEY, "timeout_s": 5, "headers": {"x-team": "qa"}} | overrides
    return Deployment(**values)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def collect(provider: ChatProvider, request: ChatRequest, d: Deployment) -> list[StreamEvent]:
    return [event async for event in provider.stream(request, d)]


def content_of(events: list[StreamEvent]) -> str:
    text = ""
    for event in events:
        for choice in orjson.loads(event.data)["choices"]:
            text += choice["delta"].get("content") or ""
    return text


# --- SSE decoding -----------------------------------------------------------------------------


def test_sse_decoder_handles_any_split_and_both_separators() -> None:
    stream = (
        b": keep-alive comment\r\n\r\n"
        b'data: {"a":1}\r\n\r\n'
        b"event: message\nid: 7\n"
        b'data: {"b":\ndata: 2}\n\n'
        b'data:{"c":3}\n\n'
        b"data: [DONE]\n\n"
    )
    expected = [b'{"a":1}', b'{"b":\n2}', b'{"c":3}', b"[DONE]"]
    for cut in range(len(stream) + 1):
        for step in (1, 3, len(stream)):
            decoder = SSEDecoder()
            pieces = [stream[:cut]] + [stream[i : i + step] for i in range(cut, len(stream), step)]
            got = [payload for piece in pieces for payload in decoder.feed(piece)]
            assert got + decoder.close() == expected, (cut, step)


def test_sse_decoder_flushes_an_unterminated_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x":1}') == []
    assert decoder.close() == [b'{"x":1}']


# --- OpenAI-compatible provider against a real HTTP server ------------------------------------


async def test_openai_chat_passes_params_and_credentials(
    upstream: MockUpstream, openai: OpenAICompatibleProvider
) -> None:
    request = ChatRequest(messages=HELLO.messages, params={"temperature": 0.3, "model": "x"})
    result = await openai.chat(request, deployment_for(upstream))
    assert result.body["choices"][0]["message"]["content"] == "Hello from the mock upstream."
    assert result.usage is not None and result.usage.total_tokens == 17
    sent = upstream.stats.last_body
    assert sent["model"] == "m1" and sent["stream"] is False and sent["temperature"] == 0.3
    assert upstream.stats.last_headers["authorization"] == f"Bearer {KEY}"
    assert upstream.stats.last_headers["x-team"] == "qa"
    assert await openai.health(deployment_for(upstream))


async def test_openai_stream_forwards_upstream_bytes(
    upstream: MockUpstream, openai: OpenAICompatibleProvider
) -> None:
    upstream.control(stream_delay_ms=2)
    request = ChatRequest(messages=HELLO.messages, params={"stream_options": {"x": 1}})
    events = await collect(openai, request, deployment_for(upstream))
    assert [e.data for e in events] == upstream.stats.last_stream_payloads
    assert upstream.stats.last_body["stream_options"] == {"x": 1, "include_usage": True}
    assert content_of(events) == "Hello from the mock upstream."
    assert [e.has_content for e in events].count(True) == 5
    assert events[-2].finish_reason == "stop"
    assert events[-1].usage is not None and events[-1].usage.prompt_tokens == 10


async def test_openai_tool_calls_pass_through(
    upstream: MockUpstream, openai: OpenAICompatibleProvider
) -> None:
    upstream.control(tool_calls=True)
    request = ChatRequest(messages=HELLO.messages, params={"tools": TOOLS})
    result = await openai.chat(request, deployment_for(upstream))
    call = result.body["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": "{}"}
    assert upstream.stats.last_body["tools"] == TOOLS
    events = await collect(openai, request, deployment_for(upstream))
    assert any(e.has_content for e in events)
    assert events[-2].finish_reason == "tool_calls"


async def test_openai_embeddings_sorted_by_index(
    upstream: MockUpstream, openai: OpenAICompatibleProvider
) -> None:
    result = await openai.embed(["a", "b"], deployment_for(upstream))
    assert len(result.vectors) == 2 and len(result.vectors[0]) == 64
    assert upstream.stats.last_body == {"model": "m1", "input": ["a", "b"]}
    shuffled = {
        "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}],
        "model": "m1",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    upstream.control(fail_next=[{"status": 200, "body": shuffled}])
    result = await openai.embed(["a", "b"], deployment_for(upstream))
    assert result.vectors == [[1.0, 0.0], [0.0, 1.0]]
    assert result.usage is not None and result.usage.prompt_tokens == 2


async def test_openai_connect_refused(openai: OpenAICompatibleProvider) -> None:
    d = deployment_for(f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ProviderError) as caught:
        await openai.chat(HELLO, d)
    assert caught.value.kind == "connect" and caught.value.retryable
    assert not await openai.health(d)


async def test_openai_timeout(upstream: MockUpstream, openai: OpenAICompatibleProvider) -> None:
    upstream.control(latency_ms=400)
    with pytest.raises(ProviderError) as caught:
        await openai.chat(HELLO, deployment_for(upstream, timeout_s=0.1))
    assert caught.value.kind == "timeout"


async def test_openai_rate_limited_with_retry_after(
    upstream: MockUpstream, openai: OpenAICompatibleProvider
) -> None:
    upstream.control(fail_next=[{"status": 429, "retry_after": 7}, {"status": 429}])
    with pytest.raises(ProviderError) as caught:
        await openai.chat(HELLO, deployment_for(upstream))
    assert caught.value.kind == "rate_limited" and caught.value.retry_after_s == 7.0
    with pytest.raises(ProviderError) as caught:
        await collect(openai, HELLO, deployment_for(upstream))  # before the first event
    assert caught.value.kind == "rate_limited" and caught.value.status == 429


async def test_openai_auth_error_never_shows_the_key(
    upstream: MockUpstream, openai: OpenAICompatibleProvider
) -> None:
    upstream.control(require_api_key="the-right-key")
    d = deployment_for(upstream)
    with pytest.raises(ProviderError) as caught:
        await openai.chat(HELLO, d)
    error = caught.value
    assert error.kind == "auth" and error.status == 401 and not error.retryable
    assert d.id in error.message
    assert KEY not in f"{error} {error.message} {error.body} {error!r}"


async def test_openai_server_and_bad_request_errors(
    upstream: MockUpstream, openai: OpenAICompatibleProvider
) -> None:
    bad = {"error": {"message": "messages is required", "type": "invalid_request_error"}}
    upstream.control(
        fail_next=[
            {"status": 500},
            {"status": 400, "body": bad},
            {"status": 404},
            {"status": 200, "body": "this is not json"},
        ]
    )
    kinds = []
    for _ in range(4):
        with pytest.raises(ProviderError) as caught:
            await openai.chat(HELLO, deployment_for(upstream))
        kinds.append(caught.value.kind)
        if caught.value.status == 400:
            assert caught.value.body == bad
            assert "messages is required" in caught.value.message
    assert kinds == ["server", "bad_request", "bad_request", "server"]


async def test_openai_stream_broken_midway_raises(
    upstream: MockUpstream, openai: OpenAICompatibleProvider
) -> None:
    upstream.control(break_stream_after=3, stream_delay_ms=2)
    received = []
    with pytest.raises(ProviderError) as caught:
        async for event in openai.stream(HELLO, deployment_for(upstream)):
            received.append(event)
    assert caught.value.kind in ("server", "connect") and caught.value.retryable
    assert len(received) == 3


# --- mock provider ----------------------------------------------------------------------------

MOCK = Deployment(provider="mock", model="mock-1")


async def test_mock_is_deterministic_and_labelled() -> None:
    provider = MockProvider()
    request = ChatRequest(messages=[{"role": "user", "content": "What is the capital of France?"}])
    first, second = await provider.chat(request, MOCK), await provider.chat(request, MOCK)
    content = first.body["choices"][0]["message"]["content"]
    assert content == second.body["choices"][0]["message"]["content"]
    assert content.startswith("[mock] ") and "You said: What is the capital of France?" in content
    assert first.body["system_fingerprint"] == "faas-mock"
    assert first.usage is not None
    assert first.usage.prompt_tokens == tok.count_chat_tokens(request.messages)
    assert first.usage.completion_tokens == tok.count_tokens(content)


async def test_mock_max_tokens_json_and_tools() -> None:
    provider = MockProvider()
    text = "please tell me a long story about dragons " * 5
    limited = await provider.chat(
        ChatRequest([{"role": "user", "content": text}], {"max_tokens": 5}), MOCK
    )
    assert limited.body["choices"][0]["finish_reason"] == "length"
    assert tok.count_tokens(limited.body["choices"][0]["message"]["content"]) <= 5
    assert limited.usage is not None and limited.usage.completion_tokens == 5

    json_mode = {"response_format": {"type": "json_object"}}
    answer = await provider.chat(ChatRequest([{"role": "user", "content": "hi"}], json_mode), MOCK)
    parsed = json.loads(answer.body["choices"][0]["message"]["content"])
    assert isinstance(parsed, dict) and parsed["mock"] is True

    asking = [{"role": "user", "content": "Use get_weather for Paris"}]
    called = await provider.chat(ChatRequest(asking, {"tools": TOOLS}), MOCK)
    choice = called.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": "{}",
    }
    plain = await provider.chat(ChatRequest(HELLO.messages, {"tools": TOOLS}), MOCK)
    assert plain.body["choices"][0]["finish_reason"] == "stop"


async def test_mock_stream_chunk_format() -> None:
    provider = MockProvider()
    request = ChatRequest([{"role": "user", "content": "stream me something nice"}])
    whole = await provider.chat(request, MOCK)
    events = await collect(provider, request, MOCK)
    chunks = [orjson.loads(e.data) for e in events]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len([e for e in events if e.has_content]) >= 3
    assert content_of(events) == whole.body["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" == events[-2].finish_reason
    assert chunks[-1]["choices"] == [] and events[-1].usage == whole.usage
    tool_events = await collect(
        provider, ChatRequest([{"role": "user", "content": "get_weather?"}], {"tools": TOOLS}), MOCK
    )
    assert tool_events[-2].finish_reason == "tool_calls"
    assert any(e.has_content for e in tool_events)


# --- hash embeddings --------------------------------------------------------------------------


async def test_hash_embeddings_properties() -> None:
    provider = HashEmbeddingProvider()
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl sings.", ""]
    result = await provider.embed(texts, Deployment(provider="hash"))
    vectors = np.array(result.vectors)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert not vectors[3].any()
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.5 > sims[0, 2]
    again = await provider.embed(texts[:1], Deployment(provider="hash"))
    assert again.vectors[0] == result.vectors[0]
    small = await provider.embed(texts, Deployment(provider="hash", dimensions=64))
    assert len(small.vectors[0]) == 64
    assert result.usage is not None and result.usage.prompt_tokens > 0


def test_hash_embeddings_are_fast() -> None:
    texts = [f"short text number {i} about topic {i % 37}" for i in range(5000)]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        embed_texts(texts)
        best = min(best, time.perf_counter() - start)
    assert len(texts) / best >= 5000


# --- token counting ---------------------------------------------------------------------------


def test_token_counts() -> None:
    assert tok.count_tokens("hello world") == 2
    assert tok.count_tokens("") == 0
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!", "name": "bob"},
    ]
    # 3 priming + 2 x 3 per message + role tokens (1 + 1) + 6 + 2 content + name 1 + 1
    assert tok.count_chat_tokens(messages) == 3 + 3 + 1 + 6 + 3 + 1 + 2 + 1 + 1
    assert tok.count_chat_tokens(messages, TOOLS) > tok.count_chat_tokens(messages)
    assert tok.truncate_tokens("hello world and more", 2) == "hello world"
    assert tok.truncate_tokens("short", 10) == "short"


def test_tokenizer_refuses_a_tampered_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tok, "CL100K_SHA256", "0" * 64)
    with pytest.raises(tok.TokenizerUnavailable, match="sha256"):
        tok._load()


# --- registry ---------------------------------------------------------------------------------


def test_registry_builds_lazily() -> None:
    assert isinstance(build_chat_provider("mock"), ChatProvider)
    assert isinstance(build_chat_provider("openai"), ChatProvider)
    assert isinstance(build_embedding_provider("hash"), EmbeddingProvider)
    assert isinstance(build_embedding_provider("openai"), EmbeddingProvider)
    with pytest.raises(ValueError, match="unknown chat provider"):
        build_chat_provider("nope")
    assert provider_available("mock") and not provider_available("nope")
    if "litellm" not in sys.modules:
        provider_available("litellm")
        assert "litellm" not in sys.modules
    if not provider_available("litellm"):
        with pytest.raises(MissingExtra, match="faas\\[litellm\\]"):
            build_chat_provider("litellm")


# --- minilm (extra `embeddings`) --------------------------------------------------------------

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
]
# First 8 dims from transformers 5.24.0 + torch 2.13.0 (CPU) with sentence-transformers'
# pooling (mean over the mask, L2 norm); our numpy pass agrees to ~1.5e-7.
MINILM_REFERENCE = [
    [0.03324, 0.00441, -0.00628, 0.04838, -0.1387, -0.03362, 0.10113, -0.05438],
    [0.05252, 0.05524, -0.01119, -0.00575, -0.12721, -0.02225, 0.07688, 0.01319],
    [-0.03631, -0.03565, -0.02722, 0.03832, 0.07078, -0.01658, 0.06168, 0.05444],
]


async def test_minilm_matches_reference() -> None:
    require_extra("minilm", INSTALL_MINILM)
    provider = build_embedding_provider("minilm")
    padding = [f"filler sentence number {i}" for i in range(34)]
    result = await provider.embed(
        [*padding[:20], *SENTENCES, *padding[20:]], Deployment(provider="minilm")
    )
    vectors = np.array(result.vectors)
    assert vectors.shape == (37, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    ours = vectors[20:23]
    assert np.abs(ours[:, :8] - np.array(MINILM_REFERENCE)).max() < 1e-4
    assert ours[0] @ ours[1] > 0.7 > 0.0 > ours[0] @ ours[2]
    assert result.usage is not None and result.usage.prompt_tokens > 37


# --- llamacpp (extra `local`) -----------------------------------------------------------------

LOCAL = Deployment(provider="llamacpp", model="smollm2-135m")


async def test_llamacpp_chat_stream_and_queueing() -> None:
    require_extra("llamacpp", INSTALL_LLAMACPP)
    provider = build_chat_provider("llamacpp")
    try:
        request = ChatRequest(
            [{"role": "user", "content": "Say hello."}], {"max_tokens": 8, "temperature": 0}
        )
        result = await provider.chat(request, LOCAL)
        assert result.body["choices"][0]["message"]["content"]
        assert result.usage is not None and 0 < result.usage.completion_tokens <= 8
        events = await collect(provider, request, LOCAL)
        assert content_of(events).strip() == result.body["choices"][0]["message"]["content"].strip()
        assert events[-1].usage is not None
        assert events[-1].usage.completion_tokens == result.usage.completion_tokens
        both = await asyncio.gather(provider.chat(request, LOCAL), provider.chat(request, LOCAL))
        assert all(r.body["choices"][0]["message"]["content"] for r in both)
    finally:
        await provider.aclose()


# --- litellm (extra `litellm`) ----------------------------------------------------------------


async def test_litellm_against_mock_upstream(upstream: MockUpstream) -> None:
    require_extra("litellm", "pip install -c constraints.txt 'faas[litellm]'")
    provider = build_chat_provider("litellm")
    d = Deployment(provider="litellm", model="openai/m1", api_base=upstream.url, api_key=KEY)
    result = await provider.chat(HELLO, d)
    assert result.body["choices"][0]["message"]["content"] == "Hello from the mock upstream."
    events = await collect(provider, HELLO, d)
    assert content_of(events) == "Hello from the mock upstream."
    upstream.control(fail_next=[{"status": 429}])
    with pytest.raises(ProviderError) as caught:
        await provider.chat(HELLO, d)
    assert caught.value.kind == "rate_limited"
