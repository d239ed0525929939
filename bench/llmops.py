"""LLMOps benchmark: usage-event ingestion throughput (the durable stream consumer → batched
multi-row inserts + rollup upserts) and `/api/v1/llmops/metrics` latency over a large operations
table.

    .venv/bin/python bench/llmops.py [--events 50000] [--ops 1000000] [--postgres URL]
                                     [--nats-url URL] [--quick]

Ingestion: the service's durable consumer is stopped, the events are published (on NATS they
wait in the JetStream stream; in process in the broker's backlog), then the consumer is started
and timed until every row is committed: the rate of the consumer and database alone, not of the
publisher that shares the CPU. With --postgres a scratch database is created on that server and
dropped afterwards; without it SQLite in a temp dir.

Targets: ingest >= 5,000 events/s; metrics p50 <= 50 ms over 1M operations.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    append_results,
    environment_lines,
    md_table,
    percentile,
    today,
)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import contextlib

from faas.app import create_service_app
from faas.backends.vectors.pgvector import asyncpg_dsn
from faas.integrations.bus.nats import NatsBus
from faas.integrations.bus.nats_admin import server_barrier
from faas.integrations.bus.subjects import event_stream_name
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services.llmops_service.service import LlmopsService
from faas.services.llmops_service.tables import OperationRow
from faas.shared.auth import mint_token
from faas.shared.config import Settings

SECRET = "bench-secret-" + "x" * 40
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3", "llama-3", "mistral-large")


def usage_event(i: int, tenant: str, at: datetime) -> dict[str, Any]:
    prompt, completion = 50 + i % 400, 20 + i % 150
    return {
        "id": f"evt-{i}",
        "type": "gateway.usage",
        "tenant_id": tenant,
        "occurred_at": at.isoformat(),
        "data": {
            "operation": "chat" if i % 5 else "embeddings",
            "model": MODELS[i % len(MODELS)],
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost_usd": (prompt + 2 * completion) / 1000,
            "latency_ms": 20 + (i * 37) % 2000,
            "status": "error" if i % 50 == 0 else "ok",
            "user_id": f"user-{i % 20}",
        },
    }


def op_row(i: int, tenant: str, at: datetime, rnd: random.Random) -> dict[str, Any]:
    prompt, completion = rnd.randint(20, 2000), rnd.randint(5, 800)
    return {
        "tenant_id": tenant,
        "id": f"op-{i}",
        "occurred_at": at,
        "source": "gateway",
        "operation": "chat" if i % 5 else "embeddings",
        "model": MODELS[i % len(MODELS)],
        "deployment": None,
        "provider": "mock",
        "upstream_model": None,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": 0,
        "cost_usd": (prompt + 2 * completion) / 1000,
        "latency_ms": rnd.lognormvariate(5.5, 0.6),
        "status": "error" if rnd.random() < 0.02 else "ok",
        "error_code": None,
        "cached": False,
        "stream": False,
        "user_id": f"user-{i % 50}",
        "agent_id": None,
        "correlation_id": None,
        "request_id": None,
        "metadata": None,
    }


async def count_rows(runtime: Runtime) -> int:
    async with runtime.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(OperationRow)) or 0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="faas-bench-llmops-"))
    values: dict[str, Any] = {"data_dir": data_dir, "jwt_secret": SECRET, "log_requests": False}
    scratch: str | None = None
    if args.postgres:
        scratch = f"faas_bench_llmops_{uuid.uuid4().hex[:8]}"
        await admin_sql(args.postgres, f'CREATE DATABASE "{scratch}"')
        parts = urlsplit(args.postgres)
        values["database_url"] = urlunsplit(
            parts._replace(scheme="postgresql+asyncpg", path=f"/{scratch}")
        )
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    if args.nats_url:
        values.update(nats_url=args.nats_url, nats_prefix=prefix)
    try:
        return await measure(args, Settings(**values))
    finally:
        if args.nats_url:
            import nats

            nc = await nats.connect(args.nats_url)
            for name in ("usage", "jobs", "dlq"):
                with contextlib.suppress(Exception):
                    await nc.jetstream().delete_stream(event_stream_name(prefix, name))
            await nc.close()
        if scratch and args.postgres:
            await admin_sql(args.postgres, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


async def admin_sql(server_url: str, sql: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


async def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    runtime = Runtime.build(settings, telemetry=setup_telemetry("bench", set_global=False))
    service = LlmopsService(db=runtime.db, bus=runtime.bus, events=runtime.events)
    app = create_service_app([service], runtime)
    results: dict[str, Any] = {"backend": runtime.db.backend, "bus": runtime.bus.backend}
    async with app.router.lifespan_context(app):
        # 1) ingestion: publish a backlog while the consumer is away, then time the drain
        now = datetime.now(UTC)
        await service.stop()
        base = await count_rows(runtime)
        t0 = time.perf_counter()
        for i in range(args.events):
            event = usage_event(i, "ingest", now - timedelta(seconds=i % 7200))
            headers = {"Content-Type": "application/json", "Nats-Msg-Id": event["id"]}
            await runtime.bus.publish("gateway.usage.ingest", orjson.dumps(event), headers)
            if i % 1000 == 999:
                await asyncio.sleep(0)
        if isinstance(runtime.bus, NatsBus) and runtime.bus.client is not None:
            await server_barrier(runtime.bus.client)
        results["publish_s"] = time.perf_counter() - t0
        batches = service.batches
        started = time.perf_counter()
        await service.start()
        while await count_rows(runtime) - base < args.events:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        results["ingest_events"] = args.events
        results["ingest_s"] = elapsed
        results["ingest_rate"] = args.events / elapsed
        results["batches"] = service.batches - batches

        # 2) a large table, bulk-inserted (rollups maintained by the same write path)
        rnd = random.Random(7)
        span = timedelta(days=30)
        start = now - span
        t0 = time.perf_counter()
        chunk: list[dict[str, Any]] = []
        for i in range(args.ops):
            at = start + span * rnd.random()
            chunk.append(op_row(i, "acme", at, rnd))
            if len(chunk) == 5000:
                await service.store.write(chunk)
                chunk = []
        if chunk:
            await service.store.write(chunk)
        results["ops"] = args.ops
        results["load_s"] = time.perf_counter() - t0

        token = mint_token(SECRET, tenant_id="acme", user_id="bench")
        auth = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for group_by in ("day", "model", "hour"):
                params = {
                    "from": start.isoformat(),
                    "to": (now + timedelta(hours=1)).isoformat(),
                    "group_by": group_by,
                }
                timings = []
                for _ in range(args.queries + 3):
                    t = time.perf_counter()
                    response = await client.get(
                        "/api/v1/llmops/metrics", params=params, headers=auth
                    )
                    timings.append((time.perf_counter() - t) * 1000)
                    assert response.status_code == 200, response.text
                    assert response.json()["data"]["totals"]["count"] == args.ops
                timings = timings[3:]
                results[f"metrics_{group_by}_p50"] = percentile(timings, 50)
                results[f"metrics_{group_by}_p95"] = percentile(timings, 95)
            # cost analysis reads the raw operations for its by-agent breakdown: shown, no target
            params = {"from": start.isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
            timings = []
            for _ in range(max(3, args.queries // 3) + 1):
                t = time.perf_counter()
                response = await client.get(
                    "/api/v1/llmops/cost-analysis", params=params, headers=auth
                )
                timings.append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200, response.text
            timings = timings[1:]
            results["cost_p50"] = percentile(timings, 50)
            results["cost_p95"] = percentile(timings, 95)
    return results


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(cli)
    return cli


def add_arguments(cli: argparse.ArgumentParser) -> None:
    cli.add_argument("--events", type=int, default=50_000)
    cli.add_argument("--ops", type=int, default=1_000_000)
    cli.add_argument("--queries", type=int, default=30)
    cli.add_argument("--postgres", default=None, help="PostgreSQL server URL (scratch database)")
    cli.add_argument("--nats-url", default=None, help="ingest through JetStream on this server")


def rows(r: dict[str, Any]) -> list[list[str]]:
    out = [
        [
            f"LLMOps ingest ({r['bus']} stream → {r['backend']})",
            f"{r['ingest_events']:,} events in {r['ingest_s']:.2f} s",
            f"**{r['ingest_rate']:,.0f} events/s** ({r['batches']} batches)",
            ">= 5,000/s",
        ],
        ["LLMOps bulk load", f"{r['ops']:,} operations", f"{r['load_s']:.1f} s", "-"],
    ]
    for g in ("day", "model", "hour"):
        out.append(
            [
                f"GET /api/v1/llmops/metrics group_by={g}",
                f"over {r['ops']:,} operations (30 days)",
                f"p50 **{r[f'metrics_{g}_p50']:.1f} ms**, p95 {r[f'metrics_{g}_p95']:.1f} ms",
                "p50 <= 50 ms",
            ]
        )
    out.append(
        [
            "GET /api/v1/llmops/cost-analysis (30 days)",
            f"over {r['ops']:,} operations",
            f"p50 {r['cost_p50']:.1f} ms, p95 {r['cost_p95']:.1f} ms",
            "-",
        ]
    )
    return out


def main() -> None:
    cli = parser()
    cli.add_argument("--quick", action="store_true", help="2,000 events, 20,000 operations")
    cli.add_argument("--no-report", action="store_true", help="do not touch docs/benchmarks.md")
    args = cli.parse_args()
    if args.quick:
        args.events, args.ops, args.queries = 2_000, 20_000, 10
    r = asyncio.run(run(args))
    table = md_table(["case", "size", "result", "target"], rows(r))
    print(table)
    if not args.no_report:
        section = "\n".join(
            [
                f"## LLMOps — {today()}",
                "",
                *environment_lines({"Database": r["backend"], "Command": " ".join(sys.argv)}),
                "",
                table,
            ]
        )
        append_results(section)


if __name__ == "__main__":
    main()
