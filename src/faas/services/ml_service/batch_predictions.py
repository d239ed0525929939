"""Batch prediction as a job: a registered version predicts every row of a dataset; the rows'
predictions go to `data_dir/ml/{tenant}/predictions/{job}.jsonl` and the job result
summarises them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from faas.jobs import JobContext, JobQueue, JobView, PermanentJobError
from faas.services.ml_service import features, training
from faas.services.ml_service.datasets import Datasets
from faas.services.ml_service.instruments import PredictionInstruments
from faas.services.ml_service.jsonl import write_rows
from faas.services.ml_service.registry import ModelRegistry
from faas.services.ml_service.serving import ModelServer
from faas.shared.context import Identity
from faas.shared.exceptions import FaaSError

BATCH_JOB = "ml.batch_predict"


class BatchPredictions:
    def __init__(
        self,
        jobs: JobQueue,
        datasets: Datasets,
        registry: ModelRegistry,
        server: ModelServer,
        instruments: PredictionInstruments,
        root: Path,
    ) -> None:
        self.jobs = jobs
        self.datasets = datasets
        self.registry = registry
        self.server = server
        self.instruments = instruments
        self.root = root

    async def submit(
        self,
        identity: Identity,
        name: str,
        dataset_id: str,
        version: int | None,
        alias: str | None,
    ) -> JobView:
        """Resolve the version now (a 404 at once, not a failed job) and pin it, so moving an
        alias while the job waits does not change what it predicts with."""
        resolved = await self.registry.resolve(
            identity.tenant_id, name, version=version, alias=alias
        )
        await self.datasets.record(identity.tenant_id, dataset_id)
        payload = {"model": name, "version": resolved.version, "dataset_id": dataset_id}
        return await self.jobs.submit(identity, BATCH_JOB, payload)

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        tenant = ctx.tenant_id
        name = str(ctx.payload["model"])
        try:
            resolved = await self.registry.resolve(
                tenant, name, version=int(ctx.payload["version"])
            )
            _, rows = await self.datasets.rows(tenant, str(ctx.payload["dataset_id"]))
            row = resolved.row
            checked = features.validate_inputs(rows, row.input_schema)
            pipeline = await self.server.load(tenant, resolved)
        except FaaSError as exc:
            if exc.status_code < 500:
                raise PermanentJobError(exc.message) from exc
            raise
        await ctx.progress(0.3, "predicting")
        predictions = await asyncio.to_thread(
            training.predict, pipeline, checked, row.input_schema, row.output
        )
        self.instruments.batch(tenant, name, resolved.version, len(predictions))
        path = self.root / tenant / "predictions" / f"{ctx.job_id}.jsonl"
        await asyncio.to_thread(
            write_rows, path, [{"row": i, "prediction": p} for i, p in enumerate(predictions)]
        )
        return {
            "model": name,
            "version": resolved.version,
            "dataset_id": ctx.payload["dataset_id"],
            "rows": len(predictions),
            "summary": _summary(predictions),
            "preview": predictions[:10],
        }


def _summary(predictions: list[Any]) -> dict[str, Any]:
    if predictions and isinstance(predictions[0], float):
        return {
            "mean": sum(predictions) / len(predictions),
            "min": min(predictions),
            "max": max(predictions),
        }
    counts: dict[str, int] = {}
    for p in predictions:
        counts[str(p)] = counts.get(str(p), 0) + 1
    return {"counts": counts}
