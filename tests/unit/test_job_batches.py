"""Batch submission: `JobQueue.submit_many` and `POST /api/v1/jobs:batch`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.jobs import NewJob
from faas.runtime import Runtime
from faas.shared.config import Settings
from faas.shared.context import Identity
from faas.shared.exceptions import Conflict, DependencyUnavailable, ValidationFailed
from tests.conftest import auth, open_client

A = auth("acme")
B = auth("globex")
ACME = Identity(tenant_id="acme", user_id="u1")


@pytest.fixture
async def env(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = make_settings(job_modules=["tests.jobkinds"], job_max_attempts=3)
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    runtime.load_job_modules()
    app = create_service_app([], runtime)
    async for client in open_client(app):
        yield runtime, client


async def settled(client: httpx.AsyncClient, job_ids: list[str]) -> list[dict[str, Any]]:
    for _ in range(500):
        jobs = [(await client.get(f"/api/v1/jobs/{j}", headers=A)).json()["data"] for j in job_ids]
        if all(job["status"] in ("succeeded", "failed") for job in jobs):
            return jobs
        await asyncio.sleep(0.02)
    raise AssertionError(f"jobs still running: {jobs}")


async def test_a_batch_over_http_queues_every_job_and_each_runs(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = env
    body = {"jobs": [{"kind": "testjobs.echo", "payload": {"label": f"n{i}"}} for i in range(5)]}
    response = await client.post("/api/v1/jobs:batch", json=body, headers=A)
    assert response.status_code == 202
    accepted = response.json()["data"]["jobs"]
    assert [job["status"] for job in accepted] == ["queued"] * 5
    assert accepted[0]["location"] == f"/api/v1/jobs/{accepted[0]['job_id']}"
    jobs = await settled(client, [job["job_id"] for job in accepted])
    assert [job["result"]["echo"] for job in jobs] == [{"label": f"n{i}"} for i in range(5)]
    assert {job["result"]["tenant"] for job in jobs} == {"acme"}


async def test_another_tenant_cannot_read_or_list_my_batch_jobs(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = env
    body = {"jobs": [{"kind": "testjobs.echo"}, {"kind": "testjobs.echo"}]}
    accepted = (await client.post("/api/v1/jobs:batch", json=body, headers=A)).json()["data"]
    for job in accepted["jobs"]:
        assert (await client.get(job["location"], headers=B)).status_code == 404
    assert (await client.get("/api/v1/jobs", headers=B)).json()["data"]["total"] == 0
    assert (await client.get("/api/v1/jobs", headers=A)).json()["data"]["total"] == 2


async def test_a_batch_with_a_kind_callers_may_not_submit_is_refused_whole(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = env
    body = {"jobs": [{"kind": "testjobs.echo"}, {"kind": "testjobs.always_fails"}]}
    response = await client.post("/api/v1/jobs:batch", json=body, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"submittable": ["testjobs.echo"]}
    assert (await client.get("/api/v1/jobs", headers=A)).json()["data"]["total"] == 0


async def test_a_batch_with_an_invalid_payload_is_refused_whole(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = env
    body = {
        "jobs": [{"kind": "testjobs.echo"}, {"kind": "testjobs.echo", "payload": {"label": []}}]
    }
    response = await client.post("/api/v1/jobs:batch", json=body, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"index": 1}
    assert (await client.get("/api/v1/jobs", headers=A)).json()["data"]["total"] == 0


async def test_an_empty_or_oversized_batch_is_422(env: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, client = env
    empty = await client.post("/api/v1/jobs:batch", json={"jobs": []}, headers=A)
    assert empty.status_code == 422
    many = {"jobs": [{"kind": "testjobs.echo"}] * 1001}
    assert (await client.post("/api/v1/jobs:batch", json=many, headers=A)).status_code == 422


async def test_submit_many_records_none_when_one_id_exists(
    env: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = env
    await runtime.jobs.submit(ACME, "testjobs.echo", {}, job_id="taken")
    batch = [NewJob("testjobs.echo", {}, job_id="fresh"), NewJob("testjobs.echo", {}, "taken")]
    with pytest.raises(Conflict):
        await runtime.jobs.submit_many(ACME, batch)
    with pytest.raises(ValidationFailed, match="twice"):
        await runtime.jobs.submit_many(ACME, [NewJob("testjobs.echo", {}, "x")] * 2)
    listed = (await client.get("/api/v1/jobs", headers=A)).json()["data"]
    assert [job["job_id"] for job in listed["items"]] == ["taken"]


async def test_jobs_the_bus_refuses_are_failed_and_the_refusal_is_raised(
    env: tuple[Runtime, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client = env

    async def refuse(kind: str, payload: bytes, *, job_id: str, headers: Any = None) -> None:
        raise DependencyUnavailable(f"job {job_id} was not queued")

    monkeypatch.setattr(runtime.bus, "submit", refuse)
    with pytest.raises(DependencyUnavailable):
        await runtime.jobs.submit_many(
            ACME, [NewJob("testjobs.echo", {}, f"j{i}") for i in range(3)]
        )
    for i in range(3):
        job = (await client.get(f"/api/v1/jobs/j{i}", headers=A)).json()["data"]
        assert job["status"] == "failed"
        assert job["error"] == f"job queue unavailable: job j{i} was not queued"
