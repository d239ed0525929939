"""Reading a dataset from an HTTP request: a multipart upload (CSV, JSON records or JSON
lines) or JSON `{name, rows}`, within the upload limit, parsed off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from faas.services.ml_service.data import check_records, parse_upload
from faas.services.ml_service.models import NAME_PATTERN, DatasetCreate
from faas.shared.exceptions import PayloadTooLarge, ValidationFailed

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


Dataset = tuple[str, list[dict[str, Any]], str]


async def read_dataset(request: Request, max_bytes: int) -> Dataset:
    """The dataset's name, rows and format ("csv", "json" or "jsonl")."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _from_multipart(request, max_bytes)
    return await _from_json(request, max_bytes)


async def _from_multipart(request: Request, max_bytes: int) -> Dataset:
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


async def _from_json(request: Request, max_bytes: int) -> Dataset:
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
