"""A real `faas worker` killed mid-job: the job is redelivered to another worker, its side
effect happens exactly once, and its attempts count the runs (real NATS JetStream and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from faas.integrations.otel import setup_telemetry
from faas.jobs import JobView
from faas.runtime import Runtime
from faas.shared.config import Settings
from faas.shared.context import Identity
from tests.conftest import drop_streams
from tests.crashjobs import TABLES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ACK_WAIT_S = 2
ACME = Identity(tenant_id="acme", user_id="u1")


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[str]:
    name = f"faas_jobs_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


class Worker:
    """A `faas worker` process. Its stderr is read to the end by a thread, so that a chatty
    worker never blocks on a full pipe, and kept for failure messages."""

    def __init__(self, env: dict[str, str], kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faas", "worker", "--kinds", kind],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._consuming = threading.Event()
        self._marker = f"consuming {kind}"
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if self._marker in line:
                self._consuming.set()

    async def started(self) -> Worker:
        if not await asyncio.to_thread(self._consuming.wait, 60):
            self.stop()
            raise AssertionError("worker did not start consuming:\n" + "".join(self.lines))
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


@pytest.fixture
async def deployment(
    tmp_path: Path, nats_url: str, database: str
) -> AsyncIterator[tuple[Runtime, dict[str, str]]]:
    """The runtime jobs are submitted through, and the environment of its workers."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    modules = ["tests.jobkinds", "tests.crashjobs"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    env |= {
        "FAAS_DATA_DIR": str(tmp_path / "data"),
        "FAAS_DATABASE_URL": database,
        "FAAS_NATS_URL": nats_url,
        "FAAS_NATS_PREFIX": prefix,
        "FAAS_JOB_MODULES": ",".join(modules),
        "FAAS_JOB_ACK_WAIT_S": str(ACK_WAIT_S),
        "FAAS_SERVICES": "",
        "FAAS_JWT_SECRET": "x" * 40,
    }
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database,
        nats_url=nats_url,
        nats_prefix=prefix,
        job_modules=modules,
        job_ack_wait_s=ACK_WAIT_S,
        run_worker=False,
        jwt_secret="x" * 40,
    )
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    runtime.load_job_modules()
    await runtime.start()
    try:
        yield runtime, env
    finally:
        await drop_streams(runtime.bus)
        await runtime.close()


async def finished(runtime: Runtime, job_id: str, worker: Worker) -> JobView:
    for _ in range(1200):
        job = await runtime.jobs.get("acme", job_id)
        if job.status.terminal:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never finished: {job}\n" + "".join(worker.lines))


async def test_killed_worker_job_is_redelivered_and_runs_its_effect_once(
    tmp_path: Path, deployment: tuple[Runtime, dict[str, str]]
) -> None:
    runtime, env = deployment
    first = await Worker(env, "testjobs.slow_effect").started()
    second: Worker | None = None
    try:
        view = await runtime.jobs.submit(
            ACME, "testjobs.slow_effect", {"dir": str(tmp_path), "sleep_s": 10}
        )
        marker = tmp_path / f"{view.job_id}.started-{first.pid}"
        for _ in range(600):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the first worker never started the job"
        first.kill()

        second = await Worker(env, "testjobs.slow_effect").started()
        job = await finished(runtime, view.job_id, second)
        assert job.status == "succeeded", job
        effects = (tmp_path / f"{view.job_id}.effects").read_text().splitlines()
        assert effects == [str(second.pid)], "the killed worker must not have finished the job"
        assert job.attempts == 2
        assert (tmp_path / f"{view.job_id}.started-{second.pid}").exists()
    finally:
        first.stop()
        if second is not None:
            second.stop()


@pytest.mark.parametrize(
    "pause_s",
    [0, 3 * ACK_WAIT_S],
    ids=["next-worker-at-once", "redelivery-due-with-no-worker-waiting"],
)
async def test_runs_across_a_crash_are_counted_and_the_effect_happens_once(
    deployment: tuple[Runtime, dict[str, str]], database: str, pause_s: float
) -> None:
    """Every run a handler starts is one attempt, whatever JetStream's delivery count says:
    when the job's redelivery comes due while no worker is waiting for it, nats-server 2.9
    hands it over as a first delivery again."""
    runtime, env = deployment
    dsn = database.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(dsn)
    await conn.execute(TABLES)
    first = await Worker(env, "crashjobs.ledger").started()
    second: Worker | None = None
    try:
        view = await runtime.jobs.submit(ACME, "crashjobs.ledger", {"dsn": dsn, "sleep_s": 8})
        for _ in range(600):
            if await conn.fetchval("SELECT count(*) FROM job_runs"):
                break
            await asyncio.sleep(0.05)
        first.kill()
        # Deliberately idle: the redelivery comes due, and the dead worker's pull request ends.
        await asyncio.sleep(pause_s)

        second = await Worker(env, "crashjobs.ledger").started()
        job = await finished(runtime, view.job_id, second)
        assert job.status == "succeeded", job
        runs = await conn.fetch("SELECT pid, attempt FROM job_runs WHERE job_id = $1", view.job_id)
        assert sorted((r["attempt"], r["pid"]) for r in runs) == [(1, first.pid), (2, second.pid)]
        effects = await conn.fetch("SELECT pid FROM job_effects WHERE job_id = $1", view.job_id)
        assert [r["pid"] for r in effects] == [second.pid]
        assert job.attempts == 2
    finally:
        await conn.close()
        first.stop()
        if second is not None:
            second.stop()
