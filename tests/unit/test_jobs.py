"""Jobs end to end in one process: submit, run on the in-process worker pool, read over HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from faas.app import create_service_app
from faas.integrations.nats import Message
from faas.integrations.otel import setup_telemetry
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
