"""The prompt generator's prefix: `/api/v1/prompt-generator` serves it; the first prefix,
`/api/v1/prompt`, still answers for one release, marked deprecated and hidden from OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from faas.shared.config import Settings
from tests.platform_app import Platform
from tests.support.mock_upstream import MockUpstream
from tests.unit.test_prompt_generator_api import AGENT_SPEC, A, generator_platform, json_answer

NEW = "/api/v1/prompt-generator"
OLD = "/api/v1/prompt"


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def env(
    tmp_path: Path, make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[Platform]:
    async with generator_platform(tmp_path, make_settings, up) as env:
        yield env


async def test_the_new_prefix_serves_the_generator_without_deprecation(
    env: Platform, up: MockUpstream
) -> None:
    up.control(script=[json_answer(AGENT_SPEC)])
    made = await env.client.post(f"{NEW}/agents", json={"prompt": "refunds"}, headers=A)
    assert made.status_code == 201, made.text
    assert "deprecation" not in made.headers and "link" not in made.headers
    agent_id = made.json()["data"]["agent"]["id"]
    check = await env.client.get(
        f"{NEW}/permissions/check",
        params={"resource_id": agent_id, "user_id": "u1", "permission": "admin"},
        headers=A,
    )
    assert check.status_code == 200, check.text
    assert check.json()["data"] == {"allowed": True, "reason": "owner"}
    stats = await env.client.get(f"{NEW}/agents/{agent_id}/feedback", headers=A)
    assert stats.status_code == 200 and stats.json()["data"]["count"] == 0


async def test_the_old_prefix_answers_marked_deprecated_with_its_successor(
    env: Platform, up: MockUpstream
) -> None:
    up.control(script=[json_answer(AGENT_SPEC)])
    made = await env.client.post(f"{OLD}/agents", json={"prompt": "refunds"}, headers=A)
    assert made.status_code == 201, made.text
    assert made.headers["deprecation"] == "true"
    assert made.headers["link"] == f'<{NEW}/agents>; rel="successor-version"'
    agent_id = made.json()["data"]["agent"]["id"]

    query = {"user_id": "u2", "permission": "read"}
    listed = await env.client.get(f"{OLD}/permissions/accessible", params=query, headers=A)
    assert listed.status_code == 200, listed.text
    assert listed.headers["deprecation"] == "true"
    successor = f"{NEW}/permissions/accessible?user_id=u2&permission=read"
    assert listed.headers["link"] == f'<{successor}>; rel="successor-version"'

    # Errors are marked too: the caller learns of the move whatever the answer.
    missing = await env.client.get(f"{OLD}/tools/nothing/feedback", headers=A)
    assert missing.status_code == 404
    assert missing.headers["deprecation"] == "true"
    assert missing.headers["link"] == f'<{NEW}/tools/nothing/feedback>; rel="successor-version"'
    # Both prefixes reach the same data.
    same = await env.client.get(f"{NEW}/agents/{agent_id}/feedback", headers=A)
    assert same.status_code == 200, same.text


async def test_only_the_new_prefix_is_in_the_openapi_schema(env: Platform) -> None:
    paths = set((await env.client.get("/openapi.json")).json()["paths"])
    generator = {p for p in paths if p.startswith(f"{NEW}/")}
    assert f"{NEW}/agents" in generator and f"{NEW}/permissions/check" in generator
    assert not {p for p in paths if p.startswith(f"{OLD}/")}
