"""ML use cases: datasets, training and batch-prediction jobs, the registry (versions and
aliases), realtime serving with an LRU cache of loaded models, and drift monitoring."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter
from opentelemetry import metrics
from opentelemetry.util.types import AttributeValue
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from faas import __version__
from faas.jobs import JobContext, JobQueue, JobView, PermanentJobError
from faas.services.ml_service import artifacts, data, training
from faas.services.ml_service.models import (
    DatasetView,
    DriftView,
    ModelView,
    PredictResponse,
    TrainRequest,
    VersionView,
)
from faas.services.ml_service.tables import DatasetRow, ModelAliasRow, ModelRow, ModelVersionRow
from faas.shared.config import Settings
from faas.shared.context import Identity, new_id
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import FaaSError, NotFound, ValidationFailed

TRAIN_JOB = "ml.train"
BATCH_JOB = "ml.batch_predict"
CHAMPION = "champion"
CACHE_SIZE = 16
WINDOW = 1000
RESOLVE_TTL_S = 5.0
INLINE_ROWS = 64
MIN_DRIFT_WINDOW = 20
REGISTER_ATTEMPTS = 5


def _now() -> datetime:
    return datetime.now(UTC)


class Resolved:
    """A servable model version: its registry facts and where its artifact is."""

    __slots__ = ("model", "model_id", "path", "row", "version")

    def __init__(self, model: str, row: ModelVersionRow, path: Path) -> None:
        self.model = model
        self.model_id = row.model_id
        self.version = row.version
        self.row = row
        self.path = path


class MLService:
    name = "ml"

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        jobs: JobQueue,
        meter: metrics.Meter | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.root = settings.data_dir / "ml"
        self._models: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
        self._resolved: dict[tuple[str, str, str], tuple[float, Resolved]] = {}
        self._windows: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        jobs.registry.register(TRAIN_JOB, self.run_training)
        jobs.registry.register(BATCH_JOB, self.run_batch_predict)
        meter = meter or metrics.get_meter("faas.ml")
        self._predicted = meter.create_counter(
            "faas.ml.predictions", unit="{row}", description="Rows predicted, realtime and batch"
        )
        self._predict_ms = meter.create_histogram(
            "faas.ml.predict.duration",
            unit="ms",
            description="Realtime prediction time: model resolution, validation, predict",
        )

    def router(self) -> APIRouter:
        from faas.services.ml_service.routes import build_router

        return build_router(self)

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        self._models.clear()

    # -- datasets ----------------------------------------------------------------------------

    def _dataset_path(self, tenant: str, dataset_id: str) -> Path:
        return self.root / tenant / "datasets" / f"{dataset_id}.jsonl"

    async def create_dataset(
        self, identity: Identity, name: str, rows: list[dict[str, Any]], fmt: str
    ) -> DatasetView:
        schema = await asyncio.to_thread(data.infer_schema, rows)
        dataset_id = new_id()
        path = self._dataset_path(identity.tenant_id, dataset_id)
        digest = await asyncio.to_thread(_write_rows, path, rows)
        async with self.db.session() as session:
            row = TenantRepository(session, DatasetRow, identity.tenant_id).add(
                id=dataset_id,
                name=name,
                format=fmt,
                row_count=len(rows),
                column_count=len(schema),
                schema=schema,
                sha256=digest,
                created_by=identity.user_id,
                created_at=_now(),
            )
            return _dataset_view(row)

    async def _dataset(self, tenant: str, dataset_id: str) -> DatasetRow:
        async with self.db.session() as session:
            row = await TenantRepository(session, DatasetRow, tenant).get(dataset_id)
            if row is None:
                raise NotFound(f"dataset {dataset_id} not found")
            return row

    async def get_dataset(self, tenant: str, dataset_id: str) -> DatasetView:
        return _dataset_view(await self._dataset(tenant, dataset_id))

    async def list_datasets(self, tenant: str, limit: int, offset: int) -> Page[DatasetView]:
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, DatasetRow, tenant).page(
                order_by=DatasetRow.created_at.desc(), limit=limit, offset=offset
            )
            items = [_dataset_view(r) for r in rows]
        return Page[DatasetView](items=items, total=total, limit=limit, offset=offset)

    async def _rows(self, tenant: str, dataset_id: str) -> tuple[DatasetRow, list[dict[str, Any]]]:
        dataset = await self._dataset(tenant, dataset_id)
        rows = await asyncio.to_thread(_read_rows, self._dataset_path(tenant, dataset_id))
        return dataset, rows

    # -- training ----------------------------------------------------------------------------

    async def submit_training(self, identity: Identity, body: TrainRequest) -> JobView:
        params = training.validate_request(body.task, body.algorithm, body.hyperparameters)
        dataset = await self._dataset(identity.tenant_id, body.dataset_id)
        columns = {c["name"] for c in dataset.schema}
        for name in [body.target] if body.target else []:
            if name not in columns:
                raise ValidationFailed(
                    f"unknown target column {name!r}", details={"column": name, "field": "target"}
                )
        for name in body.features or []:
            if name not in columns:
                raise ValidationFailed(
                    f"unknown feature column {name!r}",
                    details={"column": name, "field": "features"},
                )
        if body.task in ("classification", "regression", "forecasting") and not body.target:
            raise ValidationFailed(
                f"a {body.task} model needs a target", details={"field": "target"}
            )
        async with self.db.session() as session:
            existing = await self._model(session, identity.tenant_id, body.name)
            if existing is not None and existing.task != body.task:
                raise ValidationFailed(
                    f"model {body.name!r} is a {existing.task} model",
                    details={"field": "task"},
                )
        payload = body.model_dump(mode="json")
        payload["hyperparameters"] = params
        return await self.jobs.submit(identity, TRAIN_JOB, payload)

    async def run_training(self, ctx: JobContext) -> dict[str, Any]:
        body = TrainRequest.model_validate(ctx.payload)
        tenant = ctx.tenant_id
        await ctx.progress(0.05, "loading")
        try:
            dataset, rows = await self._rows(tenant, body.dataset_id)
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
        path = self.root / tenant / "models" / f"{version_id}.skops"
        sha, types = await asyncio.to_thread(artifacts.save, trained.pipeline, path)
        try:
            version = await self._register(ctx, body, dataset, trained, version_id, sha, types)
        except BaseException:
            path.unlink(missing_ok=True)  # a retried job saves a new artifact
            raise
        self._forget(tenant, body.name)
        return {"model": body.name, "version": version, "metrics": trained.metrics}

    async def _register(
        self,
        ctx: JobContext,
        body: TrainRequest,
        dataset: DatasetRow,
        trained: training.Trained,
        version_id: str,
        sha: str,
        types: list[str],
    ) -> int:
        """Add the version (and the model, the first time). Jobs training the same model at
        once race for the next version number; the unique constraints settle it and the loser
        takes the next number instead of training again."""
        from importlib.metadata import version as dist_version

        tenant = ctx.tenant_id
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
        for attempt in range(1, REGISTER_ATTEMPTS + 1):
            try:
                async with self.db.session() as session:
                    model = await self._model(session, tenant, body.name)
                    now = _now()
                    if model is None:
                        model = TenantRepository(session, ModelRow, tenant).add(
                            id=new_id(),
                            name=body.name,
                            task=body.task,
                            description="",
                            created_at=now,
                            updated_at=now,
                        )
                        await session.flush()
                    model.updated_at = now
                    latest = await session.scalar(
                        select(func.max(ModelVersionRow.version)).where(
                            ModelVersionRow.model_id == model.id
                        )
                    )
                    version = int(latest or 0) + 1
                    TenantRepository(session, ModelVersionRow, tenant).add(
                        id=version_id,
                        model_id=model.id,
                        version=version,
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
                        created_at=now,
                    )
                    await session.flush()
                return version
            except IntegrityError:
                if attempt == REGISTER_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- registry ----------------------------------------------------------------------------

    async def _model(self, session: Any, tenant: str, name: str) -> ModelRow | None:
        result = await session.execute(
            TenantRepository(session, ModelRow, tenant).select(ModelRow.name == name)
        )
        row: ModelRow | None = result.scalar_one_or_none()
        return row

    async def _require_model(self, session: Any, tenant: str, name: str) -> ModelRow:
        model = await self._model(session, tenant, name)
        if model is None:
            raise NotFound(f"model {name} not found")
        return model

    async def list_models(self, tenant: str, limit: int, offset: int) -> Page[ModelView]:
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, ModelRow, tenant).page(
                order_by=ModelRow.name, limit=limit, offset=offset
            )
            items = [await self._model_view(session, r) for r in rows]
        return Page[ModelView](items=items, total=total, limit=limit, offset=offset)

    async def get_model(self, tenant: str, name: str) -> ModelView:
        async with self.db.session() as session:
            return await self._model_view(session, await self._require_model(session, tenant, name))

    async def _model_view(self, session: Any, model: ModelRow) -> ModelView:
        versions = (
            (
                await session.execute(
                    select(ModelVersionRow)
                    .where(ModelVersionRow.model_id == model.id)
                    .order_by(ModelVersionRow.version.desc())
                )
            )
            .scalars()
            .all()
        )
        aliases = (
            (await session.execute(select(ModelAliasRow).where(ModelAliasRow.model_id == model.id)))
            .scalars()
            .all()
        )
        by_version: dict[int, list[str]] = {}
        for alias in aliases:
            by_version.setdefault(alias.version, []).append(alias.alias)
        return ModelView(
            name=model.name,
            task=model.task,
            aliases={a.alias: a.version for a in aliases},
            latest_version=versions[0].version if versions else None,
            versions=[_version_view(v, sorted(by_version.get(v.version, []))) for v in versions],
            created_at=model.created_at,
            updated_at=model.updated_at,
        )

    async def set_alias(self, tenant: str, name: str, alias: str, version: int) -> ModelView:
        async with self.db.session() as session:
            model = await self._require_model(session, tenant, name)
            await self._version_row(session, model, version)
            current = (
                await session.execute(
                    select(ModelAliasRow).where(
                        ModelAliasRow.model_id == model.id, ModelAliasRow.alias == alias
                    )
                )
            ).scalar_one_or_none()
            if current is None:
                TenantRepository(session, ModelAliasRow, tenant).add(
                    id=new_id(),
                    model_id=model.id,
                    alias=alias,
                    version=version,
                    updated_at=_now(),
                )
            else:
                current.version = version
                current.updated_at = _now()
            model.updated_at = _now()
            await session.flush()
            view = await self._model_view(session, model)
        self._forget(tenant, name)
        return view

    async def deploy(self, tenant: str, name: str, version: int) -> ModelView:
        view = await self.set_alias(tenant, name, CHAMPION, version)
        resolved = await self.resolve(tenant, name, version=version)
        await self._load(tenant, resolved)
        return view

    async def _version_row(self, session: Any, model: ModelRow, version: int) -> ModelVersionRow:
        row: ModelVersionRow | None = (
            await session.execute(
                select(ModelVersionRow).where(
                    ModelVersionRow.model_id == model.id, ModelVersionRow.version == version
                )
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"model {model.name} has no version {version}")
        return row

    # -- serving -----------------------------------------------------------------------------

    def _forget(self, tenant: str, name: str) -> None:
        for key in [k for k in self._resolved if k[0] == tenant and k[1] == name]:
            del self._resolved[key]

    async def resolve(
        self, tenant: str, name: str, *, version: int | None = None, alias: str | None = None
    ) -> Resolved:
        """The version asked for: explicit, by alias, else `champion`, else the latest."""
        key = (tenant, name, f"v{version}" if version else f"a{alias or ''}")
        cached = self._resolved.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < RESOLVE_TTL_S:
            return cached[1]
        async with self.db.session() as session:
            model = await self._require_model(session, tenant, name)
            if version is None:
                wanted = alias or CHAMPION
                row = (
                    await session.execute(
                        select(ModelAliasRow).where(
                            ModelAliasRow.model_id == model.id, ModelAliasRow.alias == wanted
                        )
                    )
                ).scalar_one_or_none()
                if row is not None:
                    version = row.version
                elif alias is not None:
                    raise NotFound(f"model {name} has no alias {alias!r}")
                else:
                    version = await session.scalar(
                        select(func.max(ModelVersionRow.version)).where(
                            ModelVersionRow.model_id == model.id
                        )
                    )
                    if version is None:
                        raise NotFound(f"model {name} has no versions")
            found = await self._version_row(session, model, int(version))
        resolved = Resolved(name, found, self.root / tenant / "models" / f"{found.id}.skops")
        self._resolved[key] = (now, resolved)
        return resolved

    async def _load(self, tenant: str, resolved: Resolved) -> Any:
        key = (tenant, resolved.model_id, resolved.version)
        pipeline = self._models.get(key)
        if pipeline is not None:
            self._models.move_to_end(key)
            return pipeline
        row = resolved.row
        pipeline = await asyncio.to_thread(
            artifacts.load, resolved.path, row.artifact_sha256, list(row.artifact_types)
        )
        self._models[key] = pipeline
        while len(self._models) > CACHE_SIZE:
            self._models.popitem(last=False)
        return pipeline

    async def predict_rows(
        self,
        tenant: str,
        name: str,
        rows: Sequence[Any],
        *,
        version: int | None = None,
        alias: str | None = None,
    ) -> PredictResponse:
        started = time.perf_counter()
        resolved = await self.resolve(tenant, name, version=version, alias=alias)
        row = resolved.row
        checked = data.validate_inputs(rows, row.input_schema)
        pipeline = await self._load(tenant, resolved)
        if len(checked) <= INLINE_ROWS:
            predictions = training.predict(pipeline, checked, row.input_schema, row.output)
        else:
            predictions = await asyncio.to_thread(
                training.predict, pipeline, checked, row.input_schema, row.output
            )
        self._observe(tenant, name, checked)
        attrs: dict[str, AttributeValue] = {
            "faas.tenant": tenant,
            "faas.ml.model": name,
            "faas.ml.version": resolved.version,
        }
        self._predict_ms.record((time.perf_counter() - started) * 1000, attrs)
        self._predicted.add(len(predictions), attrs | {"faas.ml.mode": "realtime"})
        return PredictResponse(model=name, version=resolved.version, predictions=predictions)

    def _observe(self, tenant: str, name: str, rows: Sequence[dict[str, Any]]) -> None:
        window = self._windows.get((tenant, name))
        if window is None:
            window = self._windows[(tenant, name)] = deque(maxlen=WINDOW)
        window.extend(rows[-WINDOW:])

    async def ready(self, tenant: str, name: str) -> tuple[Resolved, bool]:
        resolved = await self.resolve(tenant, name)
        try:
            await self._load(tenant, resolved)
        except FaaSError:
            return resolved, False
        return resolved, True

    async def drift(self, tenant: str, name: str) -> DriftView:
        resolved = await self.resolve(tenant, name)
        window = list(self._windows.get((tenant, name), ()))
        features: dict[str, dict[str, Any]] = {}
        if window:
            features = await asyncio.to_thread(
                data.drift, resolved.row.profile, resolved.row.input_schema, window
            )
        flagged = len(window) >= MIN_DRIFT_WINDOW and any(f["drift"] for f in features.values())
        return DriftView(
            model=name,
            version=resolved.version,
            window_size=len(window),
            drift=flagged,
            features=features,
        )

    # -- batch prediction --------------------------------------------------------------------

    async def submit_batch(
        self,
        identity: Identity,
        name: str,
        dataset_id: str,
        version: int | None,
        alias: str | None,
    ) -> JobView:
        resolved = await self.resolve(identity.tenant_id, name, version=version, alias=alias)
        await self._dataset(identity.tenant_id, dataset_id)
        payload = {"model": name, "version": resolved.version, "dataset_id": dataset_id}
        return await self.jobs.submit(identity, BATCH_JOB, payload)

    async def run_batch_predict(self, ctx: JobContext) -> dict[str, Any]:
        tenant = ctx.tenant_id
        name = str(ctx.payload["model"])
        try:
            resolved = await self.resolve(tenant, name, version=int(ctx.payload["version"]))
            _, rows = await self._rows(tenant, str(ctx.payload["dataset_id"]))
            row = resolved.row
            checked = data.validate_inputs(rows, row.input_schema)
            pipeline = await self._load(tenant, resolved)
        except FaaSError as exc:
            if exc.status_code < 500:
                raise PermanentJobError(exc.message) from exc
            raise
        await ctx.progress(0.3, "predicting")
        predictions = await asyncio.to_thread(
            training.predict, pipeline, checked, row.input_schema, row.output
        )
        self._predicted.add(
            len(predictions),
            {
                "faas.tenant": tenant,
                "faas.ml.model": name,
                "faas.ml.version": resolved.version,
                "faas.ml.mode": "batch",
            },
        )
        path = self.root / tenant / "predictions" / f"{ctx.job_id}.jsonl"
        await asyncio.to_thread(
            _write_rows, path, [{"row": i, "prediction": p} for i, p in enumerate(predictions)]
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


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = b"\n".join(orjson.dumps(r) for r in rows) + b"\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return hashlib.sha256(blob).hexdigest()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound("the dataset's rows are missing from the data dir") from exc
    return [orjson.loads(line) for line in blob.splitlines() if line]


def _dataset_view(row: DatasetRow) -> DatasetView:
    return DatasetView(
        id=row.id,
        name=row.name,
        format=row.format,
        row_count=row.row_count,
        column_count=row.column_count,
        columns=row.schema,
        sha256=row.sha256,
        created_at=row.created_at,
    )


def _version_view(row: ModelVersionRow, aliases: list[str]) -> VersionView:
    return VersionView(
        version=row.version,
        task=row.task,
        algorithm=row.algorithm,
        params=row.params,
        metrics=row.metrics,
        input_schema=row.input_schema,
        output=row.output,
        lineage=row.lineage,
        artifact_sha256=row.artifact_sha256,
        aliases=aliases,
        job_id=row.job_id,
        created_at=row.created_at,
    )
