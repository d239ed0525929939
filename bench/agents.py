"""Agents and prompts benchmark: the agent framework's overhead per step, prompt render and
context-trim latency, and 1,000 concurrent chat sessions held with bounded memory.

    .venv/bin/python bench/agents.py [--quick] [--no-save] [--only overhead|prompts|sessions]

Everything runs in one process, as `faas up` does: gateway + cache + rag + prompt + agent on one
runtime (SQLite in a temporary data dir, in-memory key/value store), called through an in-process
ASGI client with real bearer tokens; the gateway calls a real HTTP upstream on 127.0.0.1.

Targets: agent framework overhead per model step p50 <= 5 ms at concurrency 1 and 32 (a "step" is
one model call; a run here is 3 model steps + 2 tool steps); prompt render and context trim
p50/p99 reported; 1,000 chat sessions held with bounded memory (RSS reported).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from _common import ROOT, append_results, environment_lines, md_table, percentile, today

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
TARGET_STEP_MS = 5.0
MODEL_STEPS = 3  # calculator → calculator → answer
SESSION_CONCURRENCY = 64


# -- a deterministic upstream ------------------------------------------------------------------


def _call(expression: str, call_id: str) -> dict[str, Any]:
    arguments = orjson.dumps({"expression": expression}).decode()
    function = {"name": "calculator", "arguments": arguments}
    return {"id": call_id, "type": "function", "function": function}


class ScriptedUpstreamApp(MockUpstreamApp):
    """The mock upstream (same server, latency control and stats) answering by the state of
    each conversation instead of a shared script queue, so concurrent runs cannot take each
    other's answers: with tools offered, a calculator call for each of the first two model
    steps after the last user message, then a final answer; without tools, an answer."""

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


# -- the in-process platform -------------------------------------------------------------------


@dataclass
class Env:
    client: httpx.AsyncClient
    runtime: Runtime
    services: dict[str, Any]
    upstream: MockUpstream
    headers: dict[str, str]
    gateway_calls: list[tuple[float, str]] = field(default_factory=list)  # overhead ms, x-cache


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
_DB_MS: ContextVar[list[float] | None] = ContextVar("bench_db_ms", default=None)


def _time_db_sessions(db: Any) -> None:
    inner = db.session

    @asynccontextmanager
    async def session() -> AsyncIterator[Any]:
        t0 = time.perf_counter()
        try:
            async with inner() as s:
                yield s
        finally:
            sink = _DB_MS.get()
            if sink is not None:
                sink[0] += (time.perf_counter() - t0) * 1000

    db.session = session


@asynccontextmanager
async def platform(work: Path) -> AsyncIterator[Env]:
    upstream = MockUpstream()
    upstream.app = ScriptedUpstreamApp()  # before start: uvicorn serves the app it is given
    async with upstream:
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
        )
        runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-bench", set_global=False))
        built = [BUILDERS[name](runtime) for name in SERVICES]
        runtime.load_job_modules()
        _time_db_sessions(runtime.db)  # bench instrumentation: one shared Database object
        app = create_service_app(built, runtime)
        services = {s.name: s for s in built}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://faas.test", timeout=120
            ) as client:
                token = mint_token(SECRET, tenant_id=TENANT, user_id="bench", ttl_s=7200)
                env = Env(client, runtime, services, upstream, {"Authorization": f"Bearer {token}"})
                agent = services["agent"]
                clients = agent.clients
                agent.runner.gateway = GatewayClient(_RecordingGateway(clients, env.gateway_calls))
                yield env


async def post(env: Env, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = await env.client.post(path, json=body, headers=env.headers)
    if response.status_code != status:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:500]}")
    return response.json()["data"]


async def bounded(n: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> float:
    """Run job(0..n-1) on `concurrency` workers; the wall time in seconds."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await job(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def rss_mb() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 1024 / 1024


# -- 1. overhead per step ----------------------------------------------------------------------


@dataclass
class OverheadResult:
    latency_ms: float
    concurrency: int
    runs: int
    wall_s: float
    e2e_ms: list[float]  # client-observed time of each run (POST .../execute)
    model_ms: list[float]  # per run, usage.model_ms
    tools_ms: list[float]
    runner_overhead_ms: list[float]  # usage.overhead_ms: the loop itself
    gateway_ms: list[float]  # per model call: x-gateway-overhead-ms
    cache_hits: int
    db_ms: list[float]  # per run, time inside db.session() blocks
    cpu_ms_per_run: float  # process CPU time (all threads) over the phase / runs
    failed: list[str] = field(default_factory=list)

    def per_step(self, values: Sequence[float]) -> list[float]:
        return [v / MODEL_STEPS for v in values]

    @property
    def e2e_overhead_per_step(self) -> list[float]:
        """Client-observed run time minus model and tool time, per model step: the runner loop
        plus the agent API request (auth, validation, agent lookup, system prompt render,
        run rows written before and after, response)."""
        return [
            (e - m - t) / MODEL_STEPS
            for e, m, t in zip(self.e2e_ms, self.model_ms, self.tools_ms, strict=True)
        ]

    @property
    def model_minus_latency_per_step(self) -> list[float]:
        return [m / MODEL_STEPS - self.latency_ms for m in self.model_ms]


async def measure_overhead(
    env: Env, agent_id: str, latency_ms: float, concurrency: int, runs: int, tag: str
) -> OverheadResult:
    env.upstream.control(latency_ms=latency_ms)
    e2e: list[float] = []
    usage: list[dict[str, Any]] = []
    db: list[float] = []
    failed: list[str] = []
    prefix = f"warm-{tag}"

    async def one(i: int) -> None:
        # A distinct task per run: the gateway's exact response cache never answers.
        body = {"task": f"{prefix}-{i}: what is 17 * 3 + 2?"}
        sink = [0.0]
        _DB_MS.set(sink)
        t0 = time.perf_counter()
        try:
            run = await post(env, f"/api/v1/agents/{agent_id}/execute", body)
        except RuntimeError as exc:  # counted and reported (SQLite: database is locked)
            failed.append(str(exc)[:200])
            return
        e2e.append((time.perf_counter() - t0) * 1000)
        db.append(sink[0])
        kinds = [s["type"] for s in run["steps"]]
        if run["status"] != "completed" or kinds != ["model", "tool"] * 2 + ["model"]:
            raise RuntimeError(f"unexpected run: {run['status']} {kinds} {run.get('error')}")
        if run["steps"][3]["result"]["result"] != 53:
            raise RuntimeError(f"calculator result: {run['steps'][3]}")
        usage.append(run["usage"])

    await bounded(min(runs, 2 * concurrency), concurrency, one)  # warm-up
    e2e.clear()
    usage.clear()
    db.clear()
    failed.clear()
    env.gateway_calls.clear()
    prefix = tag
    cpu0 = sum(psutil.Process().cpu_times()[:2])
    wall = await bounded(runs, concurrency, one)
    cpu = sum(psutil.Process().cpu_times()[:2]) - cpu0
    calls = list(env.gateway_calls)
    if len(calls) < (runs - len(failed)) * MODEL_STEPS:
        raise RuntimeError(f"{len(calls)} gateway calls for {runs} runs")
    return OverheadResult(
        latency_ms=latency_ms,
        concurrency=concurrency,
        runs=runs,
        wall_s=wall,
        e2e_ms=e2e,
        model_ms=[float(u["model_ms"]) for u in usage],
        tools_ms=[float(u["tools_ms"]) for u in usage],
        runner_overhead_ms=[float(u["overhead_ms"]) for u in usage],
        gateway_ms=[c[0] for c in calls],
        cache_hits=sum(1 for c in calls if c[1] != "MISS"),
        db_ms=db,
        cpu_ms_per_run=cpu * 1000 / runs,
        failed=failed,
    )


# -- 2. prompt render and context trim ---------------------------------------------------------

TEMPLATE = (
    "You are {{ agent_name }}, a {{ role }} assistant for {{ company }}.\n"
    "{% if instructions %}Instructions: {{ instructions }}\n{% endif %}"
    "Tools:\n{% for t in tools %}- {{ t.name }}: {{ t.description }}\n{% endfor %}"
    "Answer in {{ language }}. Request {{ request_id }}."
)
HISTORY_TEXT = (
    "the refund policy covers orders shipped within the last thirty days and excludes gift "
    "cards digital downloads and items marked final sale customers should include the order "
    "number and a photo of the item when they open a ticket"
)
WORDS = HISTORY_TEXT.split()


def history(n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful support agent for Acme."}
    ]
    for i in range(n - 1):
        role = "user" if i % 2 == 0 else "assistant"
        words = [WORDS[(i * 7 + j) % len(WORDS)] for j in range(30 + i % 11)]
        messages.append({"role": role, "content": f"({i}) " + " ".join(words)})
    return messages


@dataclass
class LatencyRow:
    label: str
    samples: list[float]
    note: str = ""


async def timed(samples: list[float], call: Callable[[], Awaitable[Any]]) -> Any:
    t0 = time.perf_counter()
    result = await call()
    samples.append((time.perf_counter() - t0) * 1000)
    return result


async def measure_prompts(env: Env, n: int) -> list[LatencyRow]:
    await post(
        env,
        "/api/v1/prompts/templates",
        {"name": "bench.system", "content": TEMPLATE, "labels": ["production"]},
        status=201,
    )
    tools = [
        {"name": "calculator", "description": "evaluates arithmetic"},
        {"name": "rag_search", "description": "searches the knowledge base"},
        {"name": "http_request", "description": "fetches a URL from the allowlist"},
    ]
    base = {"agent_name": "helper", "role": "support", "company": "Acme", "tools": tools}
    base |= {"instructions": "Be brief.", "language": "English"}

    async def render(request_id: str, want_cached: bool, samples: list[float]) -> None:
        body = {"name": "bench.system", "variables": base | {"request_id": request_id}}
        data = await timed(samples, lambda: post(env, "/api/v1/prompts/render", body))
        if data["cached"] != want_cached:
            raise RuntimeError(f"render cached={data['cached']}, expected {want_cached}")

    await render("warm", False, [])
    cached: list[float] = []
    uncached: list[float] = []
    for i in range(n):
        await render("warm", True, cached)
        await render(f"r{i}", False, uncached)

    messages = history(50)
    full = await post(
        env, "/api/v1/prompts/context", {"messages": messages, "max_tokens": 1_000_000}
    )
    budget = full["token_count"] // 2
    body = {"messages": messages, "max_tokens": budget, "strategy": "truncate"}
    trimmed: list[float] = []
    data: dict[str, Any] = {}
    for _ in range(n):
        data = await timed(trimmed, lambda: post(env, "/api/v1/prompts/context", body))
    kept = len(data["messages"])
    return [
        LatencyRow("render, cached variables (render cache hit)", cached),
        LatencyRow("render, new variables each call (Jinja2 sandbox render)", uncached),
        LatencyRow(
            "context trim, 50 messages, truncate",
            trimmed,
            f"{full['token_count']} → {data['token_count']} tokens (max_tokens {budget}), "
            f"{data['dropped']} dropped, {kept} kept",
        ),
    ]


# -- 3. chat sessions --------------------------------------------------------------------------


@dataclass
class SessionResult:
    sessions: int
    rss_before: float
    rss_created: float
    rss_second: float
    first_ms: list[float]
    second_ms: list[float]
    first_wall_s: float
    second_wall_s: float
    history_sent: int  # messages the upstream saw on a second turn
    stored: int  # messages stored for one session after two turns
    kv_entries: tuple[int, int]  # after creation, after the second round
    errors: list[str]


async def measure_sessions(env: Env, n: int) -> SessionResult:
    env.upstream.control(latency_ms=0)
    agent = await post(
        env, "/api/v1/agents", {"name": "chatter", "system_prompt": "Be brief."}, status=201
    )
    path = f"/api/v1/agents/{agent['id']}/chat"
    for i in range(3):  # warm-up: two turns on a throwaway session
        data = await post(env, path, {"message": f"warm {i}"})
        await post(env, path, {"message": "again", "session_id": data["session_id"]})
    ids: list[str] = [""] * n
    first: list[float] = []
    second: list[float] = []
    errors: list[str] = []

    async def turn_one(i: int) -> None:
        body = {"message": f"Hello, I am user {i}. What is 17 * 3 + 2?"}
        try:
            data = await timed(first, lambda: post(env, path, body))
        except RuntimeError as exc:  # a failed turn is counted and reported, not fatal
            errors.append(f"turn 1: {exc}"[:200])
            return
        if data["status"] != "completed":
            raise RuntimeError(f"chat turn: {data}")
        ids[i] = data["session_id"]

    async def turn_two(i: int) -> None:
        if not ids[i]:
            return
        body = {"message": f"Thanks {i}, and plus one?", "session_id": ids[i]}
        try:
            data = await timed(second, lambda: post(env, path, body))
        except RuntimeError as exc:
            errors.append(f"turn 2: {exc}"[:200])
            return
        if data["status"] != "completed" or data["session_id"] != ids[i]:
            raise RuntimeError(f"chat turn: {data}")

    kv = env.runtime.kv
    before = rss_mb()
    first_wall = await bounded(n, SESSION_CONCURRENCY, turn_one)
    created = rss_mb()
    kv_created = len(kv) if hasattr(kv, "__len__") else -1
    if len(set(ids) - {""}) != n - sum(1 for e in errors if e.startswith("turn 1")):
        raise RuntimeError("session ids are not distinct")
    second_wall = await bounded(n, SESSION_CONCURRENCY, turn_two)
    after = rss_mb()
    kv_after = len(kv) if hasattr(kv, "__len__") else -1
    # The history really came from the database: the upstream saw turn one in turn two.
    await post(env, path, {"message": "one more", "session_id": ids[0]})
    seen = len(env.upstream.stats.last_body["messages"])
    response = await env.client.get(
        f"/api/v1/agents/{agent['id']}/sessions/{ids[0]}", headers=env.headers
    )
    stored = len(response.json()["data"])
    return SessionResult(
        sessions=n,
        rss_before=before,
        rss_created=created,
        rss_second=after,
        first_ms=first,
        second_ms=second,
        first_wall_s=first_wall,
        second_wall_s=second_wall,
        history_sent=seen,
        stored=stored,
        kv_entries=(kv_created, kv_after),
        errors=errors,
    )


# -- report ------------------------------------------------------------------------------------


def p(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q):.2f}"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def overhead_tables(results: list[OverheadResult]) -> tuple[str, list[list[str]]]:
    rows = []
    targets = []
    for r in results:
        e2e = r.e2e_overhead_per_step
        runner = r.per_step(r.runner_overhead_ms)
        rows.append(
            [
                f"{r.latency_ms:.0f} ms",
                str(r.concurrency),
                str(r.runs),
                f"{r.runs / r.wall_s:.1f}",
                f"{p(r.e2e_ms, 50)} / {p(r.e2e_ms, 99)}",
                f"{p(runner, 50)} / {p(runner, 99)}",
                f"{p(e2e, 50)} / {p(e2e, 99)}",
                f"{p(r.model_minus_latency_per_step, 50)}",
                f"{p(r.gateway_ms, 50)} / {p(r.gateway_ms, 99)}",
                f"{p(r.per_step(r.tools_ms), 50)}",
                f"{p(r.per_step(r.db_ms), 50)} / {p(r.per_step(r.db_ms), 99)}",
                f"{r.cpu_ms_per_run / MODEL_STEPS:.2f}",
                str(r.cache_hits),
                str(len(r.failed)),
            ]
        )
        for label, values in (("runner loop", runner), ("end to end", e2e)):
            value = percentile(values, 50)
            targets.append(
                [
                    f"overhead per model step, {label}, upstream {r.latency_ms:.0f} ms, "
                    f"concurrency {r.concurrency} (p50)",
                    f"{value:.2f} ms (p99 {percentile(values, 99):.2f})",
                    f"≤ {TARGET_STEP_MS:.0f} ms",
                    verdict(value <= TARGET_STEP_MS),
                ]
            )
    header = [
        "Upstream latency",
        "Concurrency",
        "Runs",
        "Runs/s",
        "Run wall p50 / p99 ms",
        "Runner overhead / step p50 / p99 ms",
        "End-to-end overhead / step p50 / p99 ms",
        "Model time minus latency / step p50 ms",
        "Gateway overhead / call p50 / p99 ms",
        "Tool / step p50 ms",
        "DB blocks / step p50 / p99 ms",
        "Process CPU / step ms",
        "Cache hits",
        "Failed runs",
    ]
    return md_table(header, rows), targets


def report(
    overhead: list[OverheadResult],
    prompts: list[LatencyRow],
    sessions: SessionResult | None,
    *,
    quick: bool,
    notes: list[str],
) -> str:
    parts = [f"## Agents and prompts — {today()}{' (--quick)' if quick else ''}"]
    setup = {
        "Platform": "one process, gateway + cache + rag + prompt + agent on one runtime "
        "(`faas up` layout), SQLite in a temp data dir, in-memory kv, JWT auth with real "
        "tokens, request log lines off, OpenTelemetry defaults (no exporter), uvloop; the bench "
        "calls it through httpx's in-process ASGI transport (no sockets); the gateway calls the "
        "mock upstream over HTTP on 127.0.0.1, served by uvicorn in the same event loop",
        "Upstream": "`tests/support/mock_upstream.py` answering by conversation state (calculator "
        "call, calculator call, answer) so concurrent runs stay deterministic",
        "Step": "one model step (a model call); each run = 3 model steps + 2 calculator tool "
        "steps, per-step figures = run figure / 3",
        "Runner overhead": "`usage.overhead_ms` recorded by the runner: loop time minus time in "
        "the model call (`model_ms`, includes the in-process gateway and the upstream) and the "
        "tools (`tools_ms`)",
        "End-to-end overhead": "client-observed `POST /agents/{id}/execute` time minus "
        "`model_ms` and `tools_ms`: adds auth, agent lookup, system prompt render through the "
        "prompt service, run rows written before and after, response envelope",
        "Gateway overhead": "the gateway's own `x-gateway-overhead-ms` per model call (time in "
        "faas minus time upstream); it is part of `model_ms`, not of the overhead",
    }
    parts.append("\n".join(environment_lines(setup)))
    targets: list[list[str]] = []
    tables: list[str] = []
    if overhead:
        table, targets = overhead_tables(overhead)
        tables.append("Agent runs (times in ms):\n\n" + table)
    if prompts:
        rows = [
            [r.label, str(len(r.samples)), p(r.samples, 50), p(r.samples, 99), r.note]
            for r in prompts
        ]
        tables.append(
            "Prompt service, concurrency 1, client-observed through the full middleware "
            "stack:\n\n" + md_table(["Call", "N", "p50 ms", "p99 ms", "Detail"], rows)
        )
        for r in prompts:
            targets.append(
                [
                    f"{r.label} (p50 / p99)",
                    f"{p(r.samples, 50)} / {p(r.samples, 99)} ms",
                    "report",
                    "—",
                ]
            )
    if sessions is not None:
        s = sessions
        growth = s.rss_created - s.rss_before
        per_session_kb = growth * 1024 / s.sessions
        second_growth = s.rss_second - s.rss_created
        rows = [
            ["RSS before", f"{s.rss_before:.0f} MB", ""],
            [
                f"RSS after {s.sessions:,} sessions created (1 turn each)",
                f"{s.rss_created:.0f} MB",
                f"+{growth:.1f} MB = {per_session_kb:.1f} KB per session (upper bound: "
                "includes allocator high-water from 64 turns in flight)",
            ],
            [
                "RSS after a second turn in every session",
                f"{s.rss_second:.0f} MB",
                f"{second_growth:+.1f} MB",
            ],
            [
                "turn 1 latency p50 / p99",
                f"{p(s.first_ms, 50)} / {p(s.first_ms, 99)} ms",
                f"{s.sessions / s.first_wall_s:.0f} turns/s",
            ],
            [
                "turn 2 latency p50 / p99",
                f"{p(s.second_ms, 50)} / {p(s.second_ms, 99)} ms",
                f"{s.sessions / s.second_wall_s:.0f} turns/s",
            ],
            [
                "history check",
                f"{s.stored} messages stored for a session after 3 turns",
                f"upstream saw {s.history_sent} messages on its 3rd turn",
            ],
            [
                "failed turns (HTTP 500)",
                f"{sum(e.startswith('turn 1') for e in s.errors)} / "
                f"{sum(e.startswith('turn 2') for e in s.errors)} of {s.sessions} (turn 1 / 2)",
                "see the note below" if s.errors else "",
            ],
            [
                "kv entries after round 1 / round 2",
                f"{s.kv_entries[0]:,} / {s.kv_entries[1]:,}",
                "gateway exact-response cache (bounded by FAAS_CACHE_MAX_ENTRIES/BYTES); "
                "session locks are deleted after each turn",
            ],
        ]
        tables.append(
            f"Chat sessions: {s.sessions:,} sessions, bounded concurrency "
            f"{SESSION_CONCURRENCY}, agent without tools (1 model step per turn), upstream "
            "latency 0. Sessions and their messages live in the database; between turns no "
            "per-session state stays in memory (each turn reloads its history window from the "
            "DB, serialised by a kv lock that is released after the turn):\n\n"
            + md_table(["Measure", "Value", "Detail"], rows)
        )
        bounded_ok = not s.errors and per_session_kb <= 50 and second_growth <= max(5.0, growth)
        targets.append(
            [
                f"{s.sessions:,} concurrent chat sessions with bounded memory",
                f"RSS {s.rss_before:.0f} → {s.rss_created:.0f} → {s.rss_second:.0f} MB "
                f"({per_session_kb:.1f} KB / session)",
                "bounded (≤ 50 KB / session, no growth on round 2 beyond round 1)",
                verdict(bounded_ok),
            ]
        )
    for r in overhead:
        if r.failed:
            notes = [*notes, f"c={r.concurrency}, {r.latency_ms:.0f} ms: {r.failed[0]}"]
    if sessions is not None and sessions.errors:
        notes = [*notes, f"first failed chat turn: {sessions.errors[0]}"]
    parts.append(md_table(["Measure", "Result", "Target", "Met"], targets))
    parts.extend(tables)
    if notes:
        parts.append("\n".join(f"- Note: {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def print_progress(r: OverheadResult) -> None:
    e2e = r.e2e_overhead_per_step
    runner = r.per_step(r.runner_overhead_ms)
    print(
        f"  latency {r.latency_ms:>3.0f} ms  c={r.concurrency:<3} runs {r.runs:<4} "
        f"wall p50 {percentile(r.e2e_ms, 50):7.2f} ms  runner/step p50 "
        f"{percentile(runner, 50):5.2f}  e2e/step p50 {percentile(e2e, 50):5.2f} "
        f"p99 {percentile(e2e, 99):6.2f}  gateway/call p50 {percentile(r.gateway_ms, 50):5.2f}  "
        f"db/step p50 {percentile(r.per_step(r.db_ms), 50):6.2f}  "
        f"cpu/step {r.cpu_ms_per_run / MODEL_STEPS:5.2f}  cache hits {r.cache_hits}"
    )


async def run(args: argparse.Namespace, work: Path) -> str:
    quick = args.quick
    only = args.only
    notes = [f"1-minute load average before the benchmark started: {os.getloadavg()[0]:.2f}"]
    overhead: list[OverheadResult] = []
    prompts: list[LatencyRow] = []
    sessions: SessionResult | None = None
    async with platform(work) as env:
        if only in (None, "overhead"):
            agent = await post(
                env, "/api/v1/agents", {"name": "calc", "tools": ["calculator"]}, status=201
            )
            plan = [(0.0, 1, 40 if quick else 200), (0.0, 32, 128 if quick else 640)]
            plan += [(20.0, 1, 20 if quick else 100), (20.0, 32, 128 if quick else 640)]
            if args.concurrency:
                plan = [x for x in plan if x[1] == args.concurrency]
            print("agent overhead per step (3 model steps + 2 tool steps per run)")
            for latency, concurrency, runs in plan:
                tag = f"l{latency:.0f}c{concurrency}"
                result = await measure_overhead(env, agent["id"], latency, concurrency, runs, tag)
                overhead.append(result)
                print_progress(result)
        if only in (None, "prompts"):
            n = 100 if quick else 500
            print(f"prompt render and context trim ({n} calls each)")
            prompts = await measure_prompts(env, n)
            for row in prompts:
                print(f"  {row.label:<58} p50 {p(row.samples, 50)} ms  p99 {p(row.samples, 99)}")
        if only in (None, "sessions"):
            n = 200 if quick else 1000
            print(f"chat sessions ({n}, concurrency {SESSION_CONCURRENCY})")
            sessions = await measure_sessions(env, n)
            print(
                f"  RSS {sessions.rss_before:.0f} → {sessions.rss_created:.0f} → "
                f"{sessions.rss_second:.0f} MB; turn p50 {p(sessions.first_ms, 50)} / "
                f"{p(sessions.second_ms, 50)} ms"
            )
    notes.append(f"1-minute load average at the end: {os.getloadavg()[0]:.2f}")
    return report(overhead, prompts, sessions, quick=quick, notes=notes + args.note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    parser.add_argument("--only", choices=["overhead", "prompts", "sessions"], default=None)
    parser.add_argument("--note", action="append", default=[], help="a note for the report")
    parser.add_argument("--concurrency", type=int, default=None, help="only this concurrency")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faas-bench-agents-"))
    try:
        try:
            import uvloop
        except ImportError:
            section = asyncio.run(run(args, work))
        else:
            section = uvloop.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(section)
    if not args.no_save:
        append_results(section)
        print("appended to docs/benchmarks.md")


if __name__ == "__main__":
    main()
