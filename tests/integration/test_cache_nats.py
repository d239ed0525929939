"""The cache service on real NATS: readiness reports NATS, and losing NATS degrades readiness
without failing requests."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from faas.shared.config import Settings
from tests.cache_app import build_cache_app
from tests.conftest import auth, open_client

pytestmark = pytest.mark.integration


async def test_readyz_reports_nats_ok(
    make_settings: Callable[..., Settings], nats_url: str
) -> None:
    settings = make_settings(nats_url=nats_url, nats_prefix=f"t{uuid.uuid4().hex[:8]}")
    async for client in open_client(build_cache_app(settings)):
        body = (await client.get("/readyz")).json()
        assert body["checks"]["nats"] == "ok" and body["status"] == "ready"
        assert body["backends"]["bus"] == "nats"


async def test_unreachable_nats_degrades_readiness_but_requests_work(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(nats_url="nats://127.0.0.1:4999")
    async for client in open_client(build_cache_app(settings)):
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["nats"] == "down"
        headers = auth("acme")
        await client.post(
            "/api/v1/cache", json={"key": "k", "value": 1, "tags": ["t"]}, headers=headers
        )
        invalidated = await client.post(
            "/api/v1/cache/invalidate", json={"tags": ["t"]}, headers=headers
        )
        assert invalidated.status_code == 200  # the event is buffered, the request succeeds
        assert invalidated.json()["data"]["removed"] == 1
