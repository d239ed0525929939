"""The rest of OpenAI's surface and rerank, through the real gateway app in front of a real
HTTP upstream (tests/support/mock_upstream.py): token-id inputs, `n > 1`, the legacy
`/v1/completions`, `/v1/models/{id}` and `/v1/rerank` — and the translation pieces alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from faas.services.gateway_service.choices import merge_completions
from faas.services.gateway_service.completions import text_chunk, text_stream
from faas.services.gateway_service.providers.base import ProviderError
from faas.services.gateway_service.providers.rerank_base import best_first
from faas.services.gateway_service.providers.rerank_http import parse_ranking
from faas.services.gateway_service.routing_table import Deployment, RoutingTable
from faas.services.gateway_service.token_inputs import classify, decode_ids
from faas.shared import tokens
from faas.shared.config import Settings
from faas.shared.exceptions import ValidationFailed
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import REPLY, MockUpstream

A = auth("acme")
CHAT = "/v1/chat/completions"
DOCS = ["the cat sat on the mat", "semantic caches return stored answers", "dogs bark"]


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[GatewayEnv]:
    remote = {"model": "mock-model", "api_base": up.url, "api_key": "sk-up", "timeout_s": 5}
    table = routing(
        {"name": "chat", "deployments": [{"provider": "openai", **remote}]},
        {"name": "embed", "kind": "embedding", "deployments": [{"provider": "openai", **remote}]},
        {
            "name": "embed-ids",
            "kind": "embedding",
            "deployments": [{"provider": "openai", "token_ids": "pass", **remote}],
        },
        {"name": "rerank-default", "kind": "rerank", "deployments": [{"provider": "cosine"}]},
        {"name": "cohere", "kind": "rerank", "deployments": [{"provider": "cohere", **remote}]},
        {"name": "embed-default", "kind": "embedding", "deployments": [{"provider": "hash"}]},
    )
    async with gateway_env(make_settings(), table) as gateway:
        yield gateway


async def events_of(env: GatewayEnv, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        if len(env.events) >= count:
            break
        await asyncio.sleep(0.01)
    return [e["data"] for e in env.events]


def ids(text: str) -> list[int]:
    return tokens.encoding().encode(text)


# -- embeddings input shapes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "texts"),
    [
        ("one text", ["one text"]),
        (["a", "b"], ["a", "b"]),
        (ids("hello world"), ["hello world"]),
        ([ids("hello"), ids("big world")], ["hello", "big world"]),
    ],
)
async def test_embeddings_take_text_or_token_ids_decoded_for_the_provider(
    env: GatewayEnv, up: MockUpstream, given: Any, texts: list[str]
) -> None:
    response = await env.client.post(
        "/v1/embeddings", json={"model": "embed", "input": given}, headers=A
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == len(texts)
    assert up.stats.last_body["input"] == texts


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (ids("hello world"), [ids("hello world")]),
        ([ids("hello"), ids("big world")], [ids("hello"), ids("big world")]),
        ("plain text", ["plain text"]),
    ],
)
async def test_token_ids_pass_through_to_a_deployment_that_takes_them(
    env: GatewayEnv, up: MockUpstream, given: Any, sent: list[Any]
) -> None:
    response = await env.client.post(
        "/v1/embeddings", json={"model": "embed-ids", "input": given}, headers=A
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == len(sent)
    assert up.stats.last_body["input"] == sent


def test_only_an_openai_deployment_may_take_token_ids() -> None:
    with pytest.raises(ValueError, match="token_ids: pass needs provider openai"):
        Deployment(provider="hash", token_ids="pass")


@pytest.mark.parametrize(
    "given", [[], [[]], [1, "a"], [[1], ["a"]], [True, False], [100300], [-1], {"a": 1}, 5]
)
async def test_embeddings_refuse_other_shapes_and_unknown_ids_in_openai_shape(
    env: GatewayEnv, given: Any
) -> None:
    response = await env.client.post(
        "/v1/embeddings", json={"model": "embed", "input": given}, headers=A
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "input"


async def test_too_many_token_ids_are_refused_before_decoding(env: GatewayEnv) -> None:
    response = await env.client.post(
        "/v1/embeddings", json={"model": "embed", "input": [1] * 8193}, headers=A
    )
    assert response.status_code == 413


# -- n > 1 -------------------------------------------------------------------------------------


async def test_chat_with_n_fans_out_indexes_choices_and_sums_usage(
    env: GatewayEnv, up: MockUpstream
) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "n": 3}
    response = await env.client.post(CHAT, json=body, headers=A)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == REPLY for c in reply["choices"])
    assert reply["usage"] == {"prompt_tokens": 30, "completion_tokens": 21, "total_tokens": 51}
    assert up.stats.requests == 3 and "n" not in up.stats.last_body
    events = await events_of(env, 3)
    assert [e["operation"] for e in events] == ["chat"] * 3


@pytest.mark.parametrize(("n", "stream"), [(9, False), (2, True), (0, False)])
async def test_n_out_of_bounds_or_with_stream_is_422(env: GatewayEnv, n: int, stream: bool) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "n": n}
    response = await env.client.post(CHAT, json=body | {"stream": stream}, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "n"


# -- /v1/completions ---------------------------------------------------------------------------


async def test_completions_translate_prompts_to_chat_and_back(
    env: GatewayEnv, up: MockUpstream
) -> None:
    body = {"model": "chat", "prompt": ["first", "second"], "n": 2, "max_tokens": 5}
    response = await env.client.post("/v1/completions", json=body, headers=A)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["object"] == "text_completion" and reply["id"].startswith("cmpl-")
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]
    assert {c["text"] for c in reply["choices"]} == {REPLY}
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["total_tokens"] == 4 * 17
    assert up.stats.last_body["messages"][0]["role"] == "user"
    assert up.stats.last_body["max_tokens"] == 5
    sent = {tuple(m["content"] for m in b["messages"]) for b in [up.stats.last_body]}
    assert sent <= {("first",), ("second",)}
    events = await events_of(env, 4)
    assert {e["operation"] for e in events} == {"completions"}


async def test_completions_echo_and_default_max_tokens(env: GatewayEnv, up: MockUpstream) -> None:
    body = {"model": "chat", "prompt": ids("Say: "), "echo": True}
    response = await env.client.post("/v1/completions", json=body, headers=A)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == "Say: " + REPLY
    assert up.stats.last_body["max_tokens"] == 16


async def test_completions_stream_as_text_completion_chunks_with_usage(
    env: GatewayEnv,
) -> None:
    body = {
        "model": "chat",
        "prompt": "hi",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with env.client.stream("POST", "/v1/completions", json=body, headers=A) as response:
        assert response.status_code == 200
        payloads = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == REPLY
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 17
    assert len({c["id"] for c in chunks}) == 1
    event = (await events_of(env, 1))[0]
    assert event["operation"] == "completions" and event["stream"] is True


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"suffix": "end"}, "suffix"),
        ({"logprobs": 2}, "logprobs"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a"] * 33}, "prompt"),
        ({"stream": True, "n": 2}, "stream"),
        ({"best_of": 3}, "best_of"),
    ],
)
async def test_completions_refuse_what_chat_cannot_do(
    env: GatewayEnv, change: dict[str, Any], param: str
) -> None:
    body = {"model": "chat", "prompt": "hi"} | change
    response = await env.client.post("/v1/completions", json=body, headers=A)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param


# -- /v1/models/{id} ---------------------------------------------------------------------------


async def test_model_retrieve_and_unknown_model_404_in_openai_shape(env: GatewayEnv) -> None:
    found = await env.client.get("/v1/models/rerank-default", headers=A)
    assert found.status_code == 200
    assert found.json() | {"created": 0} == {
        "id": "rerank-default",
        "object": "model",
        "created": 0,
        "owned_by": "faas",
        "kind": "rerank",
    }
    missing = await env.client.get("/v1/models/gpt-9", headers=A)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert "gpt-9" in missing.json()["error"]["message"]


# -- /v1/rerank --------------------------------------------------------------------------------


async def test_local_rerank_orders_documents_and_records_usage(env: GatewayEnv) -> None:
    body = {"query": "what do semantic caches return", "documents": DOCS, "top_n": 2}
    response = await env.client.post("/v1/rerank", json=body, headers=A)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["model"] == "rerank-default"
    assert len(reply["results"]) == 2
    assert reply["results"][0]["index"] == 1
    assert reply["results"][0]["document"] == {"text": DOCS[1]}
    scores = [r["relevance_score"] for r in reply["results"]]
    assert scores == sorted(scores, reverse=True)
    assert reply["usage"]["total_tokens"] > 0
    event = (await events_of(env, 1))[0]
    assert event["operation"] == "rerank" and event["model"] == "rerank-default"
    assert event["provider"] == "cosine"


async def test_http_rerank_speaks_cohere_shape_to_the_upstream(
    env: GatewayEnv, up: MockUpstream
) -> None:
    documents = [{"text": d} for d in DOCS]
    body = {
        "model": "cohere",
        "query": "dogs bark",
        "documents": documents,
        "return_documents": False,
    }
    response = await env.client.post("/v1/rerank", json=body, headers=A)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0] == {"index": 2, "relevance_score": 1.0}
    assert up.stats.paths["/v1/rerank"] == 1
    assert up.stats.last_body["documents"] == DOCS
    assert up.stats.last_body["model"] == "mock-model"
    assert up.stats.last_headers["authorization"] == "Bearer sk-up"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"query": "q", "documents": []}, 422),
        ({"query": "", "documents": ["a"]}, 422),
        ({"query": "q", "documents": ["a"], "top_n": 0}, 422),
        ({"query": "q", "documents": [{"title": "no text"}]}, 422),
        ({"model": "chat", "query": "q", "documents": ["a"]}, 422),
        ({"model": "nope", "query": "q", "documents": ["a"]}, 404),
    ],
)
async def test_bad_rerank_requests_are_4xx_in_openai_shape(
    env: GatewayEnv, body: dict[str, Any], status: int
) -> None:
    response = await env.client.post("/v1/rerank", json=body, headers=A)
    assert response.status_code == status, response.text
    assert "message" in response.json()["error"]


async def test_rerank_upstream_failure_falls_to_502(env: GatewayEnv, up: MockUpstream) -> None:
    up.control(fail_next=[{"status": 500}])
    body = {"model": "cohere", "query": "q", "documents": ["a"]}
    response = await env.client.post("/v1/rerank", json=body, headers=A)
    assert response.status_code == 502
    event = (await events_of(env, 1))[0]
    assert event["operation"] == "rerank" and event["status"] == "error"


async def test_default_routing_offers_a_local_rerank_model(
    make_settings: Callable[..., Settings],
) -> None:
    async with gateway_env(make_settings()) as env:
        body = {"query": "cats", "documents": ["cats purr", "stocks fell"]}
        response = await env.client.post("/v1/rerank", json=body, headers=A)
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["index"] == 0


# -- the translation pieces alone --------------------------------------------------------------


def test_rerank_models_take_only_rerank_providers() -> None:
    with pytest.raises(ValueError, match="rerank"):
        routing({"name": "r", "kind": "rerank", "deployments": [{"provider": "mock"}]})
    with pytest.raises(ValueError, match="rerank"):
        routing({"name": "c", "deployments": [{"provider": "cosine"}]})
    table = routing({"name": "x", "kind": "rerank", "deployments": [{"provider": "cosine"}]})
    assert isinstance(table, RoutingTable) and table.default_for("rerank").name == "x"


def test_classify_tells_texts_from_token_ids() -> None:
    assert classify("a", "input") == (["a"], [])
    assert classify([1, 2], "input") == ([], [[1, 2]])
    assert classify([[1], [2, 3]], "input") == ([], [[1], [2, 3]])
    with pytest.raises(ValidationFailed):
        classify([[1], []], "input")
    assert decode_ids([ids("héllo")], "input") == ["héllo"]


def test_merge_completions_reindexes_and_sums() -> None:
    one = {"id": "x", "choices": [{"index": 0, "message": {"content": "a"}}], "usage": None}
    two = {
        "id": "y",
        "choices": [{"index": 0, "message": {"content": "b"}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    }
    merged = merge_completions([one, two])
    assert merged["id"] == "x"
    assert [(c["index"], c["message"]["content"]) for c in merged["choices"]] == [
        (0, "a"),
        (1, "b"),
    ]
    assert merged["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_text_chunk_translates_deltas_and_drops_empty_ones() -> None:
    role = {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    assert text_chunk(role, "cmpl-1") is None
    echoed = text_chunk(role, "cmpl-1", prefix="Q: ")
    assert echoed is not None and orjson.loads(echoed)["choices"][0]["text"] == "Q: "
    done = {"model": "m", "choices": [{"delta": {}, "finish_reason": "length"}]}
    converted = orjson.loads(text_chunk(done, "cmpl-1") or b"{}")
    assert converted["choices"][0] == {
        "text": "",
        "index": 0,
        "logprobs": None,
        "finish_reason": "length",
    }
    error = {"error": {"message": "boom"}}
    assert orjson.loads(text_chunk(error, "cmpl-1") or b"{}") == error


def test_parse_ranking_checks_indexes_and_scores() -> None:
    deployment = Deployment(provider="cohere", model="m", api_base="http://x")
    body = {"results": [{"index": 1, "relevance_score": 0.2}, {"index": 0, "relevance_score": 0.9}]}
    assert parse_ranking(body, 2, deployment) == [(0, 0.9), (1, 0.2)]
    for bad in ({"results": [{"index": 5, "relevance_score": 1}]}, {"results": "no"}, {}):
        with pytest.raises(ProviderError):
            parse_ranking(bad, 2, deployment)
    assert best_first([0.1, 0.5, 0.5], 2) == [(1, 0.5), (2, 0.5)]


async def test_text_stream_translates_frames_passes_comments_and_echoes_once() -> None:
    def frame(chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def chat() -> AsyncIterator[bytes]:
        yield frame({"model": "m", "choices": [{"delta": {"role": "assistant"}}]})
        yield b": keep-alive\n\n"
        # One read may hold several frames, or part of one.
        both = frame({"model": "m", "choices": [{"delta": {"content": "Hi"}}]})
        both += frame({"model": "m", "choices": [{"delta": {}, "finish_reason": "stop"}]})
        yield both[:10]
        yield both[10:] + b"data: [DONE]\n\n"

    out = [f async for f in text_stream(chat(), "Q: ")]
    assert out[1] == b": keep-alive\n\n" and out[-1] == b"data: [DONE]\n\n"
    texts = [orjson.loads(f[6:])["choices"][0]["text"] for f in out if f.startswith(b"data: {")]
    assert texts == ["Q: ", "Hi", ""]
