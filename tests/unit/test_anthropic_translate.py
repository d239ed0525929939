"""Translation between Anthropic Messages and OpenAI chat, both ways: the gateway's
`/v1/messages` surface (anthropic_translate, anthropic_stream) and the `anthropic` provider
(providers/anthropic_wire, providers/anthropic.ChunkWriter)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from faas.services.gateway_service.anthropic_models import MessagesBody
from faas.services.gateway_service.anthropic_stream import MessageStream, error_event
from faas.services.gateway_service.anthropic_translate import to_anthropic, to_openai
from faas.services.gateway_service.providers.anthropic import ChunkWriter
from faas.services.gateway_service.providers.anthropic_wire import (
    anthropic_request,
    openai_completion,
)
from faas.services.gateway_service.providers.base import ProviderError, Usage
from faas.services.gateway_service.routing_table import Deployment
from faas.shared.exceptions import BadRequest, UpstreamError

TOOL = {"name": "calc", "description": "Arithmetic", "input_schema": {"type": "object"}}


def body(**fields: Any) -> MessagesBody:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return MessagesBody.model_validate({"model": "m", "max_tokens": 10, **fields})


def events(frames: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        name, data = frame.decode().strip().split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        out.append(event)
    return out


# -- Anthropic request -> OpenAI ----------------------------------------------------------


def test_system_blocks_and_text_content_become_strings() -> None:
    out = to_openai(
        body(
            system=[{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        )
    )
    assert out["messages"] == [
        {"role": "system", "content": "One.\n\nTwo."},
        {"role": "user", "content": "hi"},
    ]
    assert out["max_tokens"] == 10 and "stop" not in out and "tools" not in out


def test_a_base64_image_becomes_a_data_url_part() -> None:
    image = {"type": "base64", "media_type": "image/png", "data": "iVBOR"}
    out = to_openai(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": image}, {"type": "text", "text": "?"}],
                }
            ]
        )
    )
    assert out["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "text", "text": "?"},
    ]


def test_tool_use_and_tool_result_become_tool_calls_and_tool_messages() -> None:
    out = to_openai(
        body(
            tools=[TOOL],
            messages=[
                {"role": "user", "content": "2+2?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me compute."},
                        {"type": "tool_use", "id": "t1", "name": "calc", "input": {"x": "2+2"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "thanks"},
                        {"type": "tool_result", "tool_use_id": "t1", "content": "4"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": [{"type": "text", "text": "boom"}],
                            "is_error": True,
                        },
                    ],
                },
            ],
        )
    )
    assistant, first, second, rest = out["messages"][1:]
    assert assistant == {
        "role": "assistant",
        "content": "Let me compute.",
        "tool_calls": [
            {
                "id": "t1",
                "type": "function",
                "function": {"name": "calc", "arguments": '{"x":"2+2"}'},
            }
        ],
    }
    # Tool messages come straight after the assistant's calls, the user's text after them.
    assert first == {"role": "tool", "tool_call_id": "t1", "content": "4"}
    assert second == {"role": "tool", "tool_call_id": "t2", "content": "Error: boom"}
    assert rest == {"role": "user", "content": "thanks"}
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calc",
                "description": "Arithmetic",
                "parameters": {"type": "object"},
            },
        }
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "calc"}, {"type": "function", "function": {"name": "calc"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    assert to_openai(body(tools=[TOOL], tool_choice=choice))["tool_choice"] == expected


def test_disable_parallel_tool_use_and_the_other_parameters() -> None:
    out = to_openai(
        body(
            tools=[TOOL],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            stop_sequences=["END"],
            temperature=0.3,
            top_p=0.9,
            top_k=5,
            metadata={"user_id": "u1"},
        )
    )
    assert out["parallel_tool_calls"] is False
    assert (out["stop"], out["temperature"], out["top_p"], out["user"]) == (["END"], 0.3, 0.9, "u1")
    assert "top_k" not in out  # OpenAI's API has no top_k and refuses unknown parameters


def test_requests_openai_cannot_express_are_refused() -> None:
    with pytest.raises(BadRequest, match="needs tools"):
        to_openai(body(tool_choice={"type": "any"}))
    with pytest.raises(BadRequest, match="assistant turn"):
        to_openai(
            body(
                messages=[
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}],
                    }
                ]
            )
        )
    with pytest.raises(BadRequest, match="tool_use blocks belong"):
        to_openai(
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "t", "name": "c", "input": {}}],
                    }
                ]
            )
        )


# -- OpenAI answer -> Anthropic message --------------------------------------------------


def completion(message: dict[str, Any], finish: str, **choice: Any) -> dict[str, Any]:
    usage = {
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 20},
    }
    return {
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": usage,
    }


def test_tool_calls_become_tool_use_blocks() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"x":1}'}}
    answer = completion({"role": "assistant", "content": "ok", "tool_calls": [call]}, "tool_calls")
    message = to_anthropic(answer, None, model="alias", body=body())
    assert message["content"] == [
        {"type": "text", "text": "ok"},
        {"type": "tool_use", "id": "c1", "name": "calc", "input": {"x": 1}},
    ]
    assert message["stop_reason"] == "tool_use" and message["model"] == "alias"
    # Anthropic's input_tokens exclude the cache reads OpenAI's prompt_tokens include.
    assert message["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 20,
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")],
)
def test_finish_reasons(finish: str, reason: str) -> None:
    answer = completion({"role": "assistant", "content": "x"}, finish)
    assert to_anthropic(answer, Usage(1, 1), model="m", body=body())["stop_reason"] == reason


def test_a_reported_stop_sequence_is_kept() -> None:
    answer = completion({"role": "assistant", "content": "x"}, "stop", stop_reason="END")
    message = to_anthropic(answer, Usage(1, 1), model="m", body=body(stop_sequences=["END"]))
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


def test_tool_arguments_that_are_not_an_object_are_an_upstream_error() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "[1"}}
    answer = completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    with pytest.raises(UpstreamError):
        to_anthropic(answer, None, model="m", body=body())


# -- OpenAI stream -> Anthropic events ---------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}


def test_a_stream_of_text_then_a_tool_call() -> None:
    stream = MessageStream(model="m", input_tokens=12, stop_sequences=None)
    frames = stream.start()
    frames += stream.chunk(chunk({"role": "assistant", "content": ""}))
    frames += stream.chunk(chunk({"content": "Let me"}))
    frames += stream.chunk(chunk({"content": " see."}))
    start = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "calc", "arguments": ""},
    }
    frames += stream.chunk(chunk({"tool_calls": [start]}))
    frames += stream.chunk(
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]})
    )
    frames += stream.chunk(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}))
    frames += stream.chunk(chunk(finish="tool_calls"))
    frames += stream.chunk({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9}})
    got = events(frames + stream.end())
    assert [e["type"] for e in got] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert got[0]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 0}
    assert got[2] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert got[6]["index"] == 1
    assert got[6]["content_block"] == {"type": "tool_use", "id": "c1", "name": "calc", "input": {}}
    assert got[7]["delta"] == {"type": "input_json_delta", "partial_json": '{"x":'}
    assert got[10]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[10]["usage"]["output_tokens"] == 9


def test_a_stream_without_usage_counts_the_text() -> None:
    stream = MessageStream(model="m", input_tokens=5, stop_sequences=None)
    stream.chunk(chunk({"content": "one two three"}))
    stream.chunk(chunk(finish="length"))
    delta = events(stream.end())[-2]
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"]["output_tokens"] == 3 and delta["usage"]["input_tokens"] == 5


def test_a_mid_stream_failure_is_an_error_event() -> None:
    (event,) = events([error_event({"message": "upstream broke", "code": "rate_limited"})])
    assert event == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "upstream broke"},
    }
    (other,) = events([error_event({"message": "x", "code": "server"})])
    assert other["error"]["type"] == "api_error"


# -- the `anthropic` provider: OpenAI request -> Anthropic, answers back --------------------

DEPLOYMENT = Deployment(provider="anthropic", model="claude-x", max_output_tokens=321)


def test_provider_request_merges_turns_and_translates_parts() -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "calc", "arguments": '{"x":1}'}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "t1", "content": "2"},
        {"role": "user", "content": "and?"},
    ]
    params = {
        "stop": "END",
        "user": "u1",
        "tool_choice": {"type": "function", "function": {"name": "calc"}},
    }
    params |= {
        "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "calc"}}],
    }
    out = anthropic_request(messages, params, DEPLOYMENT)
    assert out["system"] == "Be brief.\n\nUse tools."
    assert out["max_tokens"] == 321 and out["model"] == "claude-x"
    assert out["stop_sequences"] == ["END"] and out["metadata"] == {"user_id": "u1"}
    assert out["tool_choice"] == {"type": "tool", "name": "calc", "disable_parallel_tool_use": True}
    assert out["tools"] == [{"name": "calc", "input_schema": {"type": "object", "properties": {}}}]
    user, assistant, results = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"},
    }
    assert assistant["content"] == [
        {"type": "tool_use", "id": "t1", "name": "calc", "input": {"x": 1}}
    ]
    # The tool result and the next user text share one user turn: roles must alternate.
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "2"},
            {"type": "text", "text": "and?"},
        ],
    }


def test_provider_refuses_several_choices() -> None:
    with pytest.raises(ProviderError) as refused:
        anthropic_request([{"role": "user", "content": "hi"}], {"n": 2}, DEPLOYMENT)
    assert refused.value.kind == "bad_request"


def test_provider_answer_becomes_a_chat_completion() -> None:
    message = {
        "id": "msg_1",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "tu1", "name": "calc", "input": {"x": 2}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 4, "output_tokens": 6, "cache_read_input_tokens": 10},
    }
    out, usage = openai_completion(message, created=1)
    choice = out["choices"][0]
    assert choice["message"]["content"] == "Sure."
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "calc",
        "arguments": '{"x":2}',
    }
    assert choice["finish_reason"] == "tool_calls"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (14, 6, 10)


def test_provider_stream_events_become_chunks() -> None:
    writer = ChunkWriter("claude-x")
    start = {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 7}}
    seen = writer.event({"type": "message_start", "message": start})
    tool = {"type": "tool_use", "id": "tu1", "name": "calc", "input": {}}
    seen += writer.event({"type": "content_block_start", "index": 0, "content_block": tool})
    delta = {"type": "input_json_delta", "partial_json": '{"x":2}'}
    seen += writer.event({"type": "content_block_delta", "index": 0, "delta": delta})
    seen += writer.event({"type": "ping"})
    end = {"stop_reason": "tool_use", "stop_sequence": None}
    seen += writer.event({"type": "message_delta", "delta": end, "usage": {"output_tokens": 3}})
    seen += writer.event({"type": "message_stop"})
    chunks = [orjson.loads(e.data) for e in seen]
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"] == "tu1"
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"x":2}'
    assert seen[3].finish_reason == "tool_calls" and writer.finished
    assert seen[4].usage == Usage(prompt_tokens=7, completion_tokens=3)
    assert [e.has_content for e in seen] == [False, True, True, False, False]


def test_provider_stream_error_event_is_classified() -> None:
    writer = ChunkWriter("claude-x")
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    with pytest.raises(ProviderError) as failed:
        writer.event(overloaded)
    assert failed.value.kind == "unavailable" and failed.value.retryable
