"""Jobs: long work submitted over HTTP, run by workers that consume the job queue."""

from faas.jobs.models import JobStatus, JobView
from faas.jobs.queue import JobCancelled, JobContext, JobQueue, NewJob, PermanentJobError
from faas.jobs.registry import JobHandler, JobRegistry
from faas.jobs.retry import RetryPolicy
from faas.jobs.worker import JobWorker

__all__ = [
    "JobCancelled",
    "JobContext",
    "JobHandler",
    "JobQueue",
    "JobRegistry",
    "JobStatus",
    "JobView",
    "JobWorker",
    "NewJob",
    "PermanentJobError",
    "RetryPolicy",
]
