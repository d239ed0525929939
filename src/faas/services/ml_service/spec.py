"""The ml service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec

if TYPE_CHECKING:
    from faas.services.ml_service.service import MLService


def build(platform: Platform) -> MLService:
    from faas.services.ml_service.service import MLService

    return MLService(platform.settings, db=platform.db, jobs=platform.jobs, meter=platform.meter)


def routes(service: MLService) -> APIRouter:
    from faas.services.ml_service.routes import build_router

    return build_router(service)


SPEC: ServiceSpec[MLService] = ServiceSpec(
    name="ml",
    port=8006,
    summary="Classical ML: datasets, training jobs, a model registry, predictions",
    build=build,
    routes=routes,
    uses=("database", "jobs", "cpu"),
    job_kinds=("ml.train", "ml.batch_predict"),
)
