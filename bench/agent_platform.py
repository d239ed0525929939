"""The platform the agents benchmark (bench/agents.py) measures, and what it measures with.

- The scripted OpenAI-compatible upstream, served by its own process (`python
  bench/agent_platform.py PORT`), so that its CPU is not the platform's: it answers by the state
  of each conversation (calculator call, calculator call, answer), so concurrent runs cannot
  take each other's answers, after a fixed latency set at run time (`POST /_control`).
- A fresh PostgreSQL database per run (created, migrated by the platform, dropped after).
- The platform: gateway + cache + rag + prompt + agent on one runtime (the `faas up` layout)
  called through httpx's in-process ASGI transport with real bearer tokens, with counters of
  database transactions and of time inside `db.session()` blocks, and the gateway's own
  overhead header recorded per model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
from sqlalchemy import event

from _common import PYTHON, ROOT, free_port, stop_process, wait_http_ok

if str(ROOT) not in sys.path:  # the mock upstream lives in tests/support
    sys.path.insert(0, str(ROOT))

from tests.support.mock_upstream import MockUpstream, MockUpstreamApp

from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services import BUILDERS
from faas.services.gateway_service.client import GatewayClient
from faas.shared.auth import mint_token
from faas.shared.config import Settings

SECRET = "bench-secret-" + "x" * 40
TENANT = "bench"
SERVICES = ["gateway", "cache", "rag", "prompt", "agent"]


# -- the scripted upstream, in its own process ---------------------------------------------------


def _call(expression: str, call_id: str) -> dict[str, Any]:
    arguments = orjson.dumps({"expression": expression}).decode()
    function = {"name": "calculator", "arguments": arguments}
    return {"id": call_id, "type": "function", "function": function}


class ScriptedUpstreamApp(MockUpstreamApp):
    """The mock upstream (same server, latency control and stats) answering by the state of
    each conversation instead of a shared script queue: with tools offered, a calculator call
    for each of the first two model steps after the last user message, then a final answer;
    without tools, an answer."""

    async def _chat(self, request: dict[str, Any], send: Any) -> None:
        messages = request.get("messages") or []
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
        tool_results = sum(1 for m in messages[last_user:] if m.get("role") == "tool")
        if request.get("tools") and tool_results < 2:
            expression = "17 * 3" if tool_results == 0 else "51 + 2"
            scripted: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [_call(expression, f"call_{tool_results + 1}")],
            }
        else:
            scripted = {"role": "assistant", "content": f"The answer is 53 ({len(messages)})."}
        self.controls.script.append(scripted)
        await super()._chat(request, send)


async def _serve(port: int) -> None:
    upstream = MockUpstream(port=port)
    upstream.app = ScriptedUpstreamApp()  # before start: uvicorn serves the app it is given
    async with upstream:
        await asyncio.Event().wait()


@contextlib.contextmanager
def upstream_process() -> Iterator[str]:
    """The scripted upstream as a process; yields its base URL (`http://127.0.0.1:PORT`)."""
    port = free_port()
    proc = subprocess.Popen([PYTHON, __file__, str(port)], cwd=ROOT)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/_stats", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


class RemoteUpstream:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url = base_url + "/v1"

    async def control(self, **changes: Any) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.base_url}/_control", json=changes)
            response.raise_for_status()

    async def last_body(self) -> Any:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{self.base_url}/_stats")).json()["last_body"]


# -- PostgreSQL ---------------------------------------------------------------------------------


@asynccontextmanager
async def fresh_postgres(server_url: str) -> AsyncIterator[str]:
    """A new database on the server, dropped afterwards (connections and all)."""
    name = f"faas_bench_agents_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(server_url)
    admin = await asyncpg.connect(urlunsplit(parts._replace(scheme="postgresql")))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(parts._replace(scheme="postgresql+asyncpg", path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# -- the in-process platform --------------------------------------------------------------------


@dataclass
class Env:
    client: httpx.AsyncClient
    runtime: Runtime
    services: dict[str, Any]
    upstream: RemoteUpstream
    headers: dict[str, str]
    gateway_calls: list[tuple[float, str]] = field(default_factory=list)  # overhead ms, x-cache
    transactions: list[int] = field(default_factory=lambda: [0])  # BEGINs on the engine

    @property
    def backend(self) -> str:
        return "PostgreSQL" if self.runtime.db.backend == "postgres" else "SQLite"


class _RecordingGateway:
    """Wraps the agent runner's gateway client to record the gateway's own overhead header
    (`x-gateway-overhead-ms`: time in faas minus time upstream) and its cache verdict."""

    def __init__(self, inner: Any, sink: list[tuple[float, str]]) -> None:
        self._inner = inner
        self._sink = sink

    def get(self, name: str) -> Any:  # as ServiceClients, for the runner's GatewayClient
        return self if name == "gateway" else self._inner.get(name)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = await self._inner.get("gateway").request(method, path, **kwargs)
        overhead = float(response.headers.get("x-gateway-overhead-ms", "nan"))
        self._sink.append((overhead, response.headers.get("x-cache", "?")))
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner.get("gateway"), name)


# Time spent inside `db.session()` blocks (waiting for a pooled connection, queries, commit) by
# the request that runs in this context (the in-process ASGI calls keep the caller's context).
DB_MS: ContextVar[list[float] | None] = ContextVar("bench_db_ms", default=None)


def _add_db_ms(t0: float) -> None:
    sink = DB_MS.get()
    if sink is not None:
        sink[0] += (asyncio.get_running_loop().time() - t0) * 1000


def _timed(inner: Any) -> Any:
    """`inner` (a session context manager) adding its time to the caller's DB_MS sink."""

    @asynccontextmanager
    async def timed(**kwargs: Any) -> AsyncIterator[Any]:
        t0 = asyncio.get_running_loop().time()
        try:
            async with inner(**kwargs) as s:
                yield s
        finally:
            _add_db_ms(t0)

    return timed


def _timed_call(inner: Any) -> Any:
    """`inner` (a coroutine function: `Database.write`) adding its time to the DB_MS sink."""

    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = asyncio.get_running_loop().time()
        try:
            return await inner(*args, **kwargs)
        finally:
            _add_db_ms(t0)

    return timed


def _instrument(db: Any, transactions: list[int]) -> None:
    def on_begin(_conn: Any) -> None:
        transactions[0] += 1

    # SQLite's read is a session (timed once, through it); a checkout from before has no read.
    own_read = hasattr(db, "read") and not db.is_sqlite
    db.read = _timed(db.read) if own_read else None
    db.session = _timed(db.session)
    db.read = db.read or db.session
    # PostgreSQL's one-statement write (SQLite's goes through the timed session).
    if hasattr(db, "write") and not db.is_sqlite:
        db.write = _timed_call(db.write)
    event.listen(db.engine.sync_engine, "begin", on_begin)


@asynccontextmanager
async def platform(work: Path, upstream_url: str, database_url: str | None) -> AsyncIterator[Env]:
    upstream = RemoteUpstream(upstream_url)
    work.mkdir(parents=True, exist_ok=True)
    routing = work / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: openai\n"
        f"        model: mock-model\n        api_base: {upstream.url}\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n"
        "      - provider: hash\n"
    )
    settings = Settings(
        data_dir=work / "data",
        jwt_secret=SECRET,
        log_requests=False,
        gateway_models=routing,
        database_url=database_url,
    )
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-bench", set_global=False))
    built = [BUILDERS[name](runtime) for name in SERVICES]
    runtime.load_job_modules()
    app = create_service_app(built, runtime, freeze_after_start=True)
    services = {s.name: s for s in built}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://faas.test", timeout=300
        ) as client:
            token = mint_token(SECRET, tenant_id=TENANT, user_id="bench", ttl_s=7200)
            env = Env(client, runtime, services, upstream, {"Authorization": f"Bearer {token}"})
            _instrument(runtime.db, env.transactions)
            agent = services["agent"]
            agent.runner.gateway = GatewayClient(
                _RecordingGateway(agent.clients, env.gateway_calls)
            )
            yield env


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(_serve(int(sys.argv[1])))
        else:
            uvloop.run(_serve(int(sys.argv[1])))
