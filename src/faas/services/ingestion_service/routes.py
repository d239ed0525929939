"""HTTP routes of the ingestion service: accepting files and URLs, and reading the records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, File, Form, UploadFile
from starlette.responses import Response

from faas.services.ingestion_service.intake import Upload
from faas.services.ingestion_service.models import FilesAccepted, FileView, UrlIngest
from faas.services.rag_service.models import NAME_PATTERN
from faas.shared.api import PageDep, caller, respond
from faas.shared.contracts import Page, ServiceResponse
from faas.shared.exceptions import ValidationFailed

if TYPE_CHECKING:
    from faas.services.ingestion_service.service import IngestionService

MAX_FILES = 10


def _metadata(raw: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("metadata must be a JSON object") from exc
    if not isinstance(value, dict):
        raise ValidationFailed("metadata must be a JSON object")
    return value


def intake_routes(service: IngestionService) -> APIRouter:
    router = APIRouter()

    @router.post("/upload", status_code=202, response_model=ServiceResponse[FilesAccepted])
    async def upload(
        files: Annotated[list[UploadFile], File(description="one or more files")],
        collection: Annotated[str, Form(pattern=NAME_PATTERN)] = "default",
        metadata: Annotated[str, Form(description="a JSON object")] = "{}",
        auto_ingest: Annotated[bool, Form()] = True,
        redact_pii: Annotated[bool, Form()] = False,
    ) -> Response:
        """Accept files (PDF, DOCX, HTML, Markdown, text, CSV, JSON) as jobs: 202 with one job
        per file, each to be followed at its `location`."""
        if not files or len(files) > MAX_FILES:
            raise ValidationFailed(
                f"send between 1 and {MAX_FILES} files",
                details={"field": "files", "count": len(files), "max_files": MAX_FILES},
            )
        uploads = [Upload(f.filename or "upload", f.content_type, f.file) for f in files]
        accepted = await service.upload(
            caller(),
            uploads,
            collection=collection,
            metadata=_metadata(metadata),
            auto_ingest=auto_ingest,
            redact_pii=redact_pii,
        )
        return respond(
            FilesAccepted(files=accepted),
            status_code=202,
            headers={"Location": accepted[0].location},
        )

    @router.post("/url", status_code=202, response_model=ServiceResponse[FilesAccepted])
    async def ingest_url(body: UrlIngest) -> Response:
        """Fetch an http(s) URL as a job (private, loopback and link-local addresses are refused
        unless allow-listed in FAAS_INGESTION_URL_ALLOWLIST)."""
        accepted = await service.ingest_url(caller(), body)
        return respond(
            FilesAccepted(files=[accepted]),
            status_code=202,
            headers={"Location": accepted.location},
        )

    return router


def file_routes(service: IngestionService) -> APIRouter:
    router = APIRouter()

    @router.get("/files", response_model=ServiceResponse[Page[FileView]])
    async def list_files(page: PageDep) -> Response:
        return respond(await service.list_files(caller().tenant_id, page.limit, page.offset))

    @router.get("/files/{file_id}", response_model=ServiceResponse[FileView])
    async def get_file(file_id: str) -> Response:
        return respond(await service.get_file(caller().tenant_id, file_id))

    return router


def build_router(service: IngestionService) -> APIRouter:
    router = APIRouter(prefix="/api/v1/ingestion", tags=["ingestion"])
    router.include_router(intake_routes(service))
    router.include_router(file_routes(service))
    return router
