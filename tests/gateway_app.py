"""Builds a gateway app for API tests, with a collector of its usage events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from faas.app import create_service_app
from faas.backends.limits import Clock, build_limit_store
from faas.integrations.bus import Message
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services.gateway_service.routing_table import RoutingTable
from faas.services.gateway_service.service import GatewayService
from faas.shared.config import Settings


@dataclass
class GatewayEnv:
    app: FastAPI
    runtime: Runtime
    service: GatewayService
    client: httpx.AsyncClient
    events: list[dict[str, Any]] = field(default_factory=list)


def routing(*models: dict[str, Any]) -> RoutingTable:
    return RoutingTable.model_validate({"models": list(models), "source": "test"})


PRICE = {"input_per_1k": 1.0, "output_per_1k": 2.0}
EMBED_PRICE = {"input_per_1k": 0.5}


def priced_table(upstream_url: str) -> RoutingTable:
    """`chat` and `embed` on one OpenAI-compatible upstream, priced with PRICE / EMBED_PRICE."""
    deployment = {
        "provider": "openai",
        "model": "mock-model",
        "api_base": upstream_url,
        "api_key": "sk-up",
        "timeout_s": 5,
    }
    return routing(
        {"name": "chat", "deployments": [deployment | {"price": PRICE}]},
        {
            "name": "embed",
            "kind": "embedding",
            "deployments": [deployment | {"price": EMBED_PRICE}],
        },
    )


@asynccontextmanager
async def gateway_env(
    settings: Settings, table: RoutingTable | None = None, *, clock: Clock | None = None
) -> AsyncIterator[GatewayEnv]:
    """`clock` fixes the time the limit store counts its minute, day and month windows in."""
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    service = GatewayService(
        settings,
        kv=runtime.kv,
        db=runtime.db,
        events=runtime.events,
        meter=runtime.telemetry.meter,
        routing=table,
        limit_store=None if clock is None else build_limit_store(settings, runtime.kv, clock),
    )
    app = create_service_app([service], runtime)
    async with app.router.lifespan_context(app):
        events: list[dict[str, Any]] = []

        async def collect(message: Message) -> None:
            events.append(orjson.loads(message.data))

        await runtime.bus.subscribe("gateway.usage.>", collect)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            yield GatewayEnv(app, runtime, service, client, events)
