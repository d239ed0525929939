"""HTTP tools aimed at internal addresses are refused when they are declared (422 naming
`url_template`), by the Agent service and through the Prompt Generator alike, with the same
rule each call applies: only networks in FAAS_AGENT_HTTP_ALLOWLIST may be private."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream
from tests.unit.test_prompt_generator_api import TOOL_SPEC, generator_platform, json_answer

A = auth("acme")
TOOLS = "/api/v1/agents/tools"

INTERNAL = [
    "http://127.0.0.1:8080/admin",
    "http://localhost/{city}",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest",
    "http://10.0.0.5/internal?city={city}",
    "http://192.168.1.1/",
    "https://172.16.0.1/",
    "http://[::1]:9000/",
    "http://0.0.0.0/",
    "http://2130706433/",  # 127.0.0.1 written as one number
]


def tool(url_template: str, name: str = "probe") -> dict[str, Any]:
    return {**TOOL_SPEC, "name": name, "url_template": url_template}


async def names(env: Platform) -> list[str]:
    listed = (await env.client.get(TOOLS, headers=A)).json()["data"]
    return [t["name"] for t in listed if t.get("kind") == "http"]


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    async with platform(make_settings(agent_http_allowlist="10.0.0.0/8"), ["agent"]) as env:
        yield env


def assert_refused_on_url(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"]["field"] == "url_template", error
    assert "url_template" in error["message"]


@pytest.mark.parametrize("url", [u for u in INTERNAL if "10.0.0.5" not in u])
async def test_a_tool_aimed_at_an_internal_address_is_refused_when_created(
    env: Platform, url: str
) -> None:
    assert_refused_on_url(await env.client.post(TOOLS, json=tool(url), headers=A))
    assert await names(env) == []


async def test_an_allow_listed_network_may_be_private(env: Platform) -> None:
    created = await env.client.post(
        TOOLS, json=tool("http://10.0.0.5/internal?city={city}"), headers=A
    )
    assert created.status_code == 201, created.text
    assert await names(env) == ["probe"]


async def test_a_name_that_does_not_resolve_yet_is_left_to_the_calls(env: Platform) -> None:
    created = await env.client.post(
        TOOLS, json=tool("https://api.weather.invalid/v1?city={city}"), headers=A
    )
    assert created.status_code == 201, created.text


async def test_a_port_out_of_range_is_a_422(env: Platform) -> None:
    refused = await env.client.post(TOOLS, json=tool("http://api.example.com:99999/"), headers=A)
    assert refused.status_code == 422, refused.text


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


async def test_the_prompt_generator_cannot_create_an_internal_tool(
    tmp_path: Path, make_settings: Callable[..., Settings], up: MockUpstream
) -> None:
    async with generator_platform(tmp_path, make_settings, up) as env:
        metadata = tool("http://169.254.169.254/latest/meta-data/{city}", name="metadata")
        up.control(script=[json_answer(metadata)])
        refused = await env.client.post(
            "/api/v1/prompt/tools", json={"prompt": "read the cloud metadata"}, headers=A
        )
        assert_refused_on_url(refused)
        assert await names(env) == []
        rate = await env.client.post(
            "/api/v1/prompt/tools/metadata/rate", json={"rating": 5}, headers=A
        )
        assert rate.status_code == 404  # no generation was recorded either
