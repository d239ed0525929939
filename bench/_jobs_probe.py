"""Submission probe for bench/jobs.py, run inside one tree (PYTHONPATH picks the code): submits
jobs through `Runtime.jobs` on one database and bus, counts what each submit costs, prints JSON.

    python bench/_jobs_probe.py --database URL [--nats URL] --jobs N --mode single|batch
        [--in-flight 16] [--warmup 50] [--prefix P --keep]

single: `jobs.submit` with 16 in flight; batch: `jobs.submit_many` in batches of 500 (the
working tree only). Reports jobs/s, this process's CPU-ms per job, and per job: SQL statements
and pool checkouts (on PostgreSQL each checkout pre-pings: BEGIN, `;`, ROLLBACK). With --keep
the queued jobs stay on the bus (under --prefix) for workers to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event

from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.shared.config import Settings
from faas.shared.context import Identity

KIND = "benchjobs.sleep"
BATCH = 500
IN_FLIGHT = 16


async def noop(_: Any) -> None:
    return None


class Counters:
    def __init__(self, engine: Any) -> None:
        self.statements = self.checkouts = 0
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine.pool, "checkout", self._checkout)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _checkout(self, *_: Any) -> None:
        self.checkouts += 1


async def submit(runtime: Runtime, mode: str, n: int, in_flight: int = IN_FLIGHT) -> None:
    identity = Identity(tenant_id="bench", user_id="u1")
    if mode == "batch":
        from faas.jobs import NewJob  # type: ignore[attr-defined]  # the working tree only

        for start in range(0, n, BATCH):
            items = [NewJob(KIND, {"i": i}) for i in range(start, min(n, start + BATCH))]
            await runtime.jobs.submit_many(identity, items)  # type: ignore[attr-defined]
        return
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            await runtime.jobs.submit(identity, KIND, {"i": i})

    await asyncio.gather(*(one(i) for i in range(n)))


async def main(args: argparse.Namespace) -> dict[str, float]:
    data = Path(args.data_dir)
    settings = Settings(
        data_dir=data,
        database_url=args.database,
        nats_url=args.nats or None,
        nats_prefix=args.prefix or f"p{uuid.uuid4().hex[:8]}",
        run_worker=False,
        jwt_secret="probe-secret-" + "x" * 40,
    )
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-probe", set_global=False))
    runtime.jobs.registry.register(KIND, noop)
    await runtime.start(run_worker=False)
    try:
        if not args.jobs:  # only migrate the database
            return {}
        if args.warmup:  # pools, streams, statement caches
            await submit(runtime, args.mode, args.warmup)
        counters = Counters(runtime.db.engine.sync_engine)
        cpu, wall = time.process_time(), time.perf_counter()
        await submit(runtime, args.mode, args.jobs, args.in_flight)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = args.jobs
        return {
            "rate": n / wall,
            "cpu_ms": 1000 * cpu / n,
            "statements": counters.statements / n,
            "checkouts": counters.checkouts / n,
        }
    finally:
        bus: Any = runtime.bus
        if getattr(bus, "backend", "") == "nats" and not args.keep:
            js = bus.connection.jetstream()
            for stream in (bus.jobs_stream, bus.dlq_stream):
                try:
                    await js.delete_stream(stream)
                except Exception as exc:  # the stream may never have been created
                    print(json.dumps({"cleanup": str(exc)}))
        await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--nats", default="")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--mode", choices=["single", "batch"], default="single")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--data-dir", required=True)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result))
