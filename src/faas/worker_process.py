"""`faas worker`: builds the services for the job kinds they register (their HTTP routes are not
served), runs the job worker until SIGINT/SIGTERM, and, with a health port, answers `/livez`,
`/readyz` and `/metrics` so an orchestrator can probe and scrape a worker like any service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from faas.runtime import Runtime
from faas.services import REGISTRY
from faas.shared.config import Settings


def health_app(runtime: Runtime) -> Starlette:
    """Live while the worker runs; ready while the database, the kv store and NATS (which a
    worker cannot do without) answer."""

    async def livez(_: Request) -> Response:
        alive = runtime.worker is not None
        return JSONResponse({"status": "ok" if alive else "stopped"}, 200 if alive else 503)

    async def readyz(_: Request) -> Response:
        checks = await runtime.readiness()
        ready = runtime.worker is not None and all(checks.values())
        body = {
            "status": "ready" if ready else "not_ready",
            "checks": {k: "ok" if v else "down" for k, v in checks.items()},
            "kinds": sorted(runtime.worker.kinds if runtime.worker else ()),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(_: Request) -> Response:
        text = runtime.telemetry.prometheus_text()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [Route("/livez", livez), Route("/readyz", readyz), Route("/metrics", metrics)]
    return Starlette(routes=routes)


class _HealthServer(uvicorn.Server):
    """uvicorn, leaving SIGINT/SIGTERM to the worker (which drains its jobs first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_health(runtime: Runtime, host: str, port: int, stop: asyncio.Event) -> None:
    config = uvicorn.Config(
        health_app(runtime), host=host, port=port, log_level="warning", access_log=False
    )
    server = _HealthServer(config)
    task = asyncio.create_task(server.serve(), name="worker-health")
    await stop.wait()
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_worker(
    settings: Settings,
    kinds: list[str] | None,
    *,
    health: tuple[str, int] | None,
    announce: Callable[[str], None],
) -> None:
    runtime = Runtime.build(settings)
    services = [spec.build(runtime) for spec in REGISTRY.selected(settings)]
    runtime.load_job_modules()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start(run_worker=False)
    try:
        for service in services:
            await service.start()
        worker = await runtime.start_worker(kinds)
        consuming = ", ".join(worker.kinds) or "nothing (no job kinds)"
        announce(f"worker {os.getpid()} consuming {consuming}")
        if health is None:
            await stop.wait()
        else:
            announce(f"worker health on http://{health[0]}:{health[1]}/readyz")
            await serve_health(runtime, *health, stop)
    finally:
        await runtime.stop_worker()
        for service in reversed(services):
            await service.stop()
        await runtime.close()
