"""The platform's input rule (src/faas/shared/input_rules.py), held at every service: each case
here was a 500 found by fuzzing, and is now a 422 naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from faas.services import BUILDERS
from faas.shared.config import Settings
from faas.shared.exceptions import ValidationFailed
from faas.shared.input_rules import MAX_DB_INT, check_json_body
from tests.conftest import TEST_SECRET, auth
from tests.platform_app import Platform, platform
from tests.support.pgvector import fresh_database

H = auth("acme", "ann")
BIG = 2**64  # one past what orjson can encode
HUGE = 2**63  # one past SQLite's INTEGER


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(data_dir=tmp_path / "data", jwt_secret=TEST_SECRET, log_requests=False)
    async with platform(settings, list(BUILDERS)) as running:
        yield running


def refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["success"] is False
    text = str(body["error"])
    assert field in text, body


@pytest.mark.parametrize(
    "body",
    [b'{"a": 18446744073709551616}', b'{"a": -9223372036854775809}', b'{"a": [1, NaN]}'],
)
def test_numbers_json_cannot_carry_are_refused_naming_the_field(body: bytes) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_json_body(body)
    assert caught.value.details["field"].startswith("a")


def test_ordinary_json_passes_unchanged() -> None:
    body = b'{"n": 18446744073709551615, "s": "12345678901234567890123", "f": 1.5e300}'
    assert check_json_body(body) == {
        "n": 18446744073709551615,
        "s": "12345678901234567890123",
        "f": 1.5e300,
    }


def test_nul_is_refused_in_values_and_keys() -> None:
    for body in (b'{"m": {"x": "a\\u0000b"}}', b'{"m": {"a\\u0000": 1}}'):
        with pytest.raises(ValidationFailed) as caught:
            check_json_body(body)
        assert caught.value.details["field"].startswith("m")
    assert check_json_body(b'{"m": "a\\\\u0000b"}') == {"m": "a\\u0000b"}  # an escaped backslash


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs",
        "/api/v1/agents",
        "/api/v1/ingestion/files",
        "/api/v1/ml/datasets",
        "/api/v1/ml/models",
        "/api/v1/prompts/templates",
        "/api/v1/rag/documents",
        "/api/v1/llmops/operations",
    ],
)
async def test_page_offsets_past_a_database_integer_are_refused(env: Platform, path: str) -> None:
    refused(await env.client.get(path, params={"offset": HUGE}, headers=H), "offset")
    ok = await env.client.get(path, params={"offset": MAX_DB_INT}, headers=H)
    assert ok.status_code == 200, ok.text


async def test_ml_versions_past_a_database_integer_are_refused(env: Platform) -> None:
    response = await env.client.post(
        "/api/v1/ml/models/m/predict", json={"rows": [{"x": 1}], "version": HUGE}, headers=H
    )
    refused(response, "version")


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "post",
            "/api/v1/rag/documents",
            {"title": "t", "content": "c", "metadata": {"n": BIG}},
            "metadata.n",
        ),
        (
            "post",
            "/api/v1/prompts/context",
            {"messages": [{"role": "user", "content": "x", "n": BIG}]},
            "messages.0.n",
        ),
        ("put", "/api/v1/gateway/limits/acme", {"rpm": BIG}, "rpm"),
        (
            "post",
            "/api/v1/gateway/generate",
            {
                "model": "chat-default",
                "prompt": "x",
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"maximum": BIG}}}
                ],
            },
            "tools.0.function.parameters.maximum",
        ),
        ("post", "/api/v1/cache", {"key": "k", "value": {"x": float("nan")}}, "value.x"),
        (
            "post",
            "/api/v1/rag/search",
            {"query_embedding": [0.1, float("inf")]},
            "query_embedding.1",
        ),
        ("post", "/api/v1/ml/models/m/predict", {"rows": [{"x": float("inf")}]}, "rows.0.x"),
        ("post", "/api/v1/prompts/templates", {"name": "t", "content": "a\x00b"}, "content"),
    ],
)
async def test_free_form_json_is_held_to_the_rule(
    env: Platform, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    import json

    raw = json.dumps(body).encode()  # stdlib json writes NaN/Infinity and big ints as given
    admin = auth("acme", "ann", scopes=["admin"])
    response = await env.client.request(
        method, path, content=raw, headers=admin | {"content-type": "application/json"}
    )
    refused(response, field)


async def test_an_agent_update_with_null_or_a_wrong_type_is_a_422(env: Platform) -> None:
    created = await env.client.post("/api/v1/agents", json={"name": "helper"}, headers=H)
    agent_id = created.json()["data"]["id"]
    for body, field in [({"name": None}, "name"), ({"max_iterations": "many"}, "max_iterations")]:
        response = await env.client.put(f"/api/v1/agents/{agent_id}", json=body, headers=H)
        refused(response, field)
    unchanged = await env.client.get(f"/api/v1/agents/{agent_id}", headers=H)
    assert unchanged.json()["data"]["name"] == "helper"


async def test_control_characters_in_ids_are_refused_in_bodies_and_urls(env: Platform) -> None:
    admin = auth("acme", "ann", scopes=["admin"])
    grant = {
        "resource_type": "agent",
        "resource_id": "a\x01b",
        "user_id": "bob",
        "permission": "read",
        "action": "grant",
    }
    refused(
        await env.client.post("/api/v1/prompt/permissions", json=grant, headers=admin),
        "resource_id",
    )
    refused(await env.client.get("/api/v1/cache/a%01b", headers=H), "path")
    refused(
        await env.client.get(
            "/api/v1/prompt/permissions", params={"resource_id": "a\x00"}, headers=H
        ),
        "resource_id",
    )


async def test_a_streamed_query_with_an_unknown_model_fails_before_the_stream(
    env: Platform,
) -> None:
    await env.client.post(
        "/api/v1/rag/documents",
        json={"title": "Refunds", "content": "Refunds are paid within 14 days."},
        headers=H,
    )
    response = await env.client.post(
        "/api/v1/rag/query",
        json={"query": "How long do refunds take?", "stream": True, "model": "no-such-model"},
        headers=H,
    )
    assert response.status_code in (404, 422), response.text
    assert response.json()["success"] is False


def test_json_nested_deeper_than_the_limit_is_refused_naming_where() -> None:
    deep = b'{"variables": {"x": ' + b"[" * 300 + b"]" * 300 + b"}}"
    with pytest.raises(ValidationFailed) as caught:
        check_json_body(deep)
    assert caught.value.details["rule"] == "depth"
    assert caught.value.details["field"].startswith("variables.x.0.0")
    wide = b"[" + b",".join([b"[1]"] * 1000) + b"]"  # many brackets, shallow
    assert len(check_json_body(wide)) == 1000


async def test_deep_json_is_a_422_not_a_500(env: Platform) -> None:
    body = b'{"name": "t", "variables": {"x": ' + b"[" * 300 + b"]" * 300 + b"}}"
    response = await env.client.post(
        "/api/v1/prompts/render", content=body, headers=H | {"content-type": "application/json"}
    )
    refused(response, "variables.x")


@pytest.mark.integration
async def test_postgresql_gets_the_same_422s_as_sqlite(tmp_path: Path, postgres_url: str) -> None:
    """PostgreSQL refuses NUL in text and overflows on big offsets where SQLite did not: the
    edge rule answers both before the database sees them."""
    async with fresh_database(postgres_url, "faas_rules") as url:
        settings = Settings(
            data_dir=tmp_path / "pg",
            jwt_secret=TEST_SECRET,
            log_requests=False,
            database_url=url,
        )
        async with platform(settings, ["prompt", "agent"]) as running:
            nul = await running.client.post(
                "/api/v1/prompts/templates", json={"name": "t", "content": "a\x00b"}, headers=H
            )
            refused(nul, "content")
            for path in ("/api/v1/prompts/templates", "/api/v1/agents"):
                refused(
                    await running.client.get(path, params={"offset": HUGE}, headers=H), "offset"
                )
            ok = await running.client.post(
                "/api/v1/prompts/templates", json={"name": "t", "content": "a b"}, headers=H
            )
            assert ok.status_code == 201, ok.text


async def test_a_filter_holding_a_float_past_64_bit_integers_is_answered(env: Platform) -> None:
    """Found by the fuzz run: an integer-valued float beyond 2**63 in a filter was turned into
    an int that orjson cannot encode."""
    await env.client.post(
        "/api/v1/rag/documents", json={"title": "a", "content": "Refunds take 14 days."}, headers=H
    )
    response = await env.client.post(
        "/api/v1/rag/search",
        json={"query_text": "refunds", "filters": {"n": 1.8446744073709552e19}},
        headers=H,
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["results"] == []
