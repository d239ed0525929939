"""Runs jobs from the queue: claim the record, run the handler, record the outcome, ack.

A delivery whose record is already finished is acked without running (a worker that died after
finishing but before acking); a worker that dies mid-run stops heartbeating and JetStream
redelivers the job to another worker. The record's attempts and lease (see `JobQueue.claim`),
not the bus's delivery count, decide whether a delivery runs: one run at a time per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
import orjson
from opentelemetry import metrics, trace
from opentelemetry.trace import Link

from faas.integrations.bus import JobDelivery, MessageBus, Subscription
from faas.integrations.otel_messaging import link_from_headers
from faas.jobs.models import JobRecord, JobStatus, JobView
from faas.jobs.queue import JobCancelled, JobContext, JobHeld, JobQueue, PermanentJobError
from faas.jobs.registry import JobRegistry
from faas.shared.backoff import backoff
from faas.shared.context import RequestContext, reset_context, set_context

log = logging.getLogger("faas.jobs.worker")

CALLBACK_ATTEMPTS = 4
DEPTH_REFRESH_S = 5.0


class JobWorker:
    def __init__(
        self,
        queue: JobQueue,
        bus: MessageBus,
        registry: JobRegistry,
        *,
        concurrency: int = 4,
        lease_s: float = 60.0,
        meter: metrics.Meter | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.queue = queue
        self.bus = bus
        self.registry = registry
        self.kinds: list[str] = []  # what start() consumes
        self.concurrency = concurrency
        self.retry = queue.retry
        self.lease_s = lease_s
        self._tracer = tracer or trace.get_tracer("faas.jobs")
        self._subscription: Subscription | None = None
        self._depth = 0
        self._depth_task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        meter = meter or metrics.get_meter("faas.jobs")
        self._duration = meter.create_histogram(
            "faas.jobs.duration", unit="s", description="Job run time by kind and outcome"
        )
        meter.create_observable_gauge(
            "faas.jobs.queue_depth",
            callbacks=[lambda _: [metrics.Observation(self._depth)]],
            description="Jobs waiting in the queue",
        )

    async def start(self, kinds: list[str] | None = None) -> None:
        selected = kinds or sorted(self.registry.kinds)
        if not selected:
            return
        for kind in selected:
            self.registry.get(kind)
        self.kinds = list(selected)
        self._subscription = await self.bus.consume(
            selected, self._on_delivery, concurrency=self.concurrency
        )
        self._depth_task = asyncio.create_task(self._refresh_depth(), name="jobs-depth")
        log.info("job worker consuming", extra={"kinds": selected})

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        if self._depth_task is not None:
            self._depth_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._depth_task
        if self._callbacks:
            await asyncio.wait(self._callbacks, timeout=5)

    async def _refresh_depth(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._depth = await self.bus.queue_depth()
            await asyncio.sleep(DEPTH_REFRESH_S)

    async def _on_delivery(self, delivery: JobDelivery) -> None:
        job_id = orjson.loads(delivery.data)["job_id"]
        record = await self._claim(job_id)
        if record is None:
            await delivery.ack()
            return
        ctx = RequestContext(
            correlation_id=record.correlation_id or job_id, request_id=job_id, identity=None
        )
        token = set_context(ctx)
        lease = asyncio.create_task(self._renew_lease(job_id), name=f"job-lease {job_id}")
        try:
            await self._run(record, delivery)
        except asyncio.CancelledError:  # the worker is stopping: leave the job to the next one
            last = self.retry.exhausted(max(record.attempts, delivery.attempt))
            reason = f"worker stopped during attempt {record.attempts}"
            try:
                await self.queue.finish(
                    job_id, JobStatus.FAILED if last else JobStatus.QUEUED, error=reason
                )
            except Exception:  # the next delivery still takes it once the lease lapses
                log.warning("releasing job %s at stop failed", job_id, exc_info=True)
            raise
        finally:
            lease.cancel()
            reset_context(token)

    async def _claim(self, job_id: str) -> JobRecord | None:
        """Claim the job; a second delivery of a job that a live run holds waits (the bus
        keeps it from redelivery meanwhile) until that run ends or stops renewing its lease."""
        waiting = False
        while True:
            try:
                return await self.queue.claim(job_id, self.lease_s)
            except JobHeld:
                if not waiting:
                    log.info("job is running elsewhere; waiting", extra={"job_id": job_id})
                    waiting = True
                await asyncio.sleep(self.lease_s / 4)

    async def _renew_lease(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 4)
            try:
                await self.queue.touch(job_id)
            except Exception:
                log.warning("renewing the lease of job %s failed", job_id, exc_info=True)

    async def _run(self, record: JobRecord, delivery: JobDelivery) -> None:
        registered = self.registry.get(record.kind)
        link = link_from_headers(delivery.headers)
        links: list[Link] = [link] if link is not None else []
        context = JobContext(
            job_id=record.id,
            kind=record.kind,
            tenant_id=record.tenant_id,
            user_id=record.user_id,
            payload=dict(record.payload or {}),
            attempt=record.attempts,
            queue=self.queue,
        )
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"job {record.kind}",
            links=links,
            attributes={
                "faas.job.id": record.id,
                "faas.job.kind": record.kind,
                "faas.job.attempt": record.attempts,
                "faas.tenant_id": record.tenant_id,
            },
        ) as span:
            try:
                result = await registered.handler(context)
            except JobCancelled:
                await self._finish(record, delivery, JobStatus.CANCELLED, started)
                return
            except PermanentJobError as exc:
                reason = str(exc)
                span.set_status(trace.StatusCode.ERROR, reason)
                await self._finish(record, delivery, JobStatus.FAILED, started, error=reason)
                await delivery.fail(reason)
                return
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, reason)
                if self.retry.exhausted(max(record.attempts, delivery.attempt)):
                    log.warning("job failed for good", extra={"job_id": record.id, "error": reason})
                    await self._finish(record, delivery, JobStatus.FAILED, started, error=reason)
                    await delivery.fail(reason)
                else:
                    log.info("job attempt failed; will retry", extra={"job_id": record.id})
                    await self.queue.finish(record.id, JobStatus.QUEUED, error=reason)
                    await delivery.retry_later(self.retry.delay(record.attempts))
                return
            await self._finish(record, delivery, JobStatus.SUCCEEDED, started, result=result)

    async def _finish(
        self,
        record: JobRecord,
        delivery: JobDelivery,
        status: JobStatus,
        started: float,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        finished = await self.queue.finish(record.id, status, result=result, error=error)
        if status is not JobStatus.FAILED:
            await delivery.ack()
        self._duration.record(
            time.perf_counter() - started, {"kind": record.kind, "status": status.value}
        )
        if finished is not None and finished.callback_url:
            task = asyncio.create_task(self._callback(finished.callback_url, JobView.of(finished)))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _callback(self, url: str, view: JobView) -> None:
        body = view.model_dump(mode="json")
        async with httpx.AsyncClient(timeout=10) as client:
            for attempt in range(CALLBACK_ATTEMPTS):
                try:
                    response = await client.post(url, json=body)
                    if response.status_code < 500:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(backoff(attempt, base_s=0.5, cap_s=4.0))
        log.warning("job callback failed", extra={"job_id": view.job_id, "url": url})
