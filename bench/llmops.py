"""LLMOps benchmark: usage-event ingestion throughput (in-process bus → batched multi-row
inserts + rollup upserts) and `/api/v1/llmops/metrics` latency over a large operations table.

    .venv/bin/python bench/llmops.py [--events 20000] [--ops 200000] [--database-url URL] [--quick]

Targets: ingest >= 5,000 events/s; metrics p50 <= 50 ms (served from the hourly rollups).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    append_results,
    environment_lines,
    md_table,
    percentile,
    today,
)
from faas.app import create_service_app
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
    if args.database_url:
        values["database_url"] = args.database_url
    settings = Settings(**values)
    runtime = Runtime.build(settings, telemetry=setup_telemetry("bench", set_global=False))
    service = LlmopsService(db=runtime.db, bus=runtime.bus, events=runtime.events)
    app = create_service_app([service], runtime)
    results: dict[str, Any] = {"backend": runtime.db.backend}
    async with app.router.lifespan_context(app):
        # 1) ingestion through the bus
        now = datetime.now(UTC)
        headers = {"Content-Type": "application/json"}
        payloads = [
            orjson.dumps(usage_event(i, "ingest", now - timedelta(seconds=i % 7200)))
            for i in range(args.events)
        ]
        base = await count_rows(runtime)
        started = time.perf_counter()
        for i, payload in enumerate(payloads):
            await runtime.bus.publish("gateway.usage.ingest", payload, headers)
            if i % 1000 == 999:
                await asyncio.sleep(0)
        while await count_rows(runtime) - base < args.events:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        results["ingest_events"] = args.events
        results["ingest_s"] = elapsed
        results["ingest_rate"] = args.events / elapsed
        results["batches"] = service.buffer.batches

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
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--quick", action="store_true", help="2,000 events, 20,000 operations")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    if args.quick:
        args.events, args.ops, args.queries = 2_000, 20_000, 10
    r = asyncio.run(run(args))
    rows = [
        [
            "ingest (bus → batched insert)",
            f"{r['ingest_events']:,} events in {r['ingest_s']:.2f} s",
            f"**{r['ingest_rate']:,.0f} events/s** ({r['batches']} batches)",
            ">= 5,000/s",
        ],
        ["bulk load", f"{r['ops']:,} operations", f"{r['load_s']:.1f} s", "-"],
    ]
    for g in ("day", "model", "hour"):
        rows.append(
            [
                f"GET /metrics group_by={g}",
                f"over {r['ops']:,} operations (30 days)",
                f"p50 **{r[f'metrics_{g}_p50']:.1f} ms**, p95 {r[f'metrics_{g}_p95']:.1f} ms",
                "p50 <= 50 ms",
            ]
        )
    table = md_table(["case", "size", "result", "target"], rows)
    print(table)
    if not args.no_report:
        section = "\n".join(
            [
                f"## LLMOps — {today()}",
                "",
                *environment_lines({"Database": r["backend"], "Command": " ".join(sys.argv)}),
                "",
                table,
                "",
                "Metrics are served from `llmops_rollups_hourly` (one row per tenant, hour, model, "
                "operation and status), so their cost grows with hours x groups, not with "
                "operations. Latency percentiles come from the rollups' histogram buckets.",
            ]
        )
        append_results(section)


if __name__ == "__main__":
    main()
