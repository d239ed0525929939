"""HTTP routes of the ML service: `/api/v1/ml/...` and the KServe V2 inference protocol under
`/v2/models/...`. Each handler parses, calls one use case and answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from faas.jobs.routes import accepted
from faas.services.ml_service.models import (
    NAME_PATTERN,
    AliasSet,
    BatchPredictRequest,
    DatasetView,
    DeployRequest,
    DriftView,
    ModelView,
    PredictRequest,
    PredictResponse,
    TrainRequest,
    V2InferRequest,
)
from faas.services.ml_service.uploads import DATASET_BODY_DOC, read_dataset
from faas.shared.api import PageDep, caller, respond
from faas.shared.contracts import Page, ServiceResponse

if TYPE_CHECKING:
    from faas.services.ml_service.service import MLService

PREFIX = "/api/v1/ml"
ModelName = Annotated[str, Path(pattern=NAME_PATTERN)]


def _json(payload: Any, status_code: int = 200) -> Response:
    """KServe V2 answers are the protocol's own JSON, not wrapped in `ServiceResponse`."""
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")


def _dataset_routes(service: MLService) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/datasets", tags=["ml"])

    @router.post(
        "",
        status_code=201,
        response_model=ServiceResponse[DatasetView],
        openapi_extra=DATASET_BODY_DOC,
    )
    async def create_dataset(request: Request) -> Response:
        """A dataset from a multipart upload (`file`: CSV, JSON records or JSON lines; `name`)
        or JSON `{name, rows: [{...}]}`; its schema is inferred."""
        name, rows, fmt = await read_dataset(request, service.max_upload_bytes)
        return respond(await service.datasets.create(caller(), name, rows, fmt), status_code=201)

    @router.get("", response_model=ServiceResponse[Page[DatasetView]])
    async def list_datasets(page: PageDep) -> Response:
        return respond(await service.datasets.page(caller().tenant_id, page.limit, page.offset))

    @router.get("/{dataset_id}", response_model=ServiceResponse[DatasetView])
    async def get_dataset(dataset_id: str) -> Response:
        return respond(await service.datasets.get(caller().tenant_id, dataset_id))

    return router


def _registry_routes(service: MLService) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/models", tags=["ml"])

    @router.post("/train", status_code=202)
    async def train(body: TrainRequest) -> Response:
        """Train as a job: 202 with the job's Location; the job registers a new version."""
        return accepted(await service.training.submit(caller(), body))

    @router.get("", response_model=ServiceResponse[Page[ModelView]])
    async def list_models(page: PageDep) -> Response:
        return respond(await service.registry.page(caller().tenant_id, page.limit, page.offset))

    @router.get("/{name}", response_model=ServiceResponse[ModelView])
    async def get_model(name: ModelName) -> Response:
        return respond(await service.registry.get(caller().tenant_id, name))

    @router.post("/{name}/aliases", response_model=ServiceResponse[ModelView])
    async def set_alias(name: ModelName, body: AliasSet) -> Response:
        tenant = caller().tenant_id
        return respond(await service.registry.set_alias(tenant, name, body.alias, body.version))

    @router.post("/{name}/deploy", response_model=ServiceResponse[ModelView])
    async def deploy(name: ModelName, body: DeployRequest) -> Response:
        """Point `champion` at a version and load it into the serving cache."""
        return respond(await service.server.deploy(caller().tenant_id, name, body.version))

    return router


def _prediction_routes(service: MLService) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/models", tags=["ml"])

    @router.post("/{name}/predict", response_model=ServiceResponse[PredictResponse])
    async def predict(name: ModelName, body: PredictRequest) -> Response:
        rows = body.rows if body.rows is not None else [body.features or {}]
        result = await service.server.predict(
            caller().tenant_id, name, rows, version=body.version, alias=body.alias
        )
        return respond(result)

    @router.post("/{name}/batch-predict", status_code=202)
    async def batch_predict(name: ModelName, body: BatchPredictRequest) -> Response:
        job = await service.batch.submit(caller(), name, body.dataset_id, body.version, body.alias)
        return accepted(job)

    @router.get("/{name}/drift", response_model=ServiceResponse[DriftView])
    async def drift(name: ModelName) -> Response:
        """Per-feature PSI and KS of recent prediction inputs against the training profile."""
        return respond(await service.monitor.drift(caller().tenant_id, name))

    return router


def _kserve_routes(service: MLService) -> APIRouter:
    """KServe V2 (the open inference protocol)."""
    router = APIRouter(prefix="/v2/models", tags=["ml"])

    @router.get("/{name}")
    async def v2_metadata(name: ModelName) -> Response:
        return _json(await service.kserve.metadata(caller().tenant_id, name))

    @router.get("/{name}/ready")
    async def v2_ready(name: ModelName) -> Response:
        answer, ready = await service.kserve.ready(caller().tenant_id, name)
        return _json(answer, status_code=200 if ready else 503)

    @router.post("/{name}/infer")
    async def v2_infer(name: ModelName, body: V2InferRequest) -> Response:
        return _json(await service.kserve.infer(caller().tenant_id, name, body))

    return router


def build_router(service: MLService) -> APIRouter:
    router = APIRouter()
    router.include_router(_dataset_routes(service))
    router.include_router(_registry_routes(service))
    router.include_router(_prediction_routes(service))
    router.include_router(_kserve_routes(service))
    return router
