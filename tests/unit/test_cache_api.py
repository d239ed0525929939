"""The cache service through the real app, with real tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

from faas.shared.config import Settings
from tests.cache_app import build_cache_app
from tests.conftest import auth, open_client

A = auth("acme")
B = auth("globex")


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(cache_max_value_bytes=1000, max_body_bytes=5000)
    async for c in open_client(build_cache_app(settings)):
        yield c


async def put(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> httpx.Response:
    return await client.post("/api/v1/cache", json=body, headers=headers)


async def test_set_then_get_returns_the_value_in_an_envelope(client: httpx.AsyncClient) -> None:
    created = await put(client, A, key="user:1", value={"name": "Ada", "langs": ["py"]}, ttl_s=60)
    assert created.status_code == 201
    assert created.json()["data"] == {
        "key": "user:1",
        "namespace": "default",
        "bytes": 29,
        "ttl_s": 60.0,
    }
    response = await client.get("/api/v1/cache/user:1", headers=A)
    body = response.json()
    assert body["success"] is True
    assert body["data"]["found"] is True
    assert body["data"]["value"] == {"name": "Ada", "langs": ["py"]}
    assert 0 < body["data"]["ttl_remaining_s"] <= 60
    assert body["request_id"] == response.headers["x-request-id"]


async def test_a_miss_is_found_false_not_an_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/cache/nothing", headers=A)
    assert response.status_code == 200
    assert response.json()["data"] == {
        "key": "nothing",
        "namespace": "default",
        "found": False,
        "value": None,
        "ttl_remaining_s": None,
    }


async def test_ttl_expires_the_value(client: httpx.AsyncClient) -> None:
    await put(client, A, key="short", value=1, ttl_s=0.2)
    await asyncio.sleep(0.3)
    assert (await client.get("/api/v1/cache/short", headers=A)).json()["data"]["found"] is False


async def test_namespaces_are_separate(client: httpx.AsyncClient) -> None:
    await put(client, A, key="k", value="in-a", namespace="a")
    await put(client, A, key="k", value="in-b", namespace="b")
    got = await client.get("/api/v1/cache/k", params={"namespace": "a"}, headers=A)
    assert got.json()["data"]["value"] == "in-a"
    assert (await client.get("/api/v1/cache/k", headers=A)).json()["data"]["found"] is False


async def test_tenant_b_never_reads_tenant_a_keys(client: httpx.AsyncClient) -> None:
    await put(client, A, key="secret", value="a-only", tags=["t1"])
    assert (await client.get("/api/v1/cache/secret", headers=B)).json()["data"]["found"] is False
    mget = await client.post("/api/v1/cache/mget", json={"keys": ["secret"]}, headers=B)
    assert mget.json()["data"]["entries"][0]["found"] is False
    # B's invalidations and clears never touch A's data.
    inv = await client.post(
        "/api/v1/cache/invalidate", json={"pattern": "*", "tags": ["t1"]}, headers=B
    )
    assert inv.json()["data"]["removed"] == 0
    await client.delete("/api/v1/cache", headers=B)
    await client.delete("/api/v1/cache/secret", headers=B)
    assert (await client.get("/api/v1/cache/secret", headers=A)).json()["data"]["value"] == "a-only"
    stats_b = (await client.get("/api/v1/cache/stats", headers=B)).json()["data"]
    assert stats_b["keys"] == 0 and stats_b["tenant_id"] == "globex"


async def test_a_tenant_named_in_the_body_is_ignored(client: httpx.AsyncClient) -> None:
    await put(client, B, key="mine", value=1, tenant_id="acme")
    assert (await client.get("/api/v1/cache/mine", headers=A)).json()["data"]["found"] is False
    assert (await client.get("/api/v1/cache/mine", headers=B)).json()["data"]["found"] is True


async def test_delete_removes_the_key(client: httpx.AsyncClient) -> None:
    await put(client, A, key="gone", value=1)
    response = await client.delete("/api/v1/cache/gone", headers=A)
    assert response.status_code == 204
    assert (await client.get("/api/v1/cache/gone", headers=A)).json()["data"]["found"] is False


async def test_mset_and_mget(client: httpx.AsyncClient) -> None:
    items = [{"key": "m1", "value": 1}, {"key": "m2", "value": [2], "ttl_s": 30}]
    stored = await client.post("/api/v1/cache/mset", json={"items": items}, headers=A)
    assert stored.status_code == 201 and stored.json()["data"]["stored"] == 2
    got = await client.post("/api/v1/cache/mget", json={"keys": ["m2", "zz", "m1"]}, headers=A)
    entries = got.json()["data"]["entries"]
    assert [(e["key"], e["found"], e["value"]) for e in entries] == [
        ("m2", True, [2]),
        ("zz", False, None),
        ("m1", True, 1),
    ]


async def test_invalidate_by_pattern_stays_in_the_namespace(client: httpx.AsyncClient) -> None:
    for key in ("user:1", "user:2", "order:1"):
        await put(client, A, key=key, value=key)
    await put(client, A, key="user:9", value=9, namespace="other")
    response = await client.post("/api/v1/cache/invalidate", json={"pattern": "user:*"}, headers=A)
    assert response.json()["data"]["removed"] == 2
    assert (await client.get("/api/v1/cache/order:1", headers=A)).json()["data"]["found"] is True
    other = await client.get("/api/v1/cache/user:9", params={"namespace": "other"}, headers=A)
    assert other.json()["data"]["found"] is True


async def test_invalidate_by_tag(client: httpx.AsyncClient) -> None:
    await put(client, A, key="p1", value=1, tags=["products"])
    await put(client, A, key="p2", value=2, tags=["products", "sale"])
    await put(client, A, key="x", value=3, tags=["other"])
    response = await client.post("/api/v1/cache/invalidate", json={"tags": ["products"]}, headers=A)
    assert response.json()["data"]["removed"] == 2
    assert (await client.get("/api/v1/cache/x", headers=A)).json()["data"]["found"] is True


async def test_invalidate_needs_a_pattern_or_tags(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/cache/invalidate", json={}, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"


async def test_clear_removes_only_the_callers_keys(client: httpx.AsyncClient) -> None:
    await put(client, A, key="a1", value=1)
    await put(client, B, key="b1", value=1)
    response = await client.delete("/api/v1/cache", headers=A)
    assert response.json()["data"]["removed"] == 1
    assert (await client.get("/api/v1/cache/b1", headers=B)).json()["data"]["found"] is True


async def test_stats_count_hits_misses_keys_and_bytes(client: httpx.AsyncClient) -> None:
    await put(client, A, key="s1", value="abc")
    await client.get("/api/v1/cache/s1", headers=A)
    await client.get("/api/v1/cache/s1", headers=A)
    await client.get("/api/v1/cache/nope", headers=A)
    stats = (await client.get("/api/v1/cache/stats", headers=A)).json()["data"]
    assert stats == {
        "tenant_id": "acme",
        "hits": 2,
        "misses": 1,
        "hit_rate": 0.6667,
        "keys": 1,
        "bytes": 5,
    }


@pytest.mark.parametrize("key", ["has space", "a" * 257, "semi;colon", "stats"])
async def test_invalid_keys_are_422(client: httpx.AsyncClient, key: str) -> None:
    response = await put(client, A, key=key, value=1)
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "validation_failed"
    assert body["error"]["details"]["errors"][0]["loc"] == ["body", "key"]


async def test_invalid_key_in_the_path_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/cache/bad%20key", headers=A)
    assert response.status_code == 422


async def test_negative_ttl_is_422(client: httpx.AsyncClient) -> None:
    assert (await put(client, A, key="k", value=1, ttl_s=-1)).status_code == 422


async def test_value_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await put(client, A, key="big", value="x" * 2000)
    assert response.status_code == 413
    assert response.json()["error"]["details"]["max_value_bytes"] == 1000


async def test_body_over_the_limit_is_413_before_parsing(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/cache",
        content=b"{" + b" " * 6000 + b"}",
        headers=A | {"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = await client.post(
        "/api/v1/cache", content=chunks(), headers=A | {"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_malformed_json_is_400_error_response(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/cache", content=b"{not json", headers=A | {"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "undecodable_body"
    assert body["error"]["details"]["field"] == "body"


async def test_unknown_route_is_404_error_response(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here", headers=A)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_wrong_method_is_405_error_response(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/cache/stats", headers=A)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_readyz_reports_backends(client: httpx.AsyncClient) -> None:
    body = (await client.get("/readyz")).json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "kv": "ok"}
    assert body["backends"] == {"database": "sqlite", "kv": "memory", "bus": "inprocess"}


async def test_invalidation_and_clear_publish_cache_invalidated_events(
    client: httpx.AsyncClient,
) -> None:
    from faas.integrations.bus import Message

    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    bus = transport.app.state.runtime.bus  # type: ignore[attr-defined]
    seen: list[Message] = []

    async def collect(message: Message) -> None:
        seen.append(message)

    await bus.subscribe("cache.invalidated.>", collect)
    await put(client, A, key="t1", value=1, tags=["x"])
    await client.post("/api/v1/cache/invalidate", json={"tags": ["x"]}, headers=A)
    await client.delete("/api/v1/cache", headers=B)
    for _ in range(100):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.01)
    assert [m.subject for m in seen] == ["cache.invalidated.acme", "cache.invalidated.globex"]
    first = orjson.loads(seen[0].data)
    assert first["data"]["removed"] == 1 and first["data"]["tags"] == ["x"]
    assert seen[0].headers["X-Tenant-ID"] == "acme"
    assert orjson.loads(seen[1].data)["data"]["all"] is True
