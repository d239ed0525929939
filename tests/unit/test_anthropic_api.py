"""`/v1/messages` through the real app with the official `anthropic` SDK (AsyncAnthropic over
the app's ASGI transport): messages, streams, the tools round trip with the mock model, errors
as the SDK's exception types, count_tokens, usage events — and the `anthropic` provider behind
the OpenAI SDK, against the mock upstream's Anthropic endpoint over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from faas.shared.config import Settings
from tests.conftest import auth, token_for
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import REPLY, MockUpstream

NOW = datetime(2026, 12, 15, 12, 0, 20, tzinfo=UTC).timestamp()
ADMIN = auth("ops", platform_admin=True)
HI: Any = [{"role": "user", "content": "hi"}]
CALCULATOR = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression",
    "input_schema": {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
}


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as up:
        yield up


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], upstream: MockUpstream
) -> AsyncIterator[GatewayEnv]:
    claude = {
        "provider": "anthropic",
        "model": "mock-claude",
        "api_base": upstream.url,
        "api_key": "sk-ant-up",
        "timeout_s": 5,
    }
    openai_up = {"provider": "openai", "model": "mock-model", "api_base": upstream.url}
    table = routing(
        {"name": "mock", "deployments": [{"provider": "mock", "model": "faas-mock"}]},
        {"name": "chat", "deployments": [openai_up | {"api_key": "sk-up", "timeout_s": 5}]},
        {"name": "claude", "deployments": [claude]},
        {"name": "embed", "kind": "embedding", "deployments": [{"provider": "hash"}]},
    )
    async with gateway_env(make_settings(), table, clock=lambda: NOW) as gateway:
        yield gateway


def sdk(env: GatewayEnv, tenant: str = "acme", **kwargs: Any) -> anthropic.AsyncAnthropic:
    transport = httpx2.ASGITransport(app=env.app)
    return anthropic.AsyncAnthropic(
        base_url="http://gw.test",
        api_key=kwargs.pop("api_key", None) or token_for(tenant),
        http_client=httpx2.AsyncClient(transport=transport, base_url="http://gw.test"),
        max_retries=0,
        **kwargs,
    )


async def usage_events(env: GatewayEnv, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        if len(env.events) >= count:
            break
        await asyncio.sleep(0.01)
    return env.events


async def test_messages_create_answers_in_anthropic_shape(env: GatewayEnv) -> None:
    client = sdk(env)
    message = await client.messages.create(
        model="chat",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hi"}],
        metadata={"user_id": "u-42"},
    )
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "chat"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == REPLY
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 7)
    events = await usage_events(env, 1)
    assert events[-1]["data"]["operation"] == "messages"
    assert events[-1]["data"]["model"] == "chat"


async def test_the_request_reaches_an_openai_upstream_translated(
    env: GatewayEnv, upstream: MockUpstream
) -> None:
    client = sdk(env)
    await client.messages.create(
        model="chat",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            }
        ],
        stop_sequences=["END"],
        extra_body={"temperature": 0.5},  # this SDK release has no sampling parameters
        metadata={"user_id": "u-42"},
    )
    sent = upstream.stats.last_body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x.test/a.png"},
    }
    assert sent["stop"] == ["END"] and sent["max_tokens"] == 64
    assert sent["temperature"] == 0.5 and sent["user"] == "u-42"


async def test_streaming_gives_text_and_the_final_message(env: GatewayEnv) -> None:
    client = sdk(env)
    async with client.messages.stream(
        model="chat", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        parts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(parts) == REPLY and len(parts) > 2
    assert final.content[0].text == REPLY
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 7)
    events = await usage_events(env, 1)
    assert events[-1]["data"]["operation"] == "messages"
    assert events[-1]["data"]["stream"] is True


async def test_raw_stream_has_anthropic_event_order(env: GatewayEnv) -> None:
    response = await env.client.post(
        "/v1/messages",
        json={
            "model": "chat",
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-api-key": token_for("acme"), "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    kinds = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert set(kinds[3:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_tools_round_trip_with_the_mock_model(env: GatewayEnv) -> None:
    client = sdk(env)
    question = {"role": "user", "content": "What is 17 * 23?"}
    first = await client.messages.create(
        model="mock", max_tokens=256, tools=[CALCULATOR], messages=[question]
    )
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "calculator"
    assert call.input == {"expression": "17 * 23"}
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "391"}
    second = await client.messages.create(
        model="mock",
        max_tokens=256,
        tools=[CALCULATOR],
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [result]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert "391" in second.content[0].text


async def test_a_streamed_tool_call_arrives_as_input_json(env: GatewayEnv) -> None:
    client = sdk(env)
    async with client.messages.stream(
        model="mock",
        max_tokens=256,
        tools=[CALCULATOR],
        tool_choice={"type": "tool", "name": "calculator"},
        messages=[{"role": "user", "content": "What is 6 * 7?"}],
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[-1].type == "tool_use"
    assert final.content[-1].input == {"expression": "6 * 7"}


async def test_errors_are_the_sdks_exception_types(env: GatewayEnv) -> None:
    hi = [{"role": "user", "content": "hi"}]
    async with sdk(env, api_key="not-a-token") as stranger:
        with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
            await stranger.messages.create(model="chat", max_tokens=8, messages=hi)
    assert unauthenticated.value.body["error"]["type"] == "authentication_error"
    client = sdk(env)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        await client.messages.create(model="no-such-model", max_tokens=8, messages=hi)
    assert unknown.value.body["type"] == "error"
    assert "no-such-model" in unknown.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as invalid:
        await client.messages.create(model="chat", max_tokens=0, messages=hi)
    assert invalid.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(model="embed", max_tokens=8, messages=hi)

    saved = await env.client.put("/api/v1/gateway/limits/acme", json={"rpm": 1}, headers=ADMIN)
    assert saved.status_code == 200, saved.text
    await client.messages.create(model="chat", max_tokens=8, messages=hi)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model="chat", max_tokens=8, messages=hi)
    assert limited.value.status_code == 429
    assert limited.value.body["error"]["type"] == "rate_limit_error"


async def test_body_errors_take_anthropics_shape_with_status_400(env: GatewayEnv) -> None:
    headers = {"x-api-key": token_for("acme")}
    cases: list[Any] = [
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},  # no max_tokens
        {"model": "chat", "max_tokens": 8, "messages": []},
        {"model": "chat", "max_tokens": 8, "messages": [{"role": "user", "content": [{}]}]},
        {
            "model": "chat",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}],
        },
        {
            "model": "chat",
            "max_tokens": 8,
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "hi"}],
        },
        [1, 2],
    ]
    for body in cases:
        response = await env.client.post("/v1/messages", json=body, headers=headers)
        assert response.status_code == 400, (body, response.text)
        payload = response.json()
        assert payload["type"] == "error", payload
        assert payload["error"]["type"] == "invalid_request_error"
    wrong_method = await env.client.get("/v1/messages", headers=headers)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["type"] == "error"


async def test_count_tokens(env: GatewayEnv) -> None:
    client = sdk(env)
    short = await client.messages.count_tokens(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    longer = await client.messages.count_tokens(
        model="chat",
        system="You answer questions about arithmetic.",
        tools=[CALCULATOR],
        messages=[{"role": "user", "content": "What is 17 * 23? " * 20}],
    )
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(
            model="nope", messages=[{"role": "user", "content": "hi"}]
        )


async def test_bearer_and_x_api_key_are_the_same_token(env: GatewayEnv) -> None:
    body = {"model": "chat", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    by_key = await env.client.post("/v1/messages", json=body, headers={"x-api-key": token_for("a")})
    by_bearer = await env.client.post("/v1/messages", json=body, headers=auth("a"))
    assert by_key.status_code == by_bearer.status_code == 200
    assert by_key.headers["request-id"]
    missing = await env.client.post("/v1/messages", json=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"


# -- the `anthropic` provider: an Anthropic upstream behind OpenAI clients ------------------


def openai_sdk(env: GatewayEnv) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=env.app)
    return openai.AsyncOpenAI(
        base_url="http://gw.test/v1",
        api_key=token_for("acme"),
        http_client=httpx.AsyncClient(transport=transport, base_url="http://gw.test"),
        max_retries=0,
    )


async def test_openai_client_through_the_anthropic_provider(
    env: GatewayEnv, upstream: MockUpstream
) -> None:
    client = openai_sdk(env)
    reply = await client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        max_tokens=50,
        stop=["mock"],
    )
    sent = upstream.stats.last_body
    assert upstream.stats.paths["/v1/messages"] == 1
    assert upstream.stats.last_headers["x-api-key"] == "sk-ant-up"
    assert upstream.stats.last_headers["anthropic-version"] == "2023-06-01"
    assert sent["system"] == "Be brief." and sent["stop_sequences"] == ["mock"]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert reply.choices[0].message.content == "Hello from the "
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 10

    stream = await client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == REPLY and len(parts) > 2


async def test_tools_through_the_anthropic_provider(
    env: GatewayEnv, upstream: MockUpstream
) -> None:
    upstream.control(tool_calls=True)
    client = openai_sdk(env)
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    ask = {"role": "user", "content": "weather in Paris?"}
    first = await client.chat.completions.create(
        model="claude", messages=[ask], tools=tools, tool_choice="required"
    )
    assert upstream.stats.last_body["tool_choice"] == {"type": "any"}
    assert upstream.stats.last_body["tools"][0]["input_schema"]["properties"] == {
        "city": {"type": "string"}
    }
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"Paris"}'

    streamed = await client.chat.completions.create(
        model="claude", messages=[ask], tools=tools, stream=True
    )
    arguments = ""
    async for chunk in streamed:
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            arguments += piece.function.arguments or ""
    assert arguments == '{"city":"Paris"}'

    answer = await client.chat.completions.create(
        model="claude",
        tools=tools,
        messages=[
            ask,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    sent = upstream.stats.last_body["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use"
    assert sent[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_mock_1",
        "content": "sunny",
    }
    assert answer.choices[0].message.content == "The tool said: sunny"


async def test_anthropic_upstream_failures_are_classified(
    env: GatewayEnv, upstream: MockUpstream
) -> None:
    client = openai_sdk(env)
    hi: Any = [{"role": "user", "content": "hi"}]
    upstream.control(fail_next=[{"status": 400}])
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="claude", messages=hi)
    upstream.control(fail_next=[{"status": 429, "retry_after": 1}])
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="claude", messages=hi)
    upstream.control(break_stream_after=4)
    stream = await client.chat.completions.create(model="claude", messages=hi, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_a_failure_after_the_first_token_is_an_error_event(
    env: GatewayEnv, upstream: MockUpstream
) -> None:
    upstream.control(break_stream_after=3)
    client = sdk(env)
    async with client.messages.stream(model="chat", max_tokens=64, messages=HI) as stream:
        with pytest.raises(anthropic.APIStatusError) as failed:
            async for _ in stream.text_stream:
                pass
    assert failed.value.body["error"]["type"] == "api_error"
    assert "mid-stream" in failed.value.body["error"]["message"]
    events = await usage_events(env, 1)
    assert events[-1]["data"]["status"] == "partial"


async def test_an_idempotency_key_replays_the_answer(
    env: GatewayEnv, upstream: MockUpstream
) -> None:
    body = {"model": "chat", "max_tokens": 8, "messages": HI}
    headers = {"x-api-key": token_for("acme"), "idempotency-key": "k-1"}
    first = await env.client.post("/v1/messages", json=body, headers=headers)
    again = await env.client.post("/v1/messages", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["content"] == first.json()["content"]
    assert upstream.stats.paths["/v1/chat/completions"] == 1


async def test_anthropic_client_to_an_anthropic_upstream_keeps_the_stop_sequence(
    env: GatewayEnv, upstream: MockUpstream
) -> None:
    client = sdk(env)
    message = await client.messages.create(
        model="claude", max_tokens=64, stop_sequences=["mock"], messages=HI
    )
    assert upstream.stats.last_body["stop_sequences"] == ["mock"]
    assert message.content[0].text == "Hello from the "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "mock")
    async with client.messages.stream(
        model="claude", max_tokens=64, stop_sequences=["mock"], messages=HI
    ) as stream:
        final = await stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "mock")
    assert final.usage.input_tokens == 10

    upstream.control(tool_calls=True)
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    async with client.messages.stream(
        model="claude", max_tokens=64, tools=[tool], messages=HI
    ) as stream:
        called = await stream.get_final_message()
    assert called.stop_reason == "tool_use"
    assert called.content[-1].type == "tool_use"
    assert called.content[-1].input == {"city": "Paris"}
