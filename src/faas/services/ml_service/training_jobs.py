"""Training as a job: the request is checked against the dataset when submitted (so mistakes
are a 422, not a failed job); the job trains in a worker thread, saves the artifact and
registers the next version with its lineage."""

from __future__ import annotations

import asyncio
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from faas import __version__
from faas.jobs import JobContext, JobQueue, JobView, PermanentJobError
from faas.services.ml_service import algorithms, artifacts, training
from faas.services.ml_service.datasets import Datasets
from faas.services.ml_service.models import TrainRequest
from faas.services.ml_service.registry import ModelRegistry, NewVersion
from faas.services.ml_service.tables import DatasetRow
from faas.shared.context import Identity, new_id
from faas.shared.exceptions import NotFound, ValidationFailed

TRAIN_JOB = "ml.train"


class TrainingJobs:
    def __init__(
        self, jobs: JobQueue, datasets: Datasets, registry: ModelRegistry, root: Path
    ) -> None:
        self.jobs = jobs
        self.datasets = datasets
        self.registry = registry
        self.root = root

    async def submit(self, identity: Identity, body: TrainRequest) -> JobView:
        params = algorithms.validate_request(body.task, body.algorithm, body.hyperparameters)
        dataset = await self.datasets.record(identity.tenant_id, body.dataset_id)
        _check_columns(body, dataset)
        task = await self.registry.task_of(identity.tenant_id, body.name)
        if task is not None and task != body.task:
            raise ValidationFailed(
                f"model {body.name!r} is a {task} model", details={"field": "task"}
            )
        payload = body.model_dump(mode="json")
        payload["hyperparameters"] = params
        return await self.jobs.submit(identity, TRAIN_JOB, payload)

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        body = TrainRequest.model_validate(ctx.payload)
        tenant = ctx.tenant_id
        await ctx.progress(0.05, "loading")
        try:
            dataset, rows = await self.datasets.rows(tenant, body.dataset_id)
        except NotFound as exc:
            raise PermanentJobError(exc.message) from exc
        await ctx.progress(0.2, "training")
        try:
            trained = await asyncio.to_thread(
                training.train,
                rows,
                dataset.schema,
                task=body.task,
                algorithm=body.algorithm,
                hyperparameters=body.hyperparameters,
                target=body.target,
                features=body.features,
                validation_split=body.validation_split,
                cv_folds=body.cv_folds,
            )
        except ValueError as exc:
            raise PermanentJobError(str(exc)) from exc
        await ctx.progress(0.8, "registering")
        version_id = new_id()
        path = artifacts.artifact_path(self.root, tenant, version_id)
        sha, types = await asyncio.to_thread(artifacts.save, trained.pipeline, path)
        new = _new_version(ctx, body, dataset, trained, version_id, sha, types)
        try:
            version = await self.registry.add_version(tenant, body.name, new)
        except BaseException:
            path.unlink(missing_ok=True)  # a retried job saves a new artifact
            raise
        return {"model": body.name, "version": version, "metrics": trained.metrics}


def _check_columns(body: TrainRequest, dataset: DatasetRow) -> None:
    columns = {c["name"] for c in dataset.schema}
    if body.target and body.target not in columns:
        raise ValidationFailed(
            f"unknown target column {body.target!r}",
            details={"column": body.target, "field": "target"},
        )
    for name in body.features or []:
        if name not in columns:
            raise ValidationFailed(
                f"unknown feature column {name!r}", details={"column": name, "field": "features"}
            )
    if body.task in ("classification", "regression", "forecasting") and not body.target:
        raise ValidationFailed(f"a {body.task} model needs a target", details={"field": "target"})


def _new_version(
    ctx: JobContext,
    body: TrainRequest,
    dataset: DatasetRow,
    trained: training.Trained,
    version_id: str,
    sha: str,
    types: list[str],
) -> NewVersion:
    """The version's registry record, with what it was trained from and on."""
    lineage = {
        "dataset_id": dataset.id,
        "dataset_sha256": dataset.sha256,
        "dataset_rows": dataset.row_count,
        "target": body.target,
        "faas_version": __version__,
        "sklearn_version": dist_version("scikit-learn"),
    }
    params = {
        **trained.params,
        "validation_split": body.validation_split,
        "cv_folds": body.cv_folds,
        "features": [c["name"] for c in trained.input_schema],
    }
    return NewVersion(
        id=version_id,
        task=body.task,
        algorithm=body.algorithm,
        params=params,
        metrics=trained.metrics,
        input_schema=trained.input_schema,
        output=trained.output,
        profile=trained.profile,
        lineage=lineage,
        artifact_sha256=sha,
        artifact_types=types,
        job_id=ctx.job_id,
    )
