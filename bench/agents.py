"""Agent step overhead, PostgreSQL and SQLite side by side, and 1,000 concurrent chat sessions.

    .venv/bin/python bench/agents.py [--quick] [--no-save] [--only overhead|prompts|sessions|pool]
        [--databases sqlite,postgres] [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432]

The platform (bench/agent_platform.py): gateway + cache + rag + prompt + agent on one runtime,
as `faas up` runs them, called through an in-process ASGI client with real bearer tokens; the
gateway calls a scripted OpenAI-compatible upstream in its own process over HTTP, which answers
after a fixed latency. The platform's overhead is then the turn time minus the upstream's time.
Each database gets its own platform: SQLite in a temporary data dir, PostgreSQL in a fresh
database created and dropped by the run.

Measures: overhead per model step at concurrency 1 and 32 (a run = 3 model steps + 2 calculator
tool steps), the database transactions per run, CPU per step; 1,000 chat sessions open at once,
two turns each (the second one reads the first from the database), with the turn latency, the
platform's part of it and every status code; the cost of checking a pooled connection at checkout
on PostgreSQL (faas's local check, SQLAlchemy's pre-ping, none);
prompt render and context trim latency (`--only prompts`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from _common import environment_lines, md_table, percentile, publish, today
from agent_platform import DB_MS, TENANT, Env, fresh_postgres, platform, upstream_process
from faas.services.agent_service.tables import AgentRow, MessageRow, RunRow
from faas.shared.database import Database

TARGET_STEP_MS = 5.0
MODEL_STEPS = 3  # calculator → calculator → answer
POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432"


async def post(env: Env, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = await env.client.post(path, json=body, headers=env.headers)
    if response.status_code != status:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
    return response.json()["data"]


async def bounded(
    n: int, concurrency: int, job: Callable[[int], Awaitable[None]], spread_s: float = 0.0
) -> float:
    """Run job(0..n-1) on `concurrency` workers; the wall time in seconds. `spread_s`: worker k
    starts k/concurrency of it late (else all start together, and with a fixed upstream latency
    they stay in step: every run asks for the loop at the same moment)."""
    counter = iter(range(n))

    async def worker(k: int) -> None:
        await asyncio.sleep(spread_s * k / concurrency)
        for i in counter:
            await job(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return time.perf_counter() - started


def cpu_s() -> float:
    """CPU seconds of this process (all threads: the event loop and the aiosqlite workers)."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def rss_mb() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 1024 / 1024


def p(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q):.2f}"


# -- 1. overhead per step ----------------------------------------------------------------------


@dataclass
class OverheadResult:
    database: str
    latency_ms: float
    concurrency: int
    runs: int
    wall_s: float
    e2e_ms: list[float]  # client-observed time of each run (POST .../execute)
    model_ms: list[float]  # per run, usage.model_ms (gateway + upstream)
    tools_ms: list[float]
    runner_overhead_ms: list[float]  # usage.overhead_ms: the loop itself
    gateway_ms: list[float]  # per model call: x-gateway-overhead-ms
    cache_hits: int
    db_ms: list[float]  # per run, time inside db.session() blocks
    cpu_ms_per_run: float
    transactions_per_run: float
    direct_ms: list[float]  # the upstream called directly, same latency, concurrency, starts
    spread: bool = False  # starts spread over one run's upstream time, not all together
    failed: list[str] = field(default_factory=list)

    def per_step(self, values: Sequence[float]) -> list[float]:
        return [v / MODEL_STEPS for v in values]

    @property
    def platform_per_step(self) -> list[float]:
        """Run time minus what the upstream takes when called directly (its p50 in the same
        run, same latency, concurrency and starts), per model step: everything faas adds (agent
        API, runner, tools, gateway, database), as the gateway benchmark's "added" is."""
        direct = percentile(self.direct_ms, 50)
        return [e / MODEL_STEPS - direct for e in self.e2e_ms]

    @property
    def nominal_per_step(self) -> list[float]:
        """Run time minus the upstream's nominal latency, per model step: also counts the mock
        upstream's own time (its HTTP server, JSON, timer) and the local TCP round trip."""
        return [e / MODEL_STEPS - self.latency_ms for e in self.e2e_ms]

    @property
    def agent_per_step(self) -> list[float]:
        """Run time minus model and tool time, per model step: the agent service alone."""
        return [
            (e - m - t) / MODEL_STEPS
            for e, m, t in zip(self.e2e_ms, self.model_ms, self.tools_ms, strict=True)
        ]


FIRST_STEP = {  # what the agent's first model call sends, near enough
    "model": "mock-model",
    "messages": [
        {"role": "system", "content": "You are calc, an assistant with tools. " * 8},
        {"role": "user", "content": "direct: what is 17 * 3 + 2?"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": "Evaluates an arithmetic expression",
                "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
            },
        }
    ],
}


async def measure_direct(env: Env, calls: int, concurrency: int, spread_s: float) -> list[float]:
    """Round trips to the upstream itself over HTTP (aiohttp, as the gateway calls it)."""
    samples: list[float] = []
    url = env.upstream.url + "/chat/completions"
    async with aiohttp.ClientSession() as session:

        async def one(_i: int) -> None:
            t0 = time.perf_counter()
            async with session.post(url, json=FIRST_STEP) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"upstream: {response.status}")
            samples.append((time.perf_counter() - t0) * 1000)

        await bounded(calls, concurrency, one, spread_s)
    return samples


async def measure_overhead(
    env: Env, agent_id: str, latency_ms: float, concurrency: int, runs: int, spread: bool = False
) -> OverheadResult:
    await env.upstream.control(latency_ms=latency_ms)
    e2e: list[float] = []
    usage: list[dict[str, Any]] = []
    db: list[float] = []
    failed: list[str] = []
    prefix = f"warm-{latency_ms}-{concurrency}"

    async def one(i: int) -> None:
        # A distinct task per run: the gateway's exact response cache never answers.
        body = {"task": f"{prefix}-{i}: what is 17 * 3 + 2?"}
        sink = [0.0]
        DB_MS.set(sink)
        t0 = time.perf_counter()
        try:
            run = await post(env, f"/api/v1/agents/{agent_id}/execute", body)
        except RuntimeError as exc:  # counted and reported
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
    for values in (e2e, usage, db, failed, env.gateway_calls):
        values.clear()
    prefix = f"l{latency_ms}-c{concurrency}-{spread}"
    spread_s = MODEL_STEPS * latency_ms / 1000 if spread else 0.0
    calls = min(MODEL_STEPS * runs, max(60, 6 * concurrency))  # its p50 is steady
    direct = await measure_direct(env, calls, concurrency, spread_s)
    cpu0, tx0 = cpu_s(), env.transactions[0]
    wall = await bounded(runs, concurrency, one, spread_s)
    cpu, transactions = cpu_s() - cpu0, env.transactions[0] - tx0
    calls = list(env.gateway_calls)
    if len(calls) < (runs - len(failed)) * MODEL_STEPS:
        raise RuntimeError(f"{len(calls)} gateway calls for {runs} runs")
    return OverheadResult(
        database=env.backend,
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
        transactions_per_run=transactions / runs,
        direct_ms=direct,
        spread=spread,
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
    database: str
    sessions: int
    latency_ms: float
    first_ms: list[float]
    second_ms: list[float]
    wall_s: float
    statuses: Counter[int]
    errors: list[str]
    think_s: float
    cpu_ms_per_turn: float
    transactions_per_turn: float
    rss: tuple[float, float]  # before, after
    stored: tuple[int, int]  # runs and messages the measured turns left in the database
    history_sent: int  # messages the upstream saw on a third turn (system + 4 + 1)

    @property
    def turns(self) -> int:
        return len(self.first_ms) + len(self.second_ms)

    def platform(self, values: Sequence[float]) -> list[float]:
        return [v - self.latency_ms for v in values]


async def measure_sessions(env: Env, n: int, latency_ms: float, think_s: float) -> SessionResult:
    """`n` sessions open at the same time, each sending a message, waiting for the reply and
    sending a second one into the same session (its history read back from the database).
    `think_s` 0: every session sends at once (a burst). Otherwise people typing: each session
    starts at a random moment within `think_s` and thinks 0.5-1.5 x `think_s` between turns."""
    await env.upstream.control(latency_ms=0)
    agent = await post(
        env, "/api/v1/agents", {"name": "chatter", "system_prompt": "Be brief."}, status=201
    )
    path = f"/api/v1/agents/{agent['id']}/chat"
    for i in range(3):  # warm-up: two turns on a throwaway session
        data = await post(env, path, {"message": f"warm {i}"})
        await post(env, path, {"message": "again", "session_id": data["session_id"]})
    await env.upstream.control(latency_ms=latency_ms)
    first: list[float] = []
    second: list[float] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []

    async def turn(body: dict[str, Any], samples: list[float]) -> str | None:
        t0 = time.perf_counter()
        response = await env.client.post(path, json=body, headers=env.headers)
        statuses[response.status_code] += 1
        if response.status_code != 200:
            message = response.json().get("error", {}).get("message", response.text[:80])
            errors.append(f"{response.status_code} {message}")
            return None
        samples.append((time.perf_counter() - t0) * 1000)
        data = response.json()["data"]
        if data["status"] != "completed":
            raise RuntimeError(f"chat turn: {data}")
        return str(data["session_id"])

    pace = random.Random(7)
    starts = [pace.uniform(0, think_s) for _ in range(n)]
    pauses = [think_s * pace.uniform(0.5, 1.5) for _ in range(n)]

    async def conversation(i: int) -> str | None:
        await asyncio.sleep(starts[i])
        sid = await turn({"message": f"Hello, I am user {i}. What is 17 * 3 + 2?"}, first)
        if sid is not None:
            await asyncio.sleep(pauses[i])
            await turn({"message": f"Thanks {i}, and plus one?", "session_id": sid}, second)
        return sid

    before = rss_mb()
    cpu0, tx0 = cpu_s(), env.transactions[0]
    t0 = time.perf_counter()
    ids = await asyncio.gather(*(conversation(i) for i in range(n)))
    wall = time.perf_counter() - t0
    cpu, transactions = cpu_s() - cpu0, env.transactions[0] - tx0
    after = rss_mb()
    turns = len(first) + len(second)
    opened = [sid for sid in ids if sid]
    async with env.runtime.db.session() as session:
        runs = await session.scalar(
            select(func.count()).where(RunRow.session_id.in_(opened), RunRow.status == "completed")
        )
        messages = await session.scalar(
            select(func.count()).where(MessageRow.session_id.in_(opened))
        )
    await env.upstream.control(latency_ms=0)
    for _ in range(30):  # after an overload the gateway's breaker may still be open
        again = {"message": "one more", "session_id": opened[0]}
        response = await env.client.post(path, json=again, headers=env.headers)
        if response.status_code == 200:
            break
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
    seen = len((await env.upstream.last_body())["messages"])
    return SessionResult(
        database=env.backend,
        sessions=n,
        latency_ms=latency_ms,
        first_ms=first,
        second_ms=second,
        wall_s=wall,
        statuses=statuses,
        errors=errors,
        think_s=think_s,
        cpu_ms_per_turn=cpu * 1000 / max(1, turns),
        transactions_per_turn=transactions / max(1, turns),
        rss=(before, after),
        stored=(int(runs or 0), int(messages or 0)),
        history_sent=seen,
    )


# -- 4. checking a pooled connection at checkout --------------------------------------------

POOL_CHECKS = ("faas: closed-connection check", "SQLAlchemy pre-ping", "none")


def pool_database(url: str, check: str) -> Database:
    if check != POOL_CHECKS[1]:
        return Database(url, pre_ping=check == POOL_CHECKS[0])
    db = Database(url, pre_ping=False)  # the engine SQLAlchemy's pre-ping gives, same pool
    db.engine = create_async_engine(url, pool_size=30, max_overflow=10, pool_pre_ping=True)
    db.sessionmaker = async_sessionmaker(db.engine, expire_on_commit=False)
    return db


@dataclass
class PoolResult:
    check: str
    concurrency: int
    samples: list[float]
    cpu_us: float  # per transaction


async def measure_pool(url: str, n: int) -> list[PoolResult]:
    """One primary-key read per transaction, as the agent's first read is, with each way of
    checking the pooled connection (SQLAlchemy's pre-ping: three round trips per checkout),
    alternated to share the noise."""
    results: dict[tuple[str, int], PoolResult] = {}
    for _ in range(2):
        for concurrency in (1, 32):
            for check in POOL_CHECKS:
                db = pool_database(url, check)
                samples: list[float] = []

                async def one(_i: int, db: Database = db, samples: list[float] = samples) -> None:
                    t0 = time.perf_counter()
                    async with db.session() as session:
                        await session.scalar(
                            select(AgentRow.id).where(AgentRow.tenant_id == TENANT).limit(1)
                        )
                    samples.append((time.perf_counter() - t0) * 1000)

                await bounded(200, concurrency, one)
                samples.clear()
                cpu0 = cpu_s()
                await bounded(n, concurrency, one)
                cpu = cpu_s() - cpu0
                await db.close()
                key = (check, concurrency)
                if key not in results:
                    results[key] = PoolResult(check, concurrency, [], 0.0)
                results[key].samples.extend(samples)
                results[key].cpu_us += cpu * 1e6 / (2 * n)
    return list(results.values())


# -- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def starts(r: OverheadResult) -> str:
    if r.concurrency == 1:
        return "one at a time"
    return "spread over one run" if r.spread else "all together"


def overhead_table(results: list[OverheadResult]) -> str:
    rows = []
    for r in results:
        platform_ms, agent = r.platform_per_step, r.agent_per_step
        db = r.per_step(r.db_ms)
        rows.append(
            [
                r.database,
                f"{r.latency_ms:.0f} ms",
                str(r.concurrency),
                starts(r),
                str(r.runs),
                f"{r.runs / r.wall_s:.1f}",
                f"{p(r.direct_ms, 50)}",
                f"{p(platform_ms, 50)} / {p(platform_ms, 99)}",
                p(r.nominal_per_step, 50),
                f"{p(agent, 50)} / {p(agent, 99)}",
                p(r.per_step(r.runner_overhead_ms), 50),
                f"{p(r.gateway_ms, 50)} / {p(r.gateway_ms, 99)}",
                f"{p(db, 50)} / {p(db, 99)}",
                f"{r.transactions_per_run:.2f}",
                f"{r.cpu_ms_per_run / MODEL_STEPS:.2f}",
                str(r.cache_hits),
                str(len(r.failed)),
            ]
        )
    header = [
        "Database",
        "Upstream latency",
        "Concurrency",
        "Starts",
        "Runs",
        "Runs/s",
        "Upstream called directly p50 ms",
        "Platform overhead / step p50 / p99 ms",
        "Run time / 3 - nominal latency p50 ms",
        "Agent service / step p50 / p99 ms",
        "Runner loop / step p50 ms",
        "Gateway / call p50 / p99 ms",
        "DB blocks / step p50 / p99 ms",
        "Transactions / run",
        "CPU / step ms",
        "Cache hits",
        "Failed runs",
    ]
    return md_table(header, rows)


def session_table(results: list[SessionResult]) -> str:
    rows = []
    for s in results:
        platform_1, platform_2 = s.platform(s.first_ms), s.platform(s.second_ms)
        rows.append(
            [
                s.database,
                f"{s.sessions:,}",
                f"{s.think_s:.0f} s" if s.think_s else "none (burst)",
                f"{p(s.first_ms, 50)} / {p(s.first_ms, 99)}",
                f"{p(s.second_ms, 50)} / {p(s.second_ms, 99)}",
                f"{p(platform_1, 50)} / {p(platform_1, 99)}",
                f"{p(platform_2, 50)} / {p(platform_2, 99)}",
                f"{s.turns / s.wall_s:.0f}",
                ", ".join(f"{code}: {count}" for code, count in sorted(s.statuses.items())),
                f"{s.cpu_ms_per_turn:.2f}",
                f"{s.transactions_per_turn:.2f}",
                f"{s.stored[0]:,} runs, {s.stored[1]:,} messages",
                f"{s.history_sent}",
                f"{s.rss[0]:.0f} → {s.rss[1]:.0f}",
            ]
        )
    header = [
        "Database",
        "Sessions",
        "Think time",
        "Turn 1 p50 / p99 ms",
        "Turn 2 p50 / p99 ms",
        "Platform part, turn 1 p50 / p99 ms",
        "Platform part, turn 2 p50 / p99 ms",
        "Turns/s",
        "Status codes",
        "CPU / turn ms",
        "Transactions / turn",
        "Stored",
        "Messages the upstream saw on a 3rd turn",
        "RSS MB",
    ]
    return md_table(header, rows)


def pool_table(results: list[PoolResult]) -> str:
    rows = [
        [
            r.check,
            str(r.concurrency),
            str(len(r.samples)),
            f"{p(r.samples, 50)} / {p(r.samples, 99)}",
            f"{r.cpu_us:.0f}",
        ]
        for r in sorted(results, key=lambda r: (r.concurrency, POOL_CHECKS.index(r.check)))
    ]
    return md_table(
        ["Checkout check", "Concurrency", "Transactions", "p50 / p99 ms", "CPU / tx µs"], rows
    )


def targets(overhead: list[OverheadResult], sessions: list[SessionResult]) -> list[list[str]]:
    rows = []
    for r in overhead:
        if r.concurrency != 32:
            continue
        value = percentile(r.platform_per_step, 50)
        goal = f"≤ {TARGET_STEP_MS:.0f} ms" if r.database == "PostgreSQL" else "stated, no 500s"
        ok = value <= TARGET_STEP_MS if r.database == "PostgreSQL" else not r.failed
        rows.append(
            [
                f"{r.database}: platform overhead per model step, concurrency 32, upstream "
                f"{r.latency_ms:.0f} ms, starts {starts(r)} (p50 / p99)",
                f"{value:.2f} / {percentile(r.platform_per_step, 99):.2f} ms",
                goal,
                verdict(ok),
            ]
        )
    for s in sessions:
        errors = sum(count for code, count in s.statuses.items() if code >= 500)
        both = s.platform(s.first_ms + s.second_ms)
        rows.append(
            [
                f"{s.database}: {s.sessions:,} concurrent chat sessions x 2 turns, upstream "
                f"{s.latency_ms:.0f} ms, think time "
                f"{f'{s.think_s:.0f} s' if s.think_s else 'none (burst)'}: 5xx, turn p50, "
                "platform part p50 / p99",
                f"{errors} 5xx; turn p50 {p(s.first_ms + s.second_ms, 50)} ms; platform part "
                f"{p(both, 50)} / {p(both, 99)} ms",
                "no 500s; p50 bounded by the upstream",
                verdict(errors == 0 and percentile(both, 50) < s.latency_ms),
            ]
        )
    return rows


def report(
    overhead: list[OverheadResult],
    sessions: list[SessionResult],
    pool: list[PoolResult],
    prompts: list[LatencyRow],
    *,
    quick: bool,
    notes: list[str],
) -> str:
    parts = [f"## Agent step overhead ({today()}){' (--quick)' if quick else ''}"]
    setup = {
        "Platform": "one process per database, gateway + cache + rag + prompt + agent on one "
        "runtime (`faas up` layout), in-memory kv, JWT auth with real tokens, request log lines "
        "off, OpenTelemetry defaults (no exporter), uvloop; the bench calls it through httpx's "
        "in-process ASGI transport (no sockets; the client's CPU counts as the platform's)",
        "Databases": "SQLite (aiosqlite, WAL) in a temp data dir; PostgreSQL 15 on 127.0.0.1 in "
        "a fresh database (asyncpg, pool 30 + 10, closed connections replaced at checkout), "
        "migrated at start",
        "Upstream": "the scripted mock upstream (`bench/agent_platform.py`) in its own process "
        "over HTTP on 127.0.0.1, answering after a fixed latency (calculator call, calculator "
        "call, answer). Platform overhead per step = run time / 3 - the p50 of the same "
        "upstream called directly (aiohttp, an agent's first-step body) at the same latency, "
        "concurrency and starts in the same run, right before: what faas adds, as the gateway "
        "benchmark's added latency is (until 2026-12-06 17:30 this bench subtracted the nominal "
        "latency, which also counted the mock's own HTTP server and the local round trip: "
        "~1.3 ms a call here; that figure is still in the table)",
        "Step": "one model step; a run = 3 model steps + 2 calculator tool steps; per-step "
        "figures = run figure / 3. Agent service = run time - model time (gateway + upstream) "
        "- tool time. CPU = this process's CPU seconds (all threads) / steps. Concurrency 32 "
        "twice: all 32 workers starting together (with a fixed upstream latency their runs stay "
        "in step, each step's 32 requests reaching the loop at once) and their starts spread "
        "evenly over one run's upstream time (3 x latency), as independent callers arrive",
    }
    parts.append("\n".join(environment_lines(setup)))
    parts.append(md_table(["Measure", "Result", "Target", "Met"], targets(overhead, sessions)))
    if overhead:
        parts.append("Agent runs:\n\n" + overhead_table(overhead))
    if sessions:
        parts.append(
            "Chat sessions, all open at the same time, two turns each (an agent without tools: "
            "one model step per turn). With a think time, each session starts at a random moment "
            "within it and waits 0.5-1.5 x it between its turns (people typing); a burst sends "
            "every turn at once. Platform part = turn time - upstream latency:"
            + "\n\n"
            + session_table(sessions)
        )
    if pool:
        parts.append(
            "Checking a pooled PostgreSQL connection at checkout (one primary-key read per "
            "transaction, the three ways alternated in two rounds):\n\n" + pool_table(pool)
        )
    if prompts:
        rows = [
            [r.label, str(len(r.samples)), p(r.samples, 50), p(r.samples, 99), r.note]
            for r in prompts
        ]
        parts.append(
            "Prompt service, concurrency 1, client-observed through the full middleware "
            "stack:\n\n" + md_table(["Call", "N", "p50 ms", "p99 ms", "Detail"], rows)
        )
    for r in overhead:
        if r.failed:
            notes = [*notes, f"{r.database} c={r.concurrency}: {r.failed[0]}"]
    for s in sessions:
        if s.errors:
            causes = ", ".join(f"{n} x {e}" for e, n in Counter(s.errors).most_common(4))
            think = f"think {s.think_s:.0f} s" if s.think_s else "burst"
            notes = [*notes, f"{s.database} sessions ({think}), failed turns: {causes}"]
    if notes:
        parts.append("\n".join(f"- Note: {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


# -- run ---------------------------------------------------------------------------------------


@asynccontextmanager
async def database(kind: str, server: str) -> AsyncIterator[str | None]:
    if kind == "sqlite":
        yield None
        return
    async with fresh_postgres(server) as url:
        yield url


async def on_database(
    args: argparse.Namespace, work: Path, upstream_url: str, database_url: str | None
) -> tuple[list[OverheadResult], list[SessionResult], list[LatencyRow]]:
    overhead: list[OverheadResult] = []
    sessions: list[SessionResult] = []
    prompts: list[LatencyRow] = []
    quick, only = args.quick, args.only
    async with platform(work, upstream_url, database_url) as env:
        if only in (None, "overhead"):
            agent = await post(
                env, "/api/v1/agents", {"name": "calc", "tools": ["calculator"]}, status=201
            )
            latencies = [float(v) for v in args.latencies.split(",")]
            plan = [(latencies[0], 1, 30 if quick else 100, False)]
            for latency in latencies:
                plan += [(latency, 32, 128 if quick else 640, s) for s in (False, True)]
            print(f"{env.backend}: agent overhead per step")
            for latency, concurrency, runs, spread in plan:
                r = await measure_overhead(env, agent["id"], latency, concurrency, runs, spread)
                overhead.append(r)
                print(
                    f"  latency {latency:.0f} ms c={concurrency:<3}{' spread' if spread else ''} "
                    f"direct p50 {p(r.direct_ms, 50)}  platform/step p50 "
                    f"{p(r.platform_per_step, 50)} p99 {p(r.platform_per_step, 99)}  agent/step "
                    f"p50 {p(r.agent_per_step, 50)}  db/step p50 {p(r.per_step(r.db_ms), 50)}  "
                    f"tx/run {r.transactions_per_run:.2f}  cpu/step "
                    f"{r.cpu_ms_per_run / MODEL_STEPS:.2f}  failed {len(r.failed)}"
                )
        if only in (None, "sessions"):
            n = 200 if quick else args.sessions
            latency = args.session_latency_ms
            for think in (args.think_s, 0.0) if args.burst else (args.think_s,):
                print(f"{env.backend}: {n} chat sessions, upstream {latency} ms, think {think} s")
                s = await measure_sessions(env, n, latency, think)
                sessions.append(s)
                print(
                    f"  turn 1 p50 {p(s.first_ms, 50)} p99 {p(s.first_ms, 99)}  turn 2 p50 "
                    f"{p(s.second_ms, 50)} p99 {p(s.second_ms, 99)}  statuses "
                    f"{dict(s.statuses)}  cpu/turn {s.cpu_ms_per_turn:.2f}  tx/turn "
                    f"{s.transactions_per_turn:.2f}"
                )
        if only == "prompts":
            prompts = await measure_prompts(env, 100 if quick else 500)
    return overhead, sessions, prompts


async def run(args: argparse.Namespace, work: Path) -> str:
    notes = [f"load average before: {loadavg()}"]
    overhead: list[OverheadResult] = []
    sessions: list[SessionResult] = []
    prompts: list[LatencyRow] = []
    pool: list[PoolResult] = []
    with upstream_process() as upstream_url:
        for kind in args.databases.split(","):
            async with database(kind, args.postgres) as url:
                if args.only == "pool":
                    if url is not None:
                        schema = Database(url)
                        await schema.migrate()
                        await schema.close()
                        pool = await measure_pool(url, 500 if args.quick else 3000)
                    continue
                o, s, pr = await on_database(args, work / kind, upstream_url, url)
                overhead += o
                sessions += s
                prompts += pr
                if url is not None and args.only is None:
                    pool = await measure_pool(url, 500 if args.quick else 3000)
    notes.append(f"load average after: {loadavg()}")
    return report(overhead, sessions, pool, prompts, quick=args.quick, notes=notes + args.note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    parser.add_argument("--only", choices=["overhead", "prompts", "sessions", "pool"])
    parser.add_argument("--databases", default="postgres,sqlite")
    parser.add_argument("--postgres", default=POSTGRES, help="server URL (no database)")
    parser.add_argument("--latencies", default="20,500", help="upstream ms, overhead runs")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--session-latency-ms", type=float, default=1000.0)
    parser.add_argument("--think-s", type=float, default=15.0, help="between a session's turns")
    parser.add_argument("--burst", action="store_true", help="also all sessions at once")
    parser.add_argument("--note", action="append", default=[], help="a note for the report")
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
    publish(section, save=not args.no_save)


if __name__ == "__main__":
    main()
