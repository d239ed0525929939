"""HTTP routes of the ML service: `/api/v1/ml/...` and the KServe V2 inference protocol
under `/v2/models/...`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import Response

from faas.jobs.routes import accepted
from faas.services.ml_service.data import check_records, parse_upload
from faas.services.ml_service.models import (
    NAME_PATTERN,
    AliasSet,
    BatchPredictRequest,
    DatasetCreate,
    DatasetView,
    DeployRequest,
    DriftView,
    ModelView,
    PredictRequest,
    PredictResponse,
    TrainRequest,
    V2InferRequest,
)
from faas.shared.api import PageDep, caller, respond
from faas.shared.contracts import Page, ServiceResponse
from faas.shared.exceptions import PayloadTooLarge, ValidationFailed

if TYPE_CHECKING:
    from faas.services.ml_service.service import MLService

ModelName = Annotated[str, Path(pattern=NAME_PATTERN)]
V2_TYPES = {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL", "BYTES"}


def _json(payload: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")


DATASET_EXAMPLE = {
    "name": "iris-sample",
    "rows": [
        {"sepal_length": 5.1, "petal_length": 1.4, "species": "setosa"},
        {"sepal_length": 7.0, "petal_length": 4.7, "species": "versicolor"},
        {"sepal_length": 6.3, "petal_length": 6.0, "species": "virginica"},
    ],
}
# The route reads the body itself (it takes either form), so both are declared for the docs.
DATASET_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "description": "CSV with a header row, JSON records or JSON lines",
                        },
                        "name": {
                            "type": "string",
                            "pattern": NAME_PATTERN,
                            "description": "defaults to the file name without its extension",
                        },
                    },
                },
                "example": {"name": "iris-sample"},
            },
            "application/json": {
                "schema": DatasetCreate.model_json_schema(),
                "example": DATASET_EXAMPLE,
            },
        },
    }
}


async def _dataset_body(request: Request, max_bytes: int) -> tuple[str, list[dict[str, Any]], str]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationFailed("send the dataset as the multipart field `file`")
        raw = await upload.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"a dataset is at most {max_bytes} bytes")
        filename = upload.filename or "dataset.csv"
        name = str(form.get("name") or filename.rsplit(".", 1)[0])[:128]
        try:
            # Parsing megabytes of CSV is CPU work: off the event loop.
            rows, fmt = await asyncio.to_thread(parse_upload, raw, filename, upload.content_type)
        except UnicodeDecodeError as exc:
            raise ValidationFailed("the dataset is not UTF-8 text") from exc
        DatasetCreate(name=name, rows=[])  # validates the name
        return name, rows, fmt
    raw = await request.body()
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"a dataset is at most {max_bytes} bytes")
    try:
        body = await asyncio.to_thread(DatasetCreate.model_validate_json, raw)
    except ValidationError as exc:
        raise ValidationFailed(
            "send {name, rows} or a multipart upload",
            details={"errors": exc.errors(include_url=False, include_context=False)},
        ) from exc
    return body.name, await asyncio.to_thread(check_records, body.rows), "json"


def _v2_rows(body: V2InferRequest) -> list[dict[str, Any]]:
    length: int | None = None
    for tensor in body.inputs:
        if tensor.datatype not in V2_TYPES:
            raise ValidationFailed(
                f"input {tensor.name!r} has unknown datatype {tensor.datatype}",
                details={"column": tensor.name, "reason": "datatype"},
            )
        if length is None:
            length = len(tensor.data)
        if len(tensor.data) != length or (tensor.shape and tensor.shape[0] != length):
            raise ValidationFailed(
                f"input {tensor.name!r} has a different length from the others",
                details={"column": tensor.name, "reason": "shape"},
            )
    return [{t.name: t.data[i] for t in body.inputs} for i in range(length or 0)]


def build_router(service: MLService) -> APIRouter:
    router = APIRouter(tags=["ml"])
    prefix = "/api/v1/ml"

    @router.post(
        f"{prefix}/datasets",
        status_code=201,
        response_model=ServiceResponse[DatasetView],
        openapi_extra=DATASET_BODY_DOC,
    )
    async def create_dataset(request: Request) -> Response:
        """A dataset from a multipart upload (`file`: CSV, JSON records or JSON lines; `name`)
        or JSON `{name, rows: [{...}]}`; its schema is inferred."""
        name, rows, fmt = await _dataset_body(request, service.settings.max_upload_bytes)
        view = await service.create_dataset(caller(), name, rows, fmt)
        return respond(view, status_code=201)

    @router.get(f"{prefix}/datasets", response_model=ServiceResponse[Page[DatasetView]])
    async def list_datasets(page: PageDep) -> Response:
        return respond(await service.list_datasets(caller().tenant_id, page.limit, page.offset))

    @router.get(f"{prefix}/datasets/{{dataset_id}}", response_model=ServiceResponse[DatasetView])
    async def get_dataset(dataset_id: str) -> Response:
        return respond(await service.get_dataset(caller().tenant_id, dataset_id))

    @router.post(f"{prefix}/models/train", status_code=202)
    async def train(body: TrainRequest) -> Response:
        """Train as a job: 202 with the job's Location; the job registers a new version."""
        return accepted(await service.submit_training(caller(), body))

    @router.get(f"{prefix}/models", response_model=ServiceResponse[Page[ModelView]])
    async def list_models(page: PageDep) -> Response:
        return respond(await service.list_models(caller().tenant_id, page.limit, page.offset))

    @router.get(f"{prefix}/models/{{name}}", response_model=ServiceResponse[ModelView])
    async def get_model(name: ModelName) -> Response:
        return respond(await service.get_model(caller().tenant_id, name))

    @router.post(f"{prefix}/models/{{name}}/aliases", response_model=ServiceResponse[ModelView])
    async def set_alias(name: ModelName, body: AliasSet) -> Response:
        return respond(await service.set_alias(caller().tenant_id, name, body.alias, body.version))

    @router.post(f"{prefix}/models/{{name}}/deploy", response_model=ServiceResponse[ModelView])
    async def deploy(name: ModelName, body: DeployRequest) -> Response:
        """Point `champion` at a version and load it into the serving cache."""
        return respond(await service.deploy(caller().tenant_id, name, body.version))

    @router.post(
        f"{prefix}/models/{{name}}/predict", response_model=ServiceResponse[PredictResponse]
    )
    async def predict(name: ModelName, body: PredictRequest) -> Response:
        rows = body.rows if body.rows is not None else [body.features or {}]
        result = await service.predict_rows(
            caller().tenant_id, name, rows, version=body.version, alias=body.alias
        )
        return respond(result)

    @router.post(f"{prefix}/models/{{name}}/batch-predict", status_code=202)
    async def batch_predict(name: ModelName, body: BatchPredictRequest) -> Response:
        job = await service.submit_batch(caller(), name, body.dataset_id, body.version, body.alias)
        return accepted(job)

    @router.get(f"{prefix}/models/{{name}}/drift", response_model=ServiceResponse[DriftView])
    async def drift(name: ModelName) -> Response:
        """Per-feature PSI and KS of recent prediction inputs against the training profile."""
        return respond(await service.drift(caller().tenant_id, name))

    # -- KServe V2 (open inference protocol) --------------------------------------------------

    @router.get("/v2/models/{name}")
    async def v2_metadata(name: ModelName) -> Response:
        tenant = caller().tenant_id
        resolved = await service.resolve(tenant, name)
        view = await service.get_model(tenant, name)
        row = resolved.row
        return _json(
            {
                "name": name,
                "versions": [str(v.version) for v in view.versions],
                "platform": "scikit-learn",
                "inputs": [
                    {
                        "name": c["name"],
                        "datatype": "FP64" if c["kind"] == "numeric" else "BYTES",
                        "shape": [-1],
                    }
                    for c in row.input_schema
                ],
                "outputs": [{"name": "predict", "datatype": row.output["datatype"], "shape": [-1]}],
            }
        )

    @router.get("/v2/models/{name}/ready")
    async def v2_ready(name: ModelName) -> Response:
        resolved, ready = await service.ready(caller().tenant_id, name)
        return _json(
            {"name": name, "version": str(resolved.version), "ready": ready},
            status_code=200 if ready else 503,
        )

    @router.post("/v2/models/{name}/infer")
    async def v2_infer(name: ModelName, body: V2InferRequest) -> Response:
        result = await service.predict_rows(caller().tenant_id, name, _v2_rows(body))
        datatype = (await service.resolve(caller().tenant_id, name)).row.output["datatype"]
        return _json(
            {
                "model_name": name,
                "model_version": str(result.version),
                "id": body.id,
                "outputs": [
                    {
                        "name": "predict",
                        "shape": [len(result.predictions)],
                        "datatype": datatype,
                        "data": result.predictions,
                    }
                ],
            }
        )

    return router
