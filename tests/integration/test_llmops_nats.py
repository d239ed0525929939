"""Gateway and LLMOps as two separate runtimes that share only NATS (JetStream) and a real
PostgreSQL database: real gateway calls become operations with the right cost, redelivered and
republished events are counted once, and usage published while LLMOps is down is not lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import orjson
import pytest

from faas.integrations.bus.nats import NatsBus
from faas.integrations.bus.nats_admin import server_barrier
from faas.integrations.bus.subjects import event_stream_name
from faas.services.llmops_service.service import LlmopsService
from faas.shared.config import Settings
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, priced_table
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import USAGE, MockUpstream
from tests.support.pgvector import fresh_database

pytestmark = pytest.mark.integration

CHAT_COST = (USAGE["prompt_tokens"] * 1.0 + USAGE["completion_tokens"] * 2.0) / 1000


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as server:
        yield server


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_url, "faas_llmops") as url:
        yield url


def table(up: MockUpstream) -> Any:
    return priced_table(up.url)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def operations(llmops: Platform, headers: dict[str, str]) -> list[dict[str, Any]]:
    got = await llmops.client.get(
        "/api/v1/llmops/operations", params={"limit": 100}, headers=headers
    )
    assert got.status_code == 200, got.text
    return list(got.json()["data"]["items"])


async def chat(gateway: GatewayEnv, headers: dict[str, str], **extra: Any) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **extra}
    response = await gateway.client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_gateway_usage_reaches_llmops_over_jetstream(
    make_settings: Callable[..., Settings], nats_url: str, database: str, up: MockUpstream
) -> None:
    prefix = f"llmops{uuid.uuid4().hex[:10]}"
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    headers = auth(tenant, "ann")
    common = {"nats_url": nats_url, "nats_prefix": prefix, "database_url": database}
    llmops_settings = make_settings(**common)
    gateway_settings = make_settings(**common)

    try:
        async with platform(llmops_settings, ["llmops"]) as llmops:
            service = llmops.app.state.services["llmops"]
            assert isinstance(service, LlmopsService)
            assert isinstance(llmops.runtime.bus, NatsBus)
            async with gateway_env(gateway_settings, table(up)) as gateway:
                await chat(gateway, headers)
                await chat(gateway, headers, stream=True, stream_options={"include_usage": True})
                embedded = await gateway.client.post(
                    "/v1/embeddings", json={"model": "embed", "input": "one two"}, headers=headers
                )
                assert embedded.status_code == 200, embedded.text

                async def three() -> bool:
                    return len(await operations(llmops, headers)) >= 3

                await eventually(three)
                items = await operations(llmops, headers)
                assert len(items) == 3
                by_op = {(i["operation"], i["stream"]): i for i in items}
                for key in [("chat", False), ("chat", True)]:
                    op = by_op[key]
                    assert op["source"] == "gateway" and op["model"] == "chat"
                    assert op["prompt_tokens"] == USAGE["prompt_tokens"]
                    assert op["completion_tokens"] == USAGE["completion_tokens"]
                    assert op["cost_usd"] == pytest.approx(CHAT_COST)
                    assert op["user_id"] == "ann" and op["status"] == "ok"
                embed = by_op[("embeddings", False)]
                assert embed["cost_usd"] == pytest.approx(embed["prompt_tokens"] * 0.5 / 1000)

                # The same event again, under a new Nats-Msg-Id so JetStream's own dedup window
                # lets it through: the database's (tenant, id) key must still count it once.
                event = gateway.events[0]
                for n in range(2):
                    await gateway.runtime.bus.publish(
                        f"gateway.usage.{tenant}",
                        orjson.dumps(event),
                        {"Content-Type": "application/json", "Nats-Msg-Id": f"replay-{n}"},
                    )
                batches = service.batches

                async def replay_handled() -> bool:
                    return service.batches > batches

                await eventually(replay_handled)
                assert len(await operations(llmops, headers)) == 3
                metrics = await llmops.client.get(
                    "/api/v1/llmops/metrics", params={"group_by": "model"}, headers=headers
                )
                assert metrics.status_code == 200, metrics.text
                totals = metrics.json()["data"]["totals"]
                assert totals["count"] == 3
                assert totals["cost_usd"] == pytest.approx(
                    2 * CHAT_COST + embed["cost_usd"], rel=1e-6
                )

                # LLMOps goes away; the gateway keeps serving; the stream keeps the usage.
                await service.stop()
                # Its unsubscribe reaches the server before the gateway publishes (two
                # connections: no order between them): else a message can be pushed to the
                # subscription just closed and only comes back after the 30 s ack wait.
                assert llmops.runtime.bus.client is not None
                await server_barrier(llmops.runtime.bus.client)
                await chat(gateway, headers)
                await chat(gateway, headers)
                assert gateway.runtime.bus.client is not None
                await server_barrier(gateway.runtime.bus.client)
                js = gateway.runtime.bus.client.jetstream()
                info = await js.stream_info(event_stream_name(prefix, "usage"))
                assert info.state.messages >= 2
                assert len(await operations(llmops, headers)) == 3

                await service.start()

                async def five() -> bool:
                    return len(await operations(llmops, headers)) >= 5

                await eventually(five)
                assert len(await operations(llmops, headers)) == 5
    finally:
        nc = await nats.connect(nats_url)
        try:
            for name in ("usage", "jobs", "dlq"):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await nc.jetstream().delete_stream(event_stream_name(prefix, name))
        finally:
            await nc.close()
