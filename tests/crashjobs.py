"""A job kind for the worker-crash tests (FAAS_JOB_MODULES=tests.crashjobs): it records every
run it starts in `job_runs` and makes its one side effect idempotent by job id in
`job_effects`, both in the PostgreSQL database named by the payload."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg

from faas.jobs import JobContext
from faas.runtime import Runtime

TABLES = """
CREATE TABLE IF NOT EXISTS job_runs (job_id text, pid int, attempt int);
CREATE TABLE IF NOT EXISTS job_effects (job_id text PRIMARY KEY, pid int);
"""


async def ledger(ctx: JobContext) -> Any:
    conn = await asyncpg.connect(ctx.payload["dsn"])
    try:
        await conn.execute(
            "INSERT INTO job_runs VALUES ($1, $2, $3)", ctx.job_id, os.getpid(), ctx.attempt
        )
        await asyncio.sleep(float(ctx.payload["sleep_s"]))
        await conn.execute(
            "INSERT INTO job_effects VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING",
            ctx.job_id,
            os.getpid(),
        )
    finally:
        await conn.close()
    return {"pid": os.getpid()}


def register(runtime: Runtime) -> None:
    runtime.jobs.registry.register("crashjobs.ledger", ledger)
