"""The dashboard link `/llmops/dashboard?token=<jwt>`: a browser following it sends no
Authorization header, so the page itself must be public; the page then calls the metrics API
with the link's token as its bearer token, and that token (not the page) is what authorises the
data. The calls are read from the page itself, so the test follows the page if it changes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from faas.shared.config import Settings
from tests.conftest import token_for
from tests.platform_app import Platform, platform

DASHBOARD = "/llmops/dashboard"
NOW = datetime.now(UTC)
# What the page's `${q}` and `${step}` stand for when it loads the last 24 hours.
PAGE_QUERY = {
    "${q}": f"from={quote((NOW - timedelta(hours=25)).isoformat())}"
    f"&to={quote((NOW + timedelta(hours=1)).isoformat())}",
    "${step}": "hour",
    "${by}": "key",  # the spend-by table's grouping
}


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    async with platform(make_settings(), ["llmops"]) as env:
        yield env


def page_calls(html: str) -> list[str]:
    """The API paths the page fetches with the token, its template placeholders filled in."""
    calls = []
    for template in re.findall(r"api\(`([^`]+)`, token\)", html):
        for placeholder, value in PAGE_QUERY.items():
            template = template.replace(placeholder, value)
        assert "${" not in template, template
        calls.append(template)
    return calls


async def test_the_link_opens_the_page_without_an_authorization_header(env: Platform) -> None:
    response = await env.client.get(DASHBOARD, params={"token": token_for("acme", "ann")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert 'params.get("token")' in html  # the page reads the link's token ...
    assert "Authorization: `Bearer ${token}`" in html  # ... and sends it with its calls
    assert page_calls(html), "the page makes no API call with the token"


async def test_the_links_token_authorises_the_calls_the_page_makes(env: Platform) -> None:
    token = token_for("acme", "ann")
    bearer = {"Authorization": f"Bearer {token}"}
    seeded = await env.client.post(
        "/api/v1/llmops/operations",
        json=[{"model": "gpt-alpha", "prompt_tokens": 10, "completion_tokens": 5}],
        headers=bearer,
    )
    assert seeded.status_code == 201, seeded.text
    page = await env.client.get(DASHBOARD, params={"token": token})
    assert page.status_code == 200, page.text
    calls = page_calls(page.text)
    assert calls
    for call in calls:
        answered = await env.client.get(call, headers=bearer)
        assert answered.status_code == 200, (call, answered.text)
        data = answered.json()["data"]
        totals = data["totals"] if "totals" in data else {"count": data["groups"][0]["count"]}
        assert data["tenant_id"] == "acme" and totals["count"] == 1
        forged = token_for("acme", "ann")[:-4] + "AAAA"
        for headers in ({}, {"Authorization": f"Bearer {forged}"}):
            refused = await env.client.get(call, headers=headers)
            assert refused.status_code == 401, (call, headers)
            assert refused.json()["error"]["code"] == "unauthenticated"
