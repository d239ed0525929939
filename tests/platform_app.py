"""Builds an app with several services on one runtime, as `faas up` does (in-process calls
between them go through the same app)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services import BUILDERS
from faas.shared.config import Settings


@dataclass
class Platform:
    app: FastAPI
    runtime: Runtime
    client: httpx.AsyncClient


@asynccontextmanager
async def platform(settings: Settings, names: Sequence[str]) -> AsyncIterator[Platform]:
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    services = [BUILDERS[name](runtime) for name in names]
    runtime.load_job_modules()
    app = create_service_app(services, runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://faas.test", timeout=60
        ) as client:
            yield Platform(app, runtime, client)
