"""The I/O-bound job kind of bench/jobs.py (FAAS_JOB_MODULES=_jobkinds, with bench/ on the
path), kept out of tests/ so that the baseline tree's workers load it too."""

from __future__ import annotations

import asyncio
from typing import Any

from faas.jobs import JobContext
from faas.runtime import Runtime

KIND = "benchjobs.sleep"
SLEEP_S = 0.2


async def sleep(ctx: JobContext) -> Any:
    """Waits as a job that calls a slow upstream would, reporting progress once."""
    await ctx.progress(0.5, "waiting")
    await asyncio.sleep(float(ctx.payload.get("sleep_s", SLEEP_S)))
    return {"slept": True}


def register(runtime: Runtime) -> None:
    runtime.jobs.registry.register(KIND, sleep)
