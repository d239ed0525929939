"""The ingestion service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec
from faas.shared.config import Settings

if TYPE_CHECKING:
    from faas.services.ingestion_service.service import IngestionService


def build(platform: Platform) -> IngestionService:
    from faas.services.ingestion_service.service import IngestionService

    return IngestionService(platform.settings, db=platform.db, jobs=platform.jobs, runtime=platform)


def body_limits(settings: Settings) -> dict[str, int]:
    """An upload carries up to MAX_FILES files of FAAS_MAX_UPLOAD_BYTES each."""
    from faas.services.ingestion_service.routes import MAX_FILES

    return {"/api/v1/ingestion/upload": settings.max_upload_bytes * MAX_FILES}


def routes(service: IngestionService) -> APIRouter:
    from faas.services.ingestion_service.routes import build_router

    return build_router(service)


SPEC: ServiceSpec[IngestionService] = ServiceSpec(
    name="ingestion",
    port=8007,
    summary="Data ingestion: uploads and URLs parsed, cleaned and indexed into RAG as jobs",
    build=build,
    routes=routes,
    calls=("rag",),
    uses=("database", "jobs", "cpu"),
    job_kinds=("ingestion.process_file", "ingestion.process_files"),
    body_limits=body_limits,
)
