"""`/api/v1/jobs`: read, list and cancel the caller's jobs, submit a batch of the kinds callers
may submit directly; `accepted()` answers a submission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from faas.jobs.models import JobAccepted, JobBatch, JobBatchAccepted, JobStatus, JobView
from faas.jobs.queue import JobQueue, NewJob
from faas.shared.api import PageDep, caller, respond
from faas.shared.contracts import Page, ServiceResponse


def _location(view: JobView) -> str:
    return f"/api/v1/jobs/{view.job_id}"


def accepted(view: JobView) -> Response:
    location = _location(view)
    body = JobAccepted(job_id=view.job_id, status=view.status, location=location)
    return respond(body, status_code=202, headers={"Location": location})


def build_jobs_router(queue: JobQueue) -> APIRouter:
    router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

    @router.get("", response_model=ServiceResponse[Page[JobView]])
    async def list_jobs(
        page: PageDep,
        status: Annotated[JobStatus | None, Query()] = None,
        kind: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Response:
        result = await queue.list(
            caller().tenant_id, status=status, kind=kind, limit=page.limit, offset=page.offset
        )
        return respond(result)

    @router.post(":batch", status_code=202, response_model=ServiceResponse[JobBatchAccepted])
    async def submit_batch(body: JobBatch) -> Response:
        jobs = [NewJob(job.kind, job.payload) for job in body.jobs]
        views = await queue.submit_batch(caller(), jobs)
        answer = [
            JobAccepted(job_id=v.job_id, status=v.status, location=_location(v)) for v in views
        ]
        return respond(JobBatchAccepted(jobs=answer), status_code=202)

    @router.get("/{job_id}", response_model=ServiceResponse[JobView])
    async def get_job(job_id: str) -> Response:
        return respond(await queue.get(caller().tenant_id, job_id))

    @router.post("/{job_id}/cancel", response_model=ServiceResponse[JobView])
    async def cancel_job(job_id: str) -> Response:
        return respond(await queue.cancel(caller().tenant_id, job_id))

    return router
