"""Job kinds used only by the tests (loaded through FAAS_JOB_MODULES=tests.jobkinds)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from faas.jobs import JobContext
from faas.runtime import Runtime


class EchoPayload(BaseModel):
    """Anything, with an optional label: echo is the one test kind callers may submit."""

    model_config = ConfigDict(extra="allow")

    label: str | None = None


async def echo(ctx: JobContext) -> Any:
    await ctx.progress(0.5, "halfway")
    return {"echo": ctx.payload, "tenant": ctx.tenant_id, "attempt": ctx.attempt}


async def flaky(ctx: JobContext) -> Any:
    if ctx.attempt <= int(ctx.payload["fail_times"]):
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


async def always_fails(ctx: JobContext) -> Any:
    raise ValueError("this job never works")


async def slow_effect(ctx: JobContext) -> Any:
    """Marks each start, sleeps, then performs its one side effect (an appended line)."""
    workdir = Path(ctx.payload["dir"])
    (workdir / f"{ctx.job_id}.started-{os.getpid()}").touch()
    await asyncio.sleep(float(ctx.payload["sleep_s"]))
    with (workdir / f"{ctx.job_id}.effects").open("a") as out:
        out.write(f"{os.getpid()}\n")
    return {"pid": os.getpid()}


async def cancellable(ctx: JobContext) -> Any:
    for step in range(200):
        await ctx.progress(step / 200, "looping")
        await asyncio.sleep(0.02)
    return {"finished": True}


def register(runtime: Runtime) -> None:
    registry = runtime.jobs.registry
    registry.register("testjobs.echo", echo, accepts=EchoPayload)
    registry.register("testjobs.flaky", flaky)
    registry.register("testjobs.always_fails", always_fails)
    registry.register("testjobs.slow_effect", slow_effect)
    registry.register("testjobs.cancellable", cancellable)
