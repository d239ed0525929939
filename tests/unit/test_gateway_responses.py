"""OpenAI's Responses API on the gateway, driven by the official `openai` client through the real
app, in front of a real OpenAI-compatible upstream (tests/support/mock_upstream.py): text,
function tools round trip, `previous_response_id` chains, streaming, the stored responses
(retrieve, delete, input items, tenant isolation, TTL, size bound) and the error shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from faas.services.gateway_service.accounting import CallRecord
from faas.services.gateway_service.responses_models import ResponsesBody
from faas.services.gateway_service.responses_stream import ResponseStream
from faas.shared.config import Settings
from faas.shared.exceptions import DependencyUnavailable
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import REPLY, MockUpstream

A = auth("acme")
B = auth("globex")
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_w1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ],
}


def table(up: MockUpstream) -> Any:
    deployment = {"provider": "openai", "model": "mock-model", "api_base": up.url}
    return routing(
        {"name": "chat", "deployments": [deployment | {"api_key": "sk-up", "timeout_s": 5}]},
        {"name": "local", "deployments": [{"provider": "mock", "model": "faas-mock"}]},
    )


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[GatewayEnv]:
    async with gateway_env(make_settings(), table(up)) as gateway:
        yield gateway


def client_for(env: GatewayEnv, headers: dict[str, str] = A) -> openai.AsyncOpenAI:
    token = headers["Authorization"].split()[1]
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.app))
    return openai.AsyncOpenAI(
        base_url="http://gw.test/v1", api_key=token, http_client=http, max_retries=0
    )


@pytest.fixture
async def client(env: GatewayEnv) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(env) as sdk:
        yield sdk


async def test_text_response_is_stored_listed_and_deleted(
    env: GatewayEnv, client: openai.AsyncOpenAI, up: MockUpstream
) -> None:
    response = await client.responses.create(
        model="chat", instructions="Be brief.", input="hi", metadata={"run": "1"}
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.output_text == REPLY
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 7)
    assert response.usage.total_tokens == 17
    assert response.instructions == "Be brief." and response.metadata == {"run": "1"}
    assert up.stats.last_body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]

    again = await client.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == REPLY
    items = await client.responses.input_items.list(response.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]
    assert items.data[0].content[0].text == "hi"

    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(response.id)


async def test_usage_events_name_the_responses_operation(
    env: GatewayEnv, client: openai.AsyncOpenAI
) -> None:
    await client.responses.create(model="chat", input="hi")
    for _ in range(200):
        if env.events:
            break
        await asyncio.sleep(0.01)
    data = env.events[-1]["data"]
    assert data["operation"] == "responses" and data["total_tokens"] == 17


async def test_function_tool_round_trip_with_function_call_output(
    client: openai.AsyncOpenAI, up: MockUpstream
) -> None:
    up.control(script=[CALL, {"content": "It is sunny in Paris."}])
    first = await client.responses.create(
        model="chat", input="Weather in Paris?", tools=[WEATHER], tool_choice="auto"
    )
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id == "call_w1" and call.arguments == '{"city": "Paris"}'
    sent = up.stats.last_body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {k: v for k, v in WEATHER.items() if k != "type"},
        }
    ]
    assert sent["tool_choice"] == "auto"

    second = await client.responses.create(
        model="chat",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == "It is sunny in Paris."
    assert up.stats.last_body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": CALL["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"},
    ]


async def test_previous_response_id_prepends_the_stored_conversation(
    client: openai.AsyncOpenAI, up: MockUpstream
) -> None:
    up.control(script=[{"content": "Nice to meet you, Ada."}, {"content": "Your name is Ada."}])
    first = await client.responses.create(model="chat", instructions="Old.", input="I am Ada.")
    second = await client.responses.create(
        model="chat", input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    # Instructions are not carried over, as OpenAI documents.
    assert up.stats.last_body["messages"] == [
        {"role": "user", "content": "I am Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    up.control(script=[{"content": "ok"}])
    await client.responses.create(model="chat", input="Thanks.", previous_response_id=second.id)
    assert len(up.stats.last_body["messages"]) == 5
    # The chain stays usable when an older response is deleted: each record is self-contained.
    await client.responses.delete(first.id)
    up.control(script=[{"content": "ok"}])
    await client.responses.create(model="chat", input="Again.", previous_response_id=second.id)
    assert len(up.stats.last_body["messages"]) == 5


async def test_stream_helper_collects_text_and_the_stored_response(
    client: openai.AsyncOpenAI,
) -> None:
    async with client.responses.stream(model="chat", input="hi") as stream:
        types = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert types.count("response.output_text.delta") > 2
    for kind in ("response.content_part.done", "response.output_text.done"):
        assert kind in types
    assert final.output_text == REPLY and final.usage is not None
    assert final.usage.total_tokens == 17
    stored = await client.responses.retrieve(final.id)
    assert stored.output_text == REPLY


async def test_stream_of_a_tool_call_and_sequence_numbers(
    client: openai.AsyncOpenAI, up: MockUpstream
) -> None:
    up.control(script=[CALL])
    stream = await client.responses.create(
        model="chat", input="Weather?", tools=[WEATHER], stream=True
    )
    events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == '{"city": "Paris"}'
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output[0].type == "function_call"
    assert final.response.output[0].call_id == "call_w1"


async def test_stream_broken_upstream_ends_with_response_failed(
    client: openai.AsyncOpenAI, up: MockUpstream
) -> None:
    up.control(break_stream_after=3)
    stream = await client.responses.create(model="chat", input="hi", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None


async def test_stored_responses_are_invisible_to_other_tenants(env: GatewayEnv) -> None:
    async with client_for(env, A) as mine, client_for(env, B) as theirs:
        response = await mine.responses.create(model="chat", input="secret plans")
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.input_items.list(response.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.delete(response.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.create(
                model="chat", input="more", previous_response_id=response.id
            )
        assert (await mine.responses.retrieve(response.id)).id == response.id


async def test_store_false_keeps_nothing(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="chat", input="hi", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_input_items_page_in_both_orders(client: openai.AsyncOpenAI) -> None:
    texts = ["one", "two", "three"]
    response = await client.responses.create(
        model="chat", input=[{"role": "user", "content": t} for t in texts]
    )
    newest = await client.responses.input_items.list(response.id, limit=2)
    assert [i.content[0].text for i in newest.data] == ["three", "two"]
    assert newest.has_more is True
    rest = await client.responses.input_items.list(response.id, after=newest.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["one"]
    oldest = await client.responses.input_items.list(response.id, order="asc")
    assert [i.content[0].text for i in oldest.data] == texts


async def test_text_format_json_schema_becomes_response_format(
    client: openai.AsyncOpenAI, up: MockUpstream
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    up.control(script=[{"content": '{"a": "b"}'}])
    response = await client.responses.create(
        model="chat",
        input="json please",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema}},
        max_output_tokens=50,
        temperature=0.2,
    )
    assert response.output_text == '{"a": "b"}'
    sent = up.stats.last_body
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema},
    }
    assert (sent["max_tokens"], sent["temperature"]) == (50, 0.2)


async def test_length_finish_is_an_incomplete_response(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="local", input="hi", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input.0.content.0.type",
        ),
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"previous_response_id": "not-an-id"}, "previous_response_id"),
    ],
)
async def test_what_faas_cannot_honour_is_refused_naming_the_parameter(
    env: GatewayEnv, change: dict[str, Any], param: str
) -> None:
    body = {"model": "chat", "input": "hi"} | change
    response = await env.client.post("/v1/responses", json=body, headers=A)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_unknown_previous_response_and_model_are_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.create(
            model="chat", input="hi", previous_response_id="resp_doesnotexist"
        )
    assert "resp_doesnotexist" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="no-such-model", input="hi")


async def test_stored_responses_expire_after_the_ttl(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> None:
    async with gateway_env(make_settings(gateway_responses_ttl_s=1), table(up)) as env:
        await expires(env)


async def test_stored_responses_expire_in_redis_too(
    make_settings: Callable[..., Settings], up: MockUpstream, redis_url: str
) -> None:
    settings = make_settings(gateway_responses_ttl_s=1, redis_url=redis_url)
    async with gateway_env(settings, table(up)) as env:
        await expires(env)


async def expires(env: GatewayEnv) -> None:
    async with client_for(env) as sdk:
        response = await sdk.responses.create(model="chat", input="hi")
        assert (await sdk.responses.retrieve(response.id)).id == response.id
        await asyncio.sleep(1.2)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.retrieve(response.id)


async def test_a_chain_past_the_size_bound_is_413_before_any_model_call(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> None:
    settings = make_settings(gateway_responses_max_bytes=3000)
    async with gateway_env(settings, table(up)) as env, client_for(env) as sdk:
        first = await sdk.responses.create(model="chat", input="x" * 1500)
        calls = up.stats.requests
        with pytest.raises(openai.APIStatusError) as refused:
            await sdk.responses.create(
                model="chat", input="y" * 1500, previous_response_id=first.id
            )
        assert refused.value.status_code == 413
        assert up.stats.requests == calls
        # Not stored, the same chain still runs.
        unstored = await sdk.responses.create(
            model="chat", input="y" * 1500, previous_response_id=first.id, store=False
        )
        assert unstored.output_text == REPLY


async def test_malformed_ids_and_paging_are_422_in_openai_shape(env: GatewayEnv) -> None:
    for path in ("/v1/responses/not-an-id", "/v1/responses/resp_x/input_items?limit=0"):
        response = await env.client.get(path, headers=A)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_idempotency_key_replays_the_same_response_billed_once(
    client: openai.AsyncOpenAI, up: MockUpstream
) -> None:
    key = {"Idempotency-Key": "order-7"}
    first = await client.responses.create(model="chat", input="hi", extra_headers=key)
    calls = up.stats.requests
    again = await client.responses.create(model="chat", input="hi", extra_headers=key)
    assert up.stats.requests == calls
    assert again.id == first.id and again.output[0].id == first.output[0].id
    assert again.output_text == first.output_text
    with pytest.raises(openai.UnprocessableEntityError):
        await client.responses.create(model="chat", input="other", extra_headers=key)


async def test_a_streamed_response_that_cannot_be_stored_ends_failed() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
        yield b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        yield b"data: [DONE]\n\n"

    async def refuse(response: dict[str, Any]) -> None:
        raise DependencyUnavailable("redis is down")

    request = ResponsesBody(model="chat", input="hi")
    run = ResponseStream(request, "resp_1", CallRecord("responses", model="chat"), refuse)
    events = [orjson.loads(f.split(b"data: ", 1)[1]) async for f in run.run(chunks())]
    assert [e["type"] for e in events[-3:]] == [
        "response.output_item.done",
        "error",
        "response.failed",
    ]
    assert "redis is down" in events[-1]["response"]["error"]["message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


@pytest.mark.parametrize(
    "change",
    [{}, {"tools": [WEATHER], "input": "What is the weather in Paris?"}, {"max_output_tokens": 2}],
    ids=["text", "tool-call", "incomplete"],
)
async def test_responses_items_and_events_pass_the_sdk_schema_strictly(
    env: GatewayEnv, change: dict[str, Any]
) -> None:
    """Validated, not just constructed as the SDK does: every required field is there."""
    body = {"model": "local", "input": "hi", "metadata": {"a": "b"}} | change
    created = await env.client.post("/v1/responses", json=body, headers=A)
    response = Response.model_validate(created.json())
    assert response.output
    page = await env.client.get(f"/v1/responses/{response.id}/input_items", headers=A)
    items = TypeAdapter(list[ResponseItem]).validate_python(page.json()["data"])
    assert len(items) == 1
    streamed = await env.client.post("/v1/responses", json=body | {"stream": True}, headers=A)
    events = [
        TypeAdapter(ResponseStreamEvent).validate_json(block.split("data: ", 1)[1])
        for block in streamed.text.split("\n\n")
        if block.strip()
    ]
    assert events[-1].type in ("response.completed", "response.incomplete")
