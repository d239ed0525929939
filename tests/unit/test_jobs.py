"""Jobs end to end in one process: submit, run on the in-process worker pool, read over HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from faas.app import create_service_app
from faas.integrations.bus import Message
from faas.integrations.otel import setup_telemetry
from faas.jobs import JobContext, JobQueue, JobStatus, JobWorker
from faas.jobs.models import JobRecord
from faas.jobs.queue import JobHeld
from faas.jobs.routes import accepted
from faas.runtime import Runtime
from faas.shared.config import Settings
from faas.shared.context import Identity
from tests.conftest import auth, open_client

A = auth("acme")
B = auth("globex")
ACME = Identity(tenant_id="acme", user_id="u1")


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = make_settings(
        job_modules=["tests.jobkinds"], job_retry_base_s=0.01, job_max_attempts=3
    )
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    runtime.load_job_modules()
    app = create_service_app([], runtime)
    async for client in open_client(app):
        yield runtime, client


async def wait_for(
    client: httpx.AsyncClient, job_id: str, statuses: set[str], timeout_s: float = 10
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        body = (await client.get(f"/api/v1/jobs/{job_id}", headers=A)).json()
        if body["data"]["status"] in statuses:
            return dict(body["data"])
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job stayed {body['data']['status']}: {body}")
        await asyncio.sleep(0.02)


async def test_a_job_runs_and_its_result_is_readable(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = env
    view = await runtime.jobs.submit(ACME, "testjobs.echo", {"x": 1})
    assert view.status == "queued"
    done = await wait_for(client, view.job_id, {"succeeded"})
    assert done["result"] == {"echo": {"x": 1}, "tenant": "acme", "attempt": 1}
    assert done["progress"] == 1.0 and done["attempts"] == 1
    assert done["started_at"] is not None and done["finished_at"] is not None


async def test_another_tenant_gets_404_for_my_job(env: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = env
    view = await runtime.jobs.submit(ACME, "testjobs.echo", {})
    response = await client.get(f"/api/v1/jobs/{view.job_id}", headers=B)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    cancel = await client.post(f"/api/v1/jobs/{view.job_id}/cancel", headers=B)
    assert cancel.status_code == 404
    listed = (await client.get("/api/v1/jobs", headers=B)).json()["data"]
    assert listed["total"] == 0


async def test_list_filters_by_status_and_kind(env: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = env
    ok = await runtime.jobs.submit(ACME, "testjobs.echo", {})
    bad = await runtime.jobs.submit(ACME, "testjobs.always_fails", {})
    await wait_for(client, ok.job_id, {"succeeded"})
    await wait_for(client, bad.job_id, {"failed"})
    failed = (await client.get("/api/v1/jobs", params={"status": "failed"}, headers=A)).json()
    assert [j["job_id"] for j in failed["data"]["items"]] == [bad.job_id]
    echo = (await client.get("/api/v1/jobs", params={"kind": "testjobs.echo"}, headers=A)).json()
    assert [j["job_id"] for j in echo["data"]["items"]] == [ok.job_id]
    page = (await client.get("/api/v1/jobs", params={"limit": 1}, headers=A)).json()["data"]
    assert page["total"] == 2 and len(page["items"]) == 1


async def test_a_failing_attempt_is_retried_until_it_succeeds(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = env
    view = await runtime.jobs.submit(ACME, "testjobs.flaky", {"fail_times": 2})
    done = await wait_for(client, view.job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["attempts"] == 3 and done["result"] == {"attempt": 3}


async def test_a_job_that_always_fails_is_failed_with_reason_and_dead_lettered(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = env
    dead: list[Message] = []

    async def on_dead(message: Message) -> None:
        dead.append(message)

    await runtime.bus.subscribe("dlq.testjobs.always_fails", on_dead)
    view = await runtime.jobs.submit(ACME, "testjobs.always_fails", {})
    done = await wait_for(client, view.job_id, {"failed"})
    assert done["attempts"] == 3
    assert done["error"] == "ValueError: this job never works"
    for _ in range(100):
        if dead:
            break
        await asyncio.sleep(0.01)
    assert len(dead) == 1
    assert "this job never works" in dead[0].headers["X-Failure-Reason"]
    assert orjson.loads(dead[0].data)["job_id"] == view.job_id


async def test_cancel_a_running_job(env: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = env
    view = await runtime.jobs.submit(ACME, "testjobs.cancellable", {})
    await wait_for(client, view.job_id, {"running"})
    response = await client.post(f"/api/v1/jobs/{view.job_id}/cancel", headers=A)
    assert response.status_code == 200
    done = await wait_for(client, view.job_id, {"cancelled", "succeeded"})
    assert done["status"] == "cancelled"
    again = await client.post(f"/api/v1/jobs/{view.job_id}/cancel", headers=A)
    assert again.status_code == 409


async def test_unknown_kind_is_422(env: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, _ = env
    from faas.shared.exceptions import ValidationFailed

    with pytest.raises(ValidationFailed, match="unknown job kind"):
        await runtime.jobs.submit(ACME, "testjobs.nope", {})


async def test_the_same_job_id_is_not_accepted_twice(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, _ = env
    from faas.shared.exceptions import Conflict

    await runtime.jobs.submit(ACME, "testjobs.echo", {}, job_id="fixed-id-1")
    with pytest.raises(Conflict):
        await runtime.jobs.submit(ACME, "testjobs.echo", {}, job_id="fixed-id-1")


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(orjson.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def callback_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


async def test_the_callback_url_receives_the_finished_job(
    env: tuple[Runtime, httpx.AsyncClient], callback_server: tuple[str, list[dict[str, Any]]]
) -> None:
    runtime, client = env
    url, received = callback_server
    view = await runtime.jobs.submit(ACME, "testjobs.echo", {"y": 2}, callback_url=url)
    await wait_for(client, view.job_id, {"succeeded"})
    for _ in range(200):
        if received:
            break
        await asyncio.sleep(0.01)
    assert received[0]["job_id"] == view.job_id
    assert received[0]["status"] == "succeeded"


async def test_accepted_answers_202_with_location() -> None:
    from faas.jobs.models import JobView

    app = FastAPI()
    now = "2026-01-01T00:00:00Z"
    view = JobView.model_validate(
        {
            "job_id": "j1",
            "kind": "x.y",
            "service": "x",
            "status": "queued",
            "stage": "queued",
            "progress": 0,
            "attempts": 0,
            "result": None,
            "error": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
        }
    )

    @app.post("/submit")
    async def submit() -> Any:
        return accepted(view)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        response = await c.post("/submit")
    assert response.status_code == 202
    assert response.headers["location"] == "/api/v1/jobs/j1"
    assert response.json()["data"] == {
        "job_id": "j1",
        "status": "queued",
        "location": "/api/v1/jobs/j1",
    }


# --- attempts and the lease: one run at a time per job -----------------------------------------


class Clock:
    """A settable clock for the job records (the lease is measured in it)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def idle_runtime(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    """A runtime whose jobs nobody consumes: the tests below play the worker."""
    settings = make_settings(job_modules=["tests.jobkinds"], job_max_attempts=3)
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    runtime.load_job_modules()
    await runtime.start(run_worker=False)
    yield runtime
    await runtime.close()


async def test_claim_counts_runs_and_refuses_a_job_whose_run_holds_a_live_lease(
    idle_runtime: Runtime,
) -> None:
    clock = Clock()
    queue = JobQueue(idle_runtime.db, idle_runtime.bus, idle_runtime.jobs.registry, clock=clock)
    view = await queue.submit(ACME, "testjobs.echo", {})

    first = await queue.claim(view.job_id, lease_s=10)
    assert first is not None and first.attempts == 1 and first.status == "running"
    with pytest.raises(JobHeld):  # a second delivery while the first run is alive
        await queue.claim(view.job_id, lease_s=10)
    clock.advance(9)
    await queue.touch(view.job_id)  # the run renews its lease
    clock.advance(9)
    with pytest.raises(JobHeld):
        await queue.claim(view.job_id, lease_s=10)
    clock.advance(2)  # 11 s without renewal: its worker is gone
    second = await queue.claim(view.job_id, lease_s=10)
    assert second is not None and second.attempts == 2

    await queue.finish(view.job_id, JobStatus.SUCCEEDED, result={})
    assert await queue.claim(view.job_id, lease_s=10) is None
    assert (await queue.get("acme", view.job_id)).attempts == 2


class Delivery:
    """A `JobDelivery` that records how it was settled."""

    def __init__(self, job_id: str, attempt: int) -> None:
        self.job_id = job_id
        self.kind = "testjobs.gated"
        self.data = orjson.dumps({"job_id": job_id})
        self.headers: dict[str, str] = {}
        self.attempt = attempt
        self.max_attempts = 3
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def retry_later(self, delay_s: float) -> None:
        self.settled.append("retry")

    async def fail(self, reason: str) -> None:
        self.settled.append("fail")

    async def in_progress(self) -> None:
        return None


class CountingQueue(JobQueue):
    claims = 0

    async def claim(self, job_id: str, lease_s: float) -> JobRecord | None:
        self.claims += 1
        return await super().claim(job_id, lease_s)


class CapturingBus:
    """Hands the worker's delivery handler to the test instead of consuming a queue."""

    handler: Callable[[Any], Any] | None = None

    async def consume(self, kinds: list[str], handler: Any, *, concurrency: int = 4) -> Any:
        self.handler = handler
        return self

    async def unsubscribe(self) -> None:
        return None

    async def queue_depth(self, kind: str | None = None) -> int:
        return 0


async def test_a_second_delivery_of_a_running_job_waits_for_it_and_never_runs_it(
    idle_runtime: Runtime,
) -> None:
    """The bus may deliver one job twice at once (JetStream does, after a worker crash): the
    record's lease lets one delivery run it, and the other acks once that run is over."""
    runs: list[int] = []
    release = asyncio.Event()

    async def gated(ctx: JobContext) -> Any:
        runs.append(ctx.attempt)
        await release.wait()
        return {"attempt": ctx.attempt}

    registry = idle_runtime.jobs.registry
    registry.register("testjobs.gated", gated)
    queue = CountingQueue(idle_runtime.db, idle_runtime.bus, registry, clock=Clock())
    bus = CapturingBus()
    # The clock stands still, so the lease never lapses, however long the first run takes.
    worker = JobWorker(queue, bus, registry, lease_s=0.2)  # type: ignore[arg-type]
    await worker.start(["testjobs.gated"])
    assert bus.handler is not None
    view = await queue.submit(ACME, "testjobs.gated", {})
    first, second = Delivery(view.job_id, 1), Delivery(view.job_id, 1)
    running = asyncio.create_task(bus.handler(first))
    while not runs:
        await asyncio.sleep(0.01)
    waiting = asyncio.create_task(bus.handler(second))
    while queue.claims < 4:  # the second delivery found the job held, three times over
        await asyncio.sleep(0.01)
    assert not second.settled and runs == [1]

    release.set()
    await asyncio.gather(running, waiting)
    await worker.stop()
    assert runs == [1]
    assert first.settled == ["ack"] and second.settled == ["ack"]
    job = await queue.get("acme", view.job_id)
    assert job.status == "succeeded" and job.attempts == 1
