"""Spend attribution tags in usage events, and the bundled price catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.services.gateway_service.price_catalogue import catalogue, catalogue_price
from faas.services.gateway_service.request_tags import MAX_TAGS, parse_header
from faas.services.gateway_service.routing_table import Deployment, Price
from faas.shared.config import Settings
from faas.shared.exceptions import BadRequest
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import MockUpstream

ACME = auth("acme", "ann")
CHAT = "/v1/chat/completions"


def ask(model: str = "listed", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[GatewayEnv]:
    async with MockUpstream() as up:
        base = {"provider": "openai", "api_base": up.url, "api_key": "sk-up", "timeout_s": 5}
        table = routing(
            {"name": "listed", "deployments": [base | {"model": "gpt-4o-mini"}]},
            {
                "name": "priced",
                "deployments": [
                    base
                    | {"model": "gpt-4o-mini", "price": {"input_per_1k": 1, "output_per_1k": 2}}
                ],
            },
        )
        async with gateway_env(make_settings(), table) as gateway:
            yield gateway


async def events_after(env: GatewayEnv, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        if len(env.events) >= count:
            break
        await asyncio.sleep(0.01)
    return [e["data"] for e in env.events]


async def test_header_and_metadata_tags_reach_the_usage_event(env: GatewayEnv) -> None:
    headers = ACME | {"x-faas-tags": "team=search, env=prod,nightly"}
    body = ask(metadata={"feature": "autocomplete", "env": "ignored", "none": None})
    answer = await env.client.post(CHAT, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    [event] = await events_after(env, 1)
    assert event["tags"] == {
        "team": "search",
        "env": "prod",  # the header wins over the body
        "nightly": "",
        "feature": "autocomplete",
    }
    assert event["user_id"] == "ann" and event["key_id"] is None


async def test_a_request_without_tags_carries_none_from_the_previous(env: GatewayEnv) -> None:
    await env.client.post(CHAT, json=ask(), headers=ACME | {"x-faas-tags": "a=1"})
    await env.client.post(CHAT, json=ask(), headers=ACME)
    first, second = await events_after(env, 2)
    assert first["tags"] == {"a": "1"} and second["tags"] == {}


async def test_the_anthropic_surface_tags_its_metadata(env: GatewayEnv) -> None:
    body = {
        "model": "listed",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": "end-user-7"},
    }
    answer = await env.client.post(
        "/v1/messages", json=body, headers=ACME | {"x-faas-tags": "surface=anthropic"}
    )
    assert answer.status_code == 200, answer.text
    [event] = await events_after(env, 1)
    assert event["tags"] == {"surface": "anthropic", "user_id": "end-user-7"}


@pytest.mark.parametrize(
    "headers, body",
    [
        ({"x-faas-tags": ",".join(f"t{i}" for i in range(MAX_TAGS + 1))}, {}),
        ({"x-faas-tags": "k=" + "v" * 513}, {}),
        ({}, {"metadata": {f"m{i}": "v" for i in range(MAX_TAGS + 1)}}),
        ({"x-faas-tags": "=v"}, {}),
        ({}, {"metadata": {"nested": {"no": 1}}}),
        ({}, {"metadata": "not-a-map"}),
    ],
)
async def test_bad_tags_are_400_in_openai_shape(
    env: GatewayEnv, headers: dict[str, str], body: dict[str, Any]
) -> None:
    answer = await env.client.post(CHAT, json=ask(**body), headers=ACME | headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


async def test_full_metadata_and_a_full_header_are_both_kept(env: GatewayEnv) -> None:
    header = ",".join(f"h{i}=1" for i in range(MAX_TAGS))
    metadata = {f"m{i}": "v" * 512 for i in range(MAX_TAGS)}
    answer = await env.client.post(
        CHAT, json=ask(metadata=metadata), headers=ACME | {"x-faas-tags": header}
    )
    assert answer.status_code == 200, answer.text
    [event] = await events_after(env, 1)
    assert len(event["tags"]) == 2 * MAX_TAGS


def test_plain_and_paired_tags_parse() -> None:
    assert parse_header("a=1, b ,c=") == {"a": "1", "b": "", "c": ""}
    with pytest.raises(BadRequest):
        parse_header("a\x01=1")


async def test_an_unpriced_deployment_costs_the_catalogue_price(env: GatewayEnv) -> None:
    answer = await env.client.post(CHAT, json=ask(), headers=ACME)
    usage = answer.json()["usage"]
    [event] = await events_after(env, 1)
    price = catalogue_price("gpt-4o-mini")
    assert price is not None and price.input_per_1k > 0
    expected = price.cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert event["cost_usd"] == pytest.approx(expected)


async def test_the_routing_files_price_overrides_the_catalogue(env: GatewayEnv) -> None:
    answer = await env.client.post(CHAT, json=ask("priced"), headers=ACME)
    usage = answer.json()["usage"]
    [event] = await events_after(env, 1)
    assert event["cost_usd"] == pytest.approx(
        (usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2) / 1000
    )


async def test_the_prices_endpoint_shows_the_catalogue_version(env: GatewayEnv) -> None:
    answer = await env.client.get("/api/v1/gateway/prices", headers=ACME)
    data = answer.json()["data"]
    assert data["version"] == catalogue().version == "2026-12"
    assert "gpt-4o" in data["models"] and any("verify" in n for n in data["notes"])


def test_cached_tokens_cost_the_cached_price() -> None:
    price = catalogue_price("claude-sonnet-4-5")
    assert price is not None and price.cached_input_per_1k is not None
    # 1,000 prompt tokens of which 800 cached, 100 output tokens.
    assert price.cost(1000, 100, 800) == pytest.approx(
        (200 * price.input_per_1k + 800 * price.cached_input_per_1k + 100 * price.output_per_1k)
        / 1000
    )
    assert price.cost(1000, 100, 800) < price.cost(1000, 100, 0)


@pytest.mark.parametrize(
    "model, listed",
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("GPT-4O", "gpt-4o"),
    ],
)
def test_a_model_name_finds_its_catalogue_entry(model: str, listed: str) -> None:
    assert catalogue_price(model) == catalogue().models[listed]


@pytest.mark.parametrize("model", ["faas-mock", "gpt-4oo", "smollm2-135m", ""])
def test_an_unlisted_model_has_no_catalogue_price(model: str) -> None:
    assert catalogue_price(model) is None
    assert Deployment(provider="mock", model=model).price == Price()


def test_every_catalogue_entry_is_a_sane_price() -> None:
    for name, price in catalogue().models.items():
        assert price.input_per_1k < 0.1 and price.output_per_1k < 0.1, name
        if price.cached_input_per_1k is not None:
            assert price.cached_input_per_1k <= price.input_per_1k, name
