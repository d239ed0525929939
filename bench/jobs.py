"""Jobs benchmark: submission and worker scaling, the code before a change (a git worktree of
--before, default HEAD) against the working tree, side by side in one run.

    .venv/bin/python bench/jobs.py [--before REV] [--quick] [--no-save]

  submit   bench/_jobs_probe.py run in each tree (PYTHONPATH picks the code), a fresh database
           each: `Runtime.jobs.submit` with 16 and 8 in flight, and (working tree) `submit_many`
           in batches of 500; on PostgreSQL + JetStream and on SQLite + the in-process bus.
           Jobs/s, the submitter's CPU-ms per job, SQL statements and pool checkouts per job.
  http     working tree only (the baseline has no direct job submission over HTTP):
           `faas serve cache` on PostgreSQL + JetStream, `POST /api/v1/jobs:batch` of 100 jobs
           and of 1 job, 4 requests in flight; jobs/s and server CPU-ms per job.
  workers  1 and 2 `faas worker` processes of each tree (4 jobs in flight each) on
           benchjobs.sleep (waits 200 ms: I/O-bound), the jobs submitted at once by that tree;
           jobs/s from the first job's creation to the last one's finish, from the jobs table,
           and the workers' CPU-ms per job.

Rounds alternate the trees' order; medians with [lowest, highest] of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import nats

from _common import (
    BENCH_DIR,
    PYTHON,
    ROOT,
    SERVER_CPU,
    append_results,
    clean_env,
    environment_lines,
    free_port,
    md_table,
    mint_token,
    pinned,
    server,
    stop_process,
    today,
    wait_for_quiet,
)
from faas.integrations.bus.subjects import stream_names
from refactor import cpu_seconds, git, worktree

NATS_URL = "nats://127.0.0.1:4222"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
SECRET = "bench-jobs-secret-" + "x" * 32
KIND = "benchjobs.sleep"
PROBE = BENCH_DIR / "_jobs_probe.py"

Samples = dict[str, dict[str, list[float]]]  # measure -> tree -> one value per round


@dataclass(frozen=True, slots=True)
class Tree:
    label: str
    src: Path

    def env(self, data_dir: Path, **extra: str) -> dict[str, str]:
        path = f"{self.src}:{BENCH_DIR}:{ROOT}"
        return clean_env(PYTHONPATH=path, FAAS_DATA_DIR=str(data_dir), **extra)


@dataclass(frozen=True, slots=True)
class Mode:
    rounds: int
    jobs: int  # per submit measure
    worker_jobs: int
    http_s: float

    @staticmethod
    def of(quick: bool) -> Mode:
        return Mode(1, 500, 80, 2.0) if quick else Mode(5, 2000, 400, 5.0)


# -- databases and processes ------------------------------------------------------------------


@contextmanager
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database (each tree migrates its own), dropped at the end."""
    name = f"faas_bench_jobs_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.format(name=name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def probe(tree: Tree, work: Path, database: str, nats: str, *args: str) -> dict[str, float]:
    data = work / f"probe-{uuid.uuid4().hex[:6]}"
    cmd = [PYTHON, str(PROBE), "--database", database, "--nats", nats, "--data-dir", str(data)]
    cmd += args
    env = tree.env(data)
    out = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{tree.label} probe failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def start_worker(
    tree: Tree, work: Path, database: str, prefix: str, i: int
) -> subprocess.Popen[bytes]:
    env = tree.env(
        work / f"worker-{tree.label}-{i}",
        FAAS_DATABASE_URL=database,
        FAAS_NATS_URL=NATS_URL,
        FAAS_NATS_PREFIX=prefix,
        FAAS_JOB_MODULES="_jobkinds",
        FAAS_SERVICES="",
        FAAS_JWT_SECRET=SECRET,
    )
    log = work / f"worker-{tree.label}-{prefix}-{i}.log"
    cmd = [PYTHON, "-m", "faas", "worker", "--kinds", KIND]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while f"consuming {KIND}" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


# -- the three measures -----------------------------------------------------------------------


SUBMITS = [  # label, backend, probe arguments, working tree only
    ("PostgreSQL + NATS, submit x16", "pg", ["--mode", "single", "--in-flight", "16"], False),
    ("PostgreSQL + NATS, submit x8", "pg", ["--mode", "single", "--in-flight", "8"], False),
    ("PostgreSQL + NATS, submit_many (500)", "pg", ["--mode", "batch"], True),
    ("SQLite + in-process, submit x16", "sqlite", ["--mode", "single"], False),
    ("SQLite + in-process, submit_many (500)", "sqlite", ["--mode", "batch"], True),
]


def submit_round(trees: Sequence[Tree], work: Path, mode: Mode, samples: Samples) -> None:
    for label, backend, args, new_only in SUBMITS:
        for tree in trees:
            if new_only and tree.label != "after":
                continue
            jobs = ["--jobs", str(mode.jobs), *args]
            if backend == "pg":
                with pg_database() as url:
                    result = probe(tree, work, url, NATS_URL, *jobs)
            else:
                url = f"sqlite+aiosqlite:///{work}/probe-{uuid.uuid4().hex[:6]}.db"
                result = probe(tree, work, url, "", *jobs)
            for key, value in result.items():
                samples[f"{label}: {key}"][tree.label].append(value)


def workers_round(trees: Sequence[Tree], work: Path, mode: Mode, samples: Samples) -> None:
    for tree in trees:
        for count in (1, 2):
            rate, cpu_ms = run_workers(tree, work, mode.worker_jobs, count)
            samples[f"{count} worker(s): jobs/s"][tree.label].append(rate)
            samples[f"{count} worker(s): worker CPU-ms/job"][tree.label].append(cpu_ms)
        ratio = samples["2 worker(s): jobs/s"][tree.label][-1]
        ratio /= samples["1 worker(s): jobs/s"][tree.label][-1]
        samples["2 workers vs 1: ratio"][tree.label].append(ratio)


def run_workers(tree: Tree, work: Path, n: int, count: int) -> tuple[float, float]:
    prefix = f"bj{uuid.uuid4().hex[:8]}"
    with pg_database() as url, ExitStack() as stack:
        # The tree's own migrations first, so its workers start on a ready database.
        probe(tree, work, url, NATS_URL, "--jobs", "0", "--prefix", prefix)
        stack.callback(lambda: asyncio.run(drop_streams(prefix)))  # after the workers stop
        procs = [start_worker(tree, work, url, prefix, i) for i in range(count)]
        for proc in procs:
            stack.callback(stop_process, proc, 20)
        before = sum(cpu_seconds(p.pid) for p in procs)
        args = ["--jobs", str(n), "--warmup", "0", "--prefix", prefix, "--keep"]
        probe(tree, work, url, NATS_URL, *args)
        span = asyncio.run(wait_done(url, n))
        used = sum(cpu_seconds(p.pid) for p in procs) - before
    print(f"  {tree.label}: {count} worker(s) {n / span:.1f} jobs/s")
    return n / span, 1000 * used / n


async def drop_streams(prefix: str) -> None:
    client = await nats.connect(NATS_URL)
    try:
        for stream in stream_names(prefix):
            with suppress(Exception):
                await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


async def wait_done(url: str, n: int) -> float:
    """Seconds from the first job's creation to the last one's finish, once all succeeded."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
            if done >= n:
                query = "SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM jobs"
                return float(await conn.fetchval(query))
            if await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'"):
                raise RuntimeError("a benchmark job failed")
            await asyncio.sleep(0.1)
        raise RuntimeError(f"only {done} of {n} jobs succeeded in time")
    finally:
        await conn.close()


def http_round(tree: Tree, work: Path, mode: Mode, samples: Samples) -> None:
    with pg_database() as url, ExitStack() as stack:
        env = tree.env(
            work / f"http-{uuid.uuid4().hex[:6]}",
            FAAS_DATABASE_URL=url,
            FAAS_NATS_URL=NATS_URL,
            FAAS_NATS_PREFIX=f"bh{uuid.uuid4().hex[:8]}",
            FAAS_JOB_MODULES="tests.jobkinds",
            FAAS_RUN_WORKER="false",
            FAAS_LOG_REQUESTS="false",
            FAAS_JWT_SECRET=SECRET,
        )
        port = free_port()
        cmd = pinned([PYTHON, "-m", "faas", "serve", "cache", "--port", str(port)], SERVER_CPU)
        base = f"http://127.0.0.1:{port}"
        log = work / f"http-{port}.log"
        proc = stack.enter_context(server(cmd, env, f"{base}/readyz", log, cwd=work))
        token = mint_token(env, "bench")
        for size in (100, 1):
            before = cpu_seconds(proc.pid)
            jobs = asyncio.run(post_batches(base, token, size, mode.http_s))
            used = cpu_seconds(proc.pid) - before
            samples[f"HTTP jobs:batch of {size}: jobs/s"][tree.label].append(jobs / mode.http_s)
            samples[f"HTTP jobs:batch of {size}: CPU-ms/job"][tree.label].append(1000 * used / jobs)


async def post_batches(base: str, token: str, size: int, duration_s: float) -> int:
    body = {"jobs": [{"kind": "testjobs.echo", "payload": {"label": "b"}}] * size}
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/api/v1/jobs:batch"
    queued = 0
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(3):  # warm-up
            (await client.post(url, json=body, headers=headers)).raise_for_status()
        end = time.monotonic() + duration_s

        async def loop() -> None:
            nonlocal queued
            while time.monotonic() < end:
                response = await client.post(url, json=body, headers=headers)
                response.raise_for_status()
                queued += len(response.json()["data"]["jobs"])

        await asyncio.gather(*(loop() for _ in range(4)))
    return queued


# -- report -----------------------------------------------------------------------------------


def cell(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mid = statistics.median(values)
    digits = 2 if mid < 10 else 1 if mid < 100 else 0
    if len(values) == 1:
        return f"{mid:,.{digits}f}"
    return f"{mid:,.{digits}f} [{min(values):,.{digits}f}, {max(values):,.{digits}f}]"


def table(samples: Samples) -> str:
    rows = []
    for measure, by_tree in samples.items():
        before, after = by_tree.get("before", []), by_tree.get("after", [])
        ratios = [a / b for a, b in zip(after, before, strict=False) if b]
        ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        rows.append([measure, cell(before), cell(after), ratio])
    return md_table(["Measure", "before", "after", "after/before"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="HEAD")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--only", choices=["submit", "http", "workers"], action="append")
    parser.add_argument("--max-load", type=float, default=2.0, help="wait for a load below")
    parser.add_argument("--quiet-wait-s", type=float, default=300.0)
    args = parser.parse_args()
    mode = Mode.of(args.quick)
    parts = args.only or ["submit", "http", "workers"]
    samples: Samples = defaultdict(lambda: defaultdict(list))
    rev = git("rev-parse", "--short", args.before)
    start_load = wait_for_quiet(args.max_load, args.quiet_wait_s)
    loads = [start_load]
    with tempfile.TemporaryDirectory(prefix="faas-bench-jobs-") as tmp, worktree(rev) as old:
        work = Path(tmp)
        trees = [Tree("before", old / "src"), Tree("after", ROOT / "src")]
        for i in range(mode.rounds):
            order = trees if i % 2 == 0 else trees[::-1]
            if "submit" in parts:
                submit_round(order, work, mode, samples)
            if "http" in parts:
                http_round(trees[1], work, mode, samples)
            if "workers" in parts:
                workers_round(order, work, mode, samples)
            loads.append(os.getloadavg()[0])
            print(f"round {i + 1}/{mode.rounds} done (load {loads[-1]:.2f})")
    facts = {
        "Trees": f"before = {rev} (git worktree), after = the working tree",
        "Load average (1 min) at the start and after each round": ", ".join(
            f"{x:.2f}" for x in loads
        ),
        "Rounds": f"{mode.rounds}, trees alternating; median [lowest, highest]",
    }
    section = "\n".join(
        [
            f"## Jobs: submission and workers — {today()}",
            "",
            *environment_lines(facts),
            "",
            table(samples),
        ]
    )
    print(section)
    if not args.no_save:
        append_results(section)


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        main()
