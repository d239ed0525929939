"""Integrations benchmark: codecs, message bus, job throughput with real `faas worker`
processes, and the cost of tracing on a cache GET, all side by side in one run.

    .venv/bin/python bench/integrations.py [--quick]

Targets: orjson-based JSON encode+decode >= 4x faster than stdlib json; MessagePack smaller
than JSON; 2 workers >= 1.6x the jobs/s of 1 worker; tracing (100 % sampled, batch exporter to
a null sink) costs <= 35 % of cache GET throughput.

Needs NATS at nats://127.0.0.1:4222 and PostgreSQL at 127.0.0.1:5432 (a throwaway database per
job config, dropped afterwards); their parts are skipped with a note when unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from _common import (
    LOAD_CPU,
    PYTHON,
    ROOT,
    SERVER_CPU,
    LoadResult,
    clean_env,
    combine,
    environment_lines,
    free_port,
    have_taskset,
    md_table,
    mint_token,
    percentile,
    publish,
    run_load,
    server,
    stop_process,
    today,
)
from faas.integrations.bus.memory import InProcessBus
from faas.integrations.bus.nats import NatsBus
from faas.integrations.codec import (
    JsonCodec,
    MsgpackCodec,
    envelope_dict,
    envelope_message,
)
from faas.integrations.proto import faas_pb2 as pb
from faas.shared.contracts import ServiceResponse

NATS_URL = "nats://127.0.0.1:4222"
POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
JOB_KIND = "testjobs.echo"
TENANT = "bench"
JWT_SECRET = "bench-secret-" + "x" * 40
CONCURRENCY = 32
TARGET_JSON_SPEEDUP = 4.0
TARGET_WORKER_SCALING = 1.6
TARGET_TRACING_COST = 0.35


# `tests.jobkinds` (the job kinds) is imported from the project root, as the tests do.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


# -- 1. codecs ---------------------------------------------------------------------------------


def contract_message(target_bytes: int) -> dict[str, Any]:
    """A ServiceResponse envelope (its JSON form) with nested data, about `target_bytes` as
    compact JSON."""
    items: list[dict[str, Any]] = []
    body: dict[str, Any] = {}
    while True:
        data = {"query": "bench", "total": len(items), "items": items, "page": {"next": None}}
        body = ServiceResponse(
            data=data,
            message="ok",
            correlation_id=uuid.uuid4().hex,
            request_id=uuid.uuid4().hex,
            metadata={"service": "bench", "took_ms": 1.25},
        ).model_dump(mode="json")
        if len(json.dumps(body, separators=(",", ":"))) >= target_bytes:
            return body
        i = len(items)
        items.append(
            {
                "id": i,
                "name": f"item-{i}",
                "score": i * 0.125,
                "active": i % 2 == 0,
                "tags": ["alpha", "beta"],
                "attrs": {"color": "blue", "size": i % 7, "ratio": 0.5},
            }
        )


@dataclass(frozen=True, slots=True)
class CodecResult:
    codec: str
    size: str
    json_bytes: int
    nbytes: int
    us: float


def time_roundtrip(fn: Callable[[], Any], budget_s: float) -> float:
    """Best-of-5 µs per call of `fn` (each repeat runs about budget_s / 5)."""
    n, t = 1, 0.0
    while True:  # calibrate
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= 0.02:
            break
        n *= 2
    n = max(1, int(n * (budget_s / 5) / t))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def measure_codecs(budget_s: float) -> list[CodecResult]:
    jc, mc = JsonCodec(), MsgpackCodec()

    def proto_encode(body: dict[str, Any]) -> bytes:
        envelope = envelope_message(body)
        assert envelope is not None
        return envelope.SerializeToString()

    codecs: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "stdlib json": (lambda b: json.dumps(b).encode(), json.loads),
        "JSON (orjson, JsonCodec)": (jc.encode, jc.decode),
        "MessagePack (MsgpackCodec)": (mc.encode, mc.decode),
        "Protobuf (Envelope)": (
            proto_encode,
            lambda d: envelope_dict(pb.Envelope.FromString(d)),
        ),
    }
    results: list[CodecResult] = []
    for label, target in (("1 KB", 1024), ("32 KB", 32 * 1024)):
        body = contract_message(target)
        json_bytes = len(json.dumps(body, separators=(",", ":")))
        for name, (enc, dec) in codecs.items():
            data = enc(body)
            if dec(data) != body:
                raise RuntimeError(f"{name} does not round-trip the {label} message")
            us = time_roundtrip(lambda enc=enc, dec=dec, body=body: dec(enc(body)), budget_s)
            results.append(CodecResult(name, label, json_bytes, len(data), us))
            print(f"  {label:<5} {name:<28} {len(data):>7,} B  {us:8.2f} µs")
    return results


# -- 2. bus ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusResult:
    bus: str
    publish_rate: float
    p50_ms: float
    p99_ms: float
    requests: int


async def measure_bus(bus: Any, label: str, n_pub: int, n_req: int) -> BusResult:
    await bus.start()
    try:
        payload = b"x" * 256
        received = 0
        done = asyncio.Event()

        async def count(_: Any) -> None:
            nonlocal received
            received += 1
            if received >= n_pub:
                done.set()

        async def echo(message: Any) -> bytes:
            return bytes(message.data)

        sub = await bus.subscribe("bench.pub", count)
        rsub = await bus.subscribe("bench.req", echo)
        try:
            # publish throughput: publish n_pub events and wait until the subscriber saw them all
            t0 = time.perf_counter()
            for _ in range(n_pub):
                await bus.publish("bench.pub", payload)
            await asyncio.wait_for(done.wait(), 120)
            rate = n_pub / (time.perf_counter() - t0)
            for _ in range(50):  # warm-up
                await bus.request("bench.req", payload)
            latencies: list[float] = []
            for _ in range(n_req):
                t1 = time.perf_counter()
                await bus.request("bench.req", payload)
                latencies.append((time.perf_counter() - t1) * 1000)
        finally:
            await sub.unsubscribe()
            await rsub.unsubscribe()
    finally:
        await bus.close()
    result = BusResult(label, rate, percentile(latencies, 50), percentile(latencies, 99), n_req)
    print(
        f"  {label:<12} publish {rate:>9,.0f} msg/s  request p50 {result.p50_ms:.3f} ms  "
        f"p99 {result.p99_ms:.3f} ms"
    )
    return result


async def nats_up() -> bool:
    import nats

    try:
        client = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
    except Exception:
        return False
    await client.close()
    return True


# -- 3. jobs with real `faas worker` processes -------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobResult:
    workers: int
    jobs: int
    submit_s: float
    total_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.total_s


def _drain(stream: Any, log: Path) -> None:
    with log.open("w") as out:
        for line in stream:
            out.write(line)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "faas", "worker", "--kinds", JOB_KIND],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if f"consuming {JOB_KIND}" in line:
            # keep draining stderr into a file so the pipe never fills
            threading.Thread(target=_drain, args=(proc.stderr, log), daemon=True).start()
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("worker did not start consuming:\n" + "".join(seen[-30:]))


async def measure_jobs(workers: int, n_jobs: int, work: Path) -> JobResult:
    from faas.integrations.otel import setup_telemetry
    from faas.runtime import Runtime
    from faas.shared.config import Settings
    from faas.shared.context import Identity

    name = f"faas_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    database = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    prefix = f"b{uuid.uuid4().hex[:8]}"
    data_dir = work / f"jobs-{workers}"
    env = clean_env(
        FAAS_DATA_DIR=str(data_dir),
        FAAS_DATABASE_URL=database,
        FAAS_NATS_URL=NATS_URL,
        FAAS_NATS_PREFIX=prefix,
        FAAS_JOB_MODULES="tests.jobkinds",
        FAAS_SERVICES="",
        FAAS_JWT_SECRET=JWT_SECRET,
        PYTHONPATH=str(ROOT),
    )
    settings = Settings(
        data_dir=data_dir,
        database_url=database,
        nats_url=NATS_URL,
        nats_prefix=prefix,
        job_modules=["tests.jobkinds"],
        run_worker=False,
        jwt_secret=JWT_SECRET,
    )
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-bench", set_global=False))
    procs: list[subprocess.Popen[str]] = []
    try:
        runtime.load_job_modules()
        await runtime.start()
        for i in range(workers):
            procs.append(start_worker(env, work / f"worker-{workers}-{i}.log"))
        identity = Identity(tenant_id=TENANT, user_id="u1")
        db = await asyncpg.connect(database.replace("postgresql+asyncpg", "postgresql"))
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await runtime.jobs.submit(identity, JOB_KIND, {"i": i})

        t0 = time.perf_counter()
        submitting = asyncio.gather(*(one(i) for i in range(n_jobs)))
        submit_s = 0.0
        deadline = time.monotonic() + 600
        while True:
            await asyncio.sleep(0.05)
            if submitting.done() and not submit_s:
                submitting.result()
                submit_s = time.perf_counter() - t0
            done = await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
            if done >= n_jobs:
                total_s = time.perf_counter() - t0
                break
            failed = await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'")
            if failed or time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers: {done} succeeded, {failed} failed")
        await submitting
        submit_s = submit_s or total_s
        await db.close()
    finally:
        for proc in procs:
            stop_process(proc, timeout_s=20)  # type: ignore[arg-type]
        with suppress(Exception):
            bus = runtime.bus
            js = bus.client.jetstream()  # type: ignore[attr-defined]
            for stream in (bus.jobs_stream, bus.dlq_stream):  # type: ignore[attr-defined]
                with suppress(Exception):
                    await js.delete_stream(stream)
        await runtime.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    result = JobResult(workers, n_jobs, submit_s, total_s)
    print(
        f"  {workers} worker(s): {n_jobs} jobs in {total_s:.2f} s = {result.rate:,.0f} jobs/s "
        f"(submitting took {submit_s:.2f} s)"
    )
    return result


async def postgres_up() -> bool:
    try:
        conn = await asyncpg.connect(
            POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"), timeout=3
        )
    except Exception:
        return False
    await conn.close()
    return True


# -- 4. tracing overhead on a cache GET --------------------------------------------------------


TRACING_CONFIGS = {
    "tracing off (OTEL_TRACES_EXPORTER=none)": {"OTEL_TRACES_EXPORTER": "none"},
    "tracing on (100 %, batch console exporter to /dev/null)": {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_TRACES_SAMPLER": "always_on",
    },
}


def measure_tracing(
    work: Path, *, warmup_s: float, rounds: int, round_s: float
) -> dict[str, LoadResult]:
    """The foundation benchmark's faas app (cache service, JWT, request logs) served twice on
    the server core, tracing off and on, alternating load rounds between them (A B B A ...)."""
    from foundation import KEY, Config, seed_and_check, server_command

    base_env = {"FAAS_JWT_SECRET": JWT_SECRET}
    token = mint_token(clean_env(FAAS_DATA_DIR=str(work / "token"), **base_env), TENANT)
    headers = {"Authorization": f"Bearer {token}"}
    urls: dict[str, str] = {}
    with ExitStack() as stack:
        for i, (label, extra) in enumerate(TRACING_CONFIGS.items()):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = clean_env(FAAS_DATA_DIR=str(work / f"trace-{i}"), **base_env, **extra)
            # stdout (request logs and, when on, the console span exporter) to a null sink
            stack.enter_context(
                server(server_command("faas", port), env, f"{base}/readyz", Path(os.devnull))
            )
            seed_and_check(Config("faas", "memory"), base, headers)
            urls[label] = f"{base}/api/v1/cache/{KEY}"
        for url in urls.values():
            run_load(url, connections=CONCURRENCY, duration_s=warmup_s, headers=headers)
        samples: dict[str, list[LoadResult]] = {label: [] for label in urls}
        labels = list(urls)
        for i in range(rounds):
            for label in labels if i % 2 == 0 else reversed(labels):
                samples[label].append(
                    run_load(
                        urls[label], connections=CONCURRENCY, duration_s=round_s, headers=headers
                    )
                )
    results = {label: combine(s) for label, s in samples.items()}
    for label, r in results.items():
        print(f"  {label:<58} {r.rps:>8,.0f} req/s  p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms")
    return results


# -- report ------------------------------------------------------------------------------------


def report(
    codecs: list[CodecResult],
    buses: list[BusResult],
    jobs: list[JobResult],
    tracing: dict[str, LoadResult],
    *,
    quick: bool,
    setup: dict[str, str],
    notes: list[str],
) -> str:
    targets: list[list[str]] = []
    by = {(c.size, c.codec): c for c in codecs}
    for size in ("1 KB", "32 KB"):
        std, oj = by[(size, "stdlib json")], by[(size, "JSON (orjson, JsonCodec)")]
        mp = by[(size, "MessagePack (MsgpackCodec)")]
        speedup = std.us / oj.us
        targets.append(
            [
                f"JSON (orjson) vs stdlib json, encode+decode, {size}",
                f"{speedup:.1f}x faster",
                f"≥ {TARGET_JSON_SPEEDUP:.0f}x",
                verdict(speedup >= TARGET_JSON_SPEEDUP),
            ]
        )
        targets.append(
            [
                f"MessagePack vs JSON size, {size}",
                f"{mp.nbytes:,} B vs {oj.nbytes:,} B ({mp.nbytes / oj.nbytes:.0%})",
                "smaller",
                verdict(mp.nbytes < oj.nbytes),
            ]
        )
    if len(jobs) == 2:
        scaling = jobs[1].rate / jobs[0].rate
        targets.append(
            [
                f"jobs/s, 2 workers vs 1 ({JOB_KIND})",
                f"{scaling:.2f}x ({jobs[1].rate:,.0f} vs {jobs[0].rate:,.0f} jobs/s)",
                f"≥ {TARGET_WORKER_SCALING}x",
                verdict(scaling >= TARGET_WORKER_SCALING),
            ]
        )
    if len(tracing) == 2:
        off, on = (tracing[k] for k in TRACING_CONFIGS)
        tcost = 1 - on.rps / off.rps
        targets.append(
            [
                "tracing cost on cache GET (1 - on / off req/s)",
                f"{tcost:.0%}",
                f"≤ {TARGET_TRACING_COST:.0%}",
                verdict(tcost <= TARGET_TRACING_COST),
            ]
        )
    codec_rows = [
        [
            c.size,
            c.codec,
            f"{c.nbytes:,}",
            f"{c.us:,.1f}",
            f"{by[(c.size, 'stdlib json')].us / c.us:.1f}x",
        ]
        for c in codecs
    ]
    bus_rows = [
        [b.bus, f"{b.publish_rate:,.0f}", f"{b.p50_ms:.3f}", f"{b.p99_ms:.3f}"] for b in buses
    ]
    job_rows = [
        [str(j.workers), str(j.jobs), f"{j.submit_s:.2f}", f"{j.total_s:.2f}", f"{j.rate:,.0f}"]
        for j in jobs
    ]
    trace_rows = [
        [
            label,
            f"{r.rps:,.0f}",
            f"{r.rps_range[0]:,.0f} to {r.rps_range[1]:,.0f}" if r.rps_range else "",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.errors),
        ]
        for label, r in tracing.items()
    ]
    mode = " (--quick)" if quick else ""
    parts = [
        f"## Integrations — {today()}{mode}",
        "\n".join(environment_lines(setup)),
        md_table(["Measure", "Result", "Target", "Met"], targets),
        md_table(["Message", "Codec", "bytes", "µs encode+decode", "vs stdlib"], codec_rows),
    ]
    if bus_rows:
        parts.append(
            md_table(["Bus", "publish msg/s", "request p50 ms", "request p99 ms"], bus_rows)
        )
    if job_rows:
        parts.append(
            md_table(["Workers", "jobs", "submit s", "all succeeded s", "jobs/s"], job_rows)
        )
    if trace_rows:
        parts.append(
            md_table(
                ["Config", "req/s", "req/s by round", "p50 ms", "p99 ms", "errors"], trace_rows
            )
        )
    if notes:
        parts.append("\n".join(f"- Note: {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


async def run_async(args: argparse.Namespace, work: Path, notes: list[str]) -> tuple[Any, Any]:
    n_pub, n_req, n_jobs = (5_000, 500, 500) if args.quick else (20_000, 2_000, 2_000)
    buses: list[BusResult] = []
    jobs: list[JobResult] = []
    print(f"bus: {n_pub} publishes, {n_req} request/replies, 256-byte payload")
    buses.append(
        await measure_bus(InProcessBus(f"b{uuid.uuid4().hex[:6]}"), "InProcessBus", n_pub, n_req)
    )
    have_nats = await nats_up()
    if have_nats:
        nbus = NatsBus(NATS_URL, f"b{uuid.uuid4().hex[:6]}")
        buses.append(await measure_bus(nbus, "NatsBus", n_pub, n_req))
    else:
        notes.append(f"NATS at {NATS_URL} unreachable: NatsBus and jobs skipped")
    if have_nats and await postgres_up():
        print(f"jobs: {n_jobs} x {JOB_KIND} through Runtime.jobs.submit")
        for workers in (1, 2):
            jobs.append(await measure_jobs(workers, n_jobs, work))
    elif have_nats:
        notes.append("PostgreSQL unreachable: jobs skipped")
    return buses, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    args = parser.parse_args()
    budget_s, warmup_s, rounds, round_s = (0.3, 1.0, 3, 2.0) if args.quick else (1.0, 2.0, 5, 3.0)
    notes = [f"1-minute load average before the benchmark started: {os.getloadavg()[0]:.2f}"]
    work = Path(tempfile.mkdtemp(prefix="faas-bench-int-"))
    try:
        print("codecs: encode+decode of a ServiceResponse envelope (JSON form)")
        codecs = measure_codecs(budget_s)
        try:
            import uvloop
        except ImportError:
            buses, jobs = asyncio.run(run_async(args, work, notes))
        else:
            buses, jobs = uvloop.run(run_async(args, work, notes))
        print(f"tracing: cache GET, {rounds} alternating rounds of {round_s:.0f} s per config")
        tracing = measure_tracing(work, warmup_s=warmup_s, rounds=rounds, round_s=round_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes.append(f"1-minute load average after: {os.getloadavg()[0]:.2f}")
    notes.append(
        "on this 2-core machine the submitter, NATS, PostgreSQL and the worker processes all "
        "share the two cores (workers are not pinned), so 2 workers compete with the rest for CPU"
    )
    pinning = (
        f"uvicorn pinned to core {SERVER_CPU}, wrk to core {LOAD_CPU}"
        if have_taskset()
        else "not pinned"
    )
    setup = {
        "Codecs": "encode+decode of a ServiceResponse envelope's JSON form (nested `data` list of "
        "dicts) sized to ~1 KB / ~32 KB compact JSON; best of 5 repeats; JSON/MessagePack via "
        "JsonCodec/MsgpackCodec, Protobuf via `envelope_message` + `Envelope` (data and "
        "metadata as MessagePack bytes) and `envelope_dict`; stdlib `json.dumps/loads` baseline",
        "Bus": "one process, uvloop; publish: N 256-byte events until one subscriber saw all; "
        "request/reply: sequential requests to an echo subscriber; NATS at " + NATS_URL,
        "Jobs": f"`Runtime.jobs.submit` (16 in flight) of {JOB_KIND} to 1 or 2 `python -m faas "
        "worker` processes (job concurrency 4 each), JetStream + a throwaway PostgreSQL database "
        "per config; time from the first submit until every record is `succeeded`",
        "Tracing": f"foundation's faas app (cache GET hit, JWT, request logs), uvicorn one worker, "
        f"{CONCURRENCY} connections, wrk; off and on served side by side, {rounds} alternating "
        f"rounds of {round_s:.0f} s after {warmup_s:.0f} s warm-up; {pinning}; stdout to "
        "/dev/null",
    }
    section = report(codecs, buses, jobs, tracing, quick=args.quick, setup=setup, notes=notes)
    print()
    publish(section, save=not args.no_save)


if __name__ == "__main__":
    main()
