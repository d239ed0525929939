"""The gateway through the real app: routing, fallback, breaker, streaming commit point, limits
and budgets under concurrency, cache isolation, idempotency and usage events — against a real
OpenAI-compatible HTTP upstream (tests/support/mock_upstream.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from faas.shared.config import Settings
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing
from tests.support.mock_upstream import MockUpstream

A = auth("acme")
B = auth("globex")
ADMIN = auth("ops", platform_admin=True)
CHAT = "/v1/chat/completions"
NOW = datetime(2026, 12, 15, 12, 0, 20, tzinfo=UTC).timestamp()


def upstream(up: MockUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "mock-model",
        "api_base": up.url,
        "api_key": "sk-up",
        "timeout_s": 5,
        **extra,
    }


def ask(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], **extra}


async def wait_events(env: GatewayEnv, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        if len(env.events) >= count:
            break
        await asyncio.sleep(0.01)
    return env.events


@pytest.fixture
async def ups() -> AsyncIterator[tuple[MockUpstream, MockUpstream]]:
    async with MockUpstream() as one, MockUpstream() as two:
        yield one, two


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings], ups: tuple[MockUpstream, MockUpstream]
) -> AsyncIterator[GatewayEnv]:
    one, two = ups
    table = routing(
        {
            "name": "chat",
            "deployments": [
                upstream(one, price={"input_per_1k": 1.0, "output_per_1k": 2.0}),
                upstream(two, price={"input_per_1k": 1.0, "output_per_1k": 2.0}),
            ],
        },
        {"name": "embed", "kind": "embedding", "deployments": [upstream(one)]},
        {
            "name": "local",
            "deployments": [{"provider": "mock", "model": "m", "context_window": 50}],
        },
        # The semantic cache embeds prompts with `embed-default`.
        {"name": "embed-default", "kind": "embedding", "deployments": [{"provider": "hash"}]},
    )
    settings = make_settings(gateway_breaker_failures=2)
    # A fixed clock: a burst counted "per minute" can never straddle a minute boundary.
    async with gateway_env(settings, table, clock=lambda: NOW) as gateway:
        yield gateway


async def test_chat_goes_to_the_first_deployment_with_timing_headers(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    response = await env.client.post(CHAT, json=ask(), headers=A)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Hello from the mock upstream."
    assert ups[0].stats.requests == 1 and ups[1].stats.requests == 0
    assert ups[0].stats.last_headers["authorization"] == "Bearer sk-up"
    assert ups[0].stats.last_body["model"] == "mock-model"
    assert float(response.headers["x-gateway-overhead-ms"]) >= 0
    timing = response.headers["server-timing"]
    for part in ("auth;dur=", "limits;dur=", "cache;dur=", "route;dur=", "upstream;dur="):
        assert part in timing
    assert response.headers["x-cache"] == "MISS"


async def test_fallback_on_5xx_and_429_to_the_next_deployment(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    one, two = ups
    one.control(fail_next=[{"status": 500}, {"status": 429, "retry_after": 1}])
    for _ in range(2):
        response = await env.client.post(CHAT, json=ask(), headers=A)
        assert response.status_code == 200
        assert response.headers["x-faas-deployment"].endswith(two.url)
    assert two.stats.requests == 2


async def test_breaker_skips_a_failing_deployment_for_a_cooldown(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    one, two = ups
    one.control(fail_rate=1.0)
    for _ in range(5):
        assert (await env.client.post(CHAT, json=ask(), headers=A)).status_code == 200
    # breaker_failures=2: after two failures the first deployment is no longer tried.
    assert one.stats.requests == 2
    assert two.stats.requests == 5
    providers = (await env.client.get("/api/v1/gateway/providers", headers=A)).json()["data"]
    first = next(p for p in providers if p["model"] == "chat" and p["deployment"].endswith(one.url))
    assert first["breaker"] == "open"


async def test_all_deployments_failing_is_502_in_openai_shape(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    for up in ups:
        up.control(fail_next=[{"status": 503}])
    response = await env.client.post(CHAT, json=ask(), headers=A)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "api_error" and error["code"] == "upstream_error"


async def test_upstream_rate_limits_everywhere_give_429_with_retry_after(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    for up in ups:
        up.control(fail_next=[{"status": 429, "retry_after": 7}])
    response = await env.client.post(CHAT, json=ask(), headers=A)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"


async def test_upstream_auth_failure_is_502_naming_the_deployment_not_the_key(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    ups[0].control(require_api_key="sk-other")
    response = await env.client.post(CHAT, json=ask(), headers=A)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert ups[0].url in message and "sk-up" not in response.text
    assert ups[1].stats.requests == 0  # an auth failure is not retried elsewhere


async def test_unknown_model_is_404_listing_the_known_ones(env: GatewayEnv) -> None:
    response = await env.client.post(CHAT, json=ask(model="nope"), headers=A)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    native = await env.client.post(
        "/api/v1/gateway/generate", json={"prompt": "x", "model": "nope"}, headers=A
    )
    assert native.status_code == 404
    assert native.json()["error"]["details"]["known_models"] == [
        "chat",
        "embed",
        "local",
        "embed-default",
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 5},
        {"messages": []},
        {"n": 9},
        {"max_tokens": 0},
        {"model": ""},
        {"max_tokens": 10**8 + 1},
        {"max_completion_tokens": 2**63},
    ],
)
async def test_invalid_parameters_are_422(env: GatewayEnv, change: dict[str, Any]) -> None:
    response = await env.client.post(CHAT, json=ask() | change, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == next(iter(change))


async def test_malformed_json_is_400_in_openai_shape(env: GatewayEnv) -> None:
    response = await env.client.post(
        CHAT, content=b"{oops", headers=A | {"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "error" in response.json()


async def test_prompt_over_the_context_window_is_413(env: GatewayEnv) -> None:
    response = await env.client.post(CHAT, json=ask("word " * 200, model="local"), headers=A)
    assert response.status_code == 413
    assert "accepts 50" in response.json()["error"]["message"]


async def test_missing_token_is_401_in_openai_shape(env: GatewayEnv) -> None:
    response = await env.client.post(CHAT, json=ask())
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_usage_event_carries_tokens_cost_and_ids(env: GatewayEnv) -> None:
    response = await env.client.post(CHAT, json=ask(), headers=A | {"X-Correlation-ID": "corr-42"})
    assert response.status_code == 200
    event = (await wait_events(env, 1))[0]
    assert event["type"] == "gateway.usage" and event["tenant_id"] == "acme"
    data = event["data"]
    assert data["prompt_tokens"] == 10 and data["completion_tokens"] == 7
    assert data["usage_source"] == "provider"
    assert data["cost_usd"] == pytest.approx((10 * 1.0 + 7 * 2.0) / 1000)
    assert data["status"] == "ok" and data["cached"] is False
    assert data["correlation_id"] == "corr-42"
    assert data["model"] == "chat" and data["upstream_model"] == "mock-model"


async def test_streaming_passes_chunks_through_and_reports_usage(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    async with env.client.stream("POST", CHAT, json=ask(stream=True), headers=A) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    # The client did not ask for usage: the usage-only chunk we requested upstream is dropped.
    assert all(c["choices"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello from the mock upstream."
    assert ups[0].stats.last_body["stream_options"] == {"include_usage": True}
    event = (await wait_events(env, 1))[0]["data"]
    assert event["stream"] is True and event["total_tokens"] == 17


async def test_stream_falls_back_before_the_first_chunk(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    ups[0].control(fail_next=[{"status": 502}])
    body = ask(stream=True, stream_options={"include_usage": True})
    async with env.client.stream("POST", CHAT, json=body, headers=A) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert any('"usage"' in line for line in lines)
    assert response.headers["x-faas-deployment"].endswith(ups[1].url)


async def test_stream_broken_after_content_ends_with_an_error_event_and_partial_usage(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    ups[0].control(break_stream_after=3)
    async with env.client.stream("POST", CHAT, json=ask(stream=True), headers=A) as response:
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    error = orjson.loads(lines[-2][6:])
    assert error["error"]["type"] == "upstream_error"
    assert ups[1].stats.requests == 0  # no fallback once content was sent
    event = (await wait_events(env, 1))[0]["data"]
    assert event["status"] == "partial" and event["usage_source"] == "estimated"
    assert event["completion_tokens"] > 0


async def test_tenant_rpm_holds_under_concurrency(env: GatewayEnv) -> None:
    admin = await env.client.put("/api/v1/gateway/limits/acme", json={"rpm": 5}, headers=ADMIN)
    assert admin.status_code == 200
    responses = await asyncio.gather(
        *(env.client.post(CHAT, json=ask(), headers=A) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 5 and statuses.count(429) == 15
    limited = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Another tenant is not affected.
    assert (await env.client.post(CHAT, json=ask(), headers=B)).status_code == 200


async def test_daily_budget_is_never_overshot_by_concurrent_requests(env: GatewayEnv) -> None:
    # Each call is estimated at 10 prompt-ish + 10 completion tokens and costs 0.024 USD after
    # reconciliation; 0.1 USD admits at most 4, whatever the concurrency.
    await env.client.put(
        "/api/v1/gateway/limits/acme", json={"daily_budget_usd": 0.1}, headers=ADMIN
    )
    responses = await asyncio.gather(
        *(env.client.post(CHAT, json=ask(max_tokens=10), headers=A) for _ in range(30))
    )
    ok = [r for r in responses if r.status_code == 200]
    assert 1 <= len(ok) <= 4
    assert all(r.status_code in (200, 429) for r in responses)
    limits = (await env.client.get("/api/v1/gateway/rate-limits", headers=A)).json()["data"]
    assert limits["used"]["usd_today"] <= 0.1
    assert limits["used"]["usd_today"] == pytest.approx(0.024 * len(ok))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rpm", 0),
        ("rpm", 10**9 + 1),
        ("rpm", 2**64 - 1),
        ("tpm", 0),
        ("tpm", 2**63),
        ("daily_budget_usd", -0.01),
        ("daily_budget_usd", 1e303),
        ("monthly_budget_usd", 1e303),
        ("monthly_budget_usd", 10.0**9 * 1.5),
    ],
)
async def test_limits_out_of_bounds_are_422_naming_the_field(
    env: GatewayEnv, field: str, value: float
) -> None:
    response = await env.client.put(
        "/api/v1/gateway/limits/acme", json={field: value}, headers=ADMIN
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["errors"][0]["loc"] == ["body", field]
    assert (await env.client.post(CHAT, json=ask(), headers=A)).status_code == 200


async def test_the_largest_limits_still_serve(env: GatewayEnv) -> None:
    largest = {
        "rpm": 10**9,
        "tpm": 10**9,
        "daily_budget_usd": 1e9,
        "monthly_budget_usd": 1e9,
    }
    saved = await env.client.put("/api/v1/gateway/limits/acme", json=largest, headers=ADMIN)
    assert saved.status_code == 200, saved.text
    assert (await env.client.post(CHAT, json=ask(), headers=A)).status_code == 200
    view = (await env.client.get("/api/v1/gateway/rate-limits", headers=A)).json()["data"]
    assert view["remaining"]["requests_this_minute"] == 10**9 - 1


async def test_setting_limits_needs_the_admin_scope(env: GatewayEnv) -> None:
    response = await env.client.put("/api/v1/gateway/limits/acme", json={"rpm": 1}, headers=A)
    assert response.status_code == 403


async def test_exact_cache_is_per_tenant(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    body = ask("cache me", temperature=0)
    first = await env.client.post(CHAT, json=body, headers=A)
    second = await env.client.post(CHAT, json=body, headers=A)
    other = await env.client.post(CHAT, json=body, headers=B)
    assert [first.headers["x-cache"], second.headers["x-cache"], other.headers["x-cache"]] == [
        "MISS",
        "HIT",
        "MISS",
    ]
    assert second.json() == first.json()
    assert ups[0].stats.requests == 2
    events = await wait_events(env, 3)
    assert [e["data"]["cached"] for e in events] == [False, "exact", False]
    assert events[1]["data"]["cost_usd"] == 0


async def test_non_deterministic_requests_are_not_cached(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    for _ in range(2):
        response = await env.client.post(CHAT, json=ask("hot", temperature=0.7), headers=A)
        assert response.headers["x-cache"] == "MISS"
    assert ups[0].stats.requests == 2


async def test_semantic_cache_is_opt_in_and_scoped_by_tenant(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    semantic = {"semantic": True, "threshold": 0.8}
    first = ask("What is the capital city of France?", cache=semantic)
    similar = ask("what is the capital city of france", cache=semantic)
    assert (await env.client.post(CHAT, json=first, headers=A)).headers["x-cache"] == "MISS"
    hit = await env.client.post(CHAT, json=similar, headers=A)
    assert hit.headers["x-cache"] == "SEMANTIC_HIT"
    theirs = await env.client.post(CHAT, json=similar, headers=B)
    assert theirs.headers["x-cache"] == "MISS"
    unrelated = ask("Explain photosynthesis in plants", cache=semantic)
    assert (await env.client.post(CHAT, json=unrelated, headers=A)).headers["x-cache"] == "MISS"
    tools = similar | {"tools": [{"type": "function", "function": {"name": "f"}}]}
    assert (await env.client.post(CHAT, json=tools, headers=A)).headers["x-cache"] == "MISS"


async def test_idempotency_key_returns_the_first_result_and_bills_once(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    headers = A | {"Idempotency-Key": "order-7"}
    first = await env.client.post(CHAT, json=ask("pay"), headers=headers)
    again = await env.client.post(CHAT, json=ask("pay"), headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert ups[0].stats.requests == 1
    await asyncio.sleep(0.05)
    assert len(env.events) == 1
    changed = await env.client.post(CHAT, json=ask("something else"), headers=headers)
    assert changed.status_code == 422
    # Keys are per tenant: the same key from another tenant is a new request.
    theirs = await env.client.post(
        CHAT, json=ask("pay"), headers=B | {"Idempotency-Key": "order-7"}
    )
    assert "idempotent-replayed" not in theirs.headers


async def test_native_generate_and_embeddings(env: GatewayEnv) -> None:
    response = await env.client.post(
        "/api/v1/gateway/generate", json={"prompt": "hi", "model": "chat"}, headers=A
    )
    data = response.json()["data"]
    assert data["text"] == "Hello from the mock upstream."
    assert data["usage"]["total_tokens"] == 17 and data["cached"] is False
    embedded = await env.client.post(
        "/api/v1/gateway/embeddings", json={"texts": ["a", "b"], "model": "embed"}, headers=A
    )
    assert embedded.status_code == 200
    vectors = embedded.json()["data"]["vectors"]
    assert len(vectors) == 2 and len(vectors[0]) == 64


async def test_generate_needs_exactly_one_of_prompt_and_messages(env: GatewayEnv) -> None:
    both = {"prompt": "x", "messages": [{"role": "user", "content": "y"}]}
    response = await env.client.post("/api/v1/gateway/generate", json=both, headers=A)
    assert response.status_code == 422
    assert response.json()["success"] is False


async def test_models_and_rate_limits_views(env: GatewayEnv) -> None:
    models = (await env.client.get("/v1/models", headers=A)).json()
    assert [m["id"] for m in models["data"]] == ["chat", "embed", "local", "embed-default"]
    native = (await env.client.get("/api/v1/gateway/models", headers=A)).json()["data"]
    assert native["source"] == "test"
    assert "sk-up" not in str(native)
    limits = (await env.client.get("/api/v1/gateway/rate-limits", headers=A)).json()["data"]
    assert limits["tenant_id"] == "acme" and limits["limits"]["rpm"] is None


async def test_default_routing_serves_chat_and_embeddings_offline(
    make_settings: Callable[..., Settings],
) -> None:
    async with gateway_env(make_settings()) as env:
        models = (await env.client.get("/v1/models", headers=A)).json()
        assert {m["id"] for m in models["data"]} == {
            "chat-default",
            "embed-default",
            "rerank-default",
        }
        chat = await env.client.post(CHAT, json=ask(model="chat-default"), headers=A)
        assert chat.status_code == 200
        embed = await env.client.post(
            "/v1/embeddings", json={"model": "embed-default", "input": "hello"}, headers=A
        )
        assert embed.status_code == 200
        assert len(embed.json()["data"][0]["embedding"]) == 384


async def test_hot_reload_of_the_routing_file(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - name: first\n    deployments:\n      - provider: mock\n")
    settings = make_settings(gateway_models=path, gateway_reload_poll_s=0.05)
    async with gateway_env(settings) as env:
        names = lambda r: [m["id"] for m in r.json()["data"]]  # noqa: E731
        assert names(await env.client.get("/v1/models", headers=A)) == ["first"]
        path.write_text("models:\n  - name: second\n    deployments:\n      - provider: mock\n")
        for _ in range(100):
            if names(await env.client.get("/v1/models", headers=A)) == ["second"]:
                break
            await asyncio.sleep(0.02)
        assert names(await env.client.get("/v1/models", headers=A)) == ["second"]
        path.write_text("models: [not valid")
        forbidden = await env.client.post("/api/v1/gateway/reload", headers=A)
        assert forbidden.status_code == 403
        invalid = await env.client.post("/api/v1/gateway/reload", headers=ADMIN)
        assert invalid.status_code == 422
        assert names(await env.client.get("/v1/models", headers=A)) == ["second"]


async def test_openai_client_chat_stream_tools_and_embeddings(
    env: GatewayEnv, ups: tuple[MockUpstream, MockUpstream]
) -> None:
    import openai

    token = A["Authorization"].split()[1]
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.app))
    client = openai.AsyncOpenAI(base_url="http://gw.test/v1", api_key=token, http_client=http)
    try:
        reply = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello from the mock upstream."
        assert reply.usage is not None and reply.usage.total_tokens == 17

        stream = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage
        assert "".join(parts) == "Hello from the mock upstream."
        assert usage is not None and usage.total_tokens == 17

        ups[0].control(tool_calls=True)
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ]
        called = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "weather?"}], tools=tools
        )
        call = called.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert ups[0].stats.last_body["tools"] == tools

        vectors = await client.embeddings.create(model="embed", input=["x", "y"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 64

        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="missing", messages=[{"role": "user", "content": "x"}]
            )
    finally:
        await client.close()
        await http.aclose()
