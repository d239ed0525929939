"""The llmops service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec

if TYPE_CHECKING:
    from faas.services.llmops_service.service import LlmopsService


def build(platform: Platform) -> LlmopsService:
    from faas.services.llmops_service.service import LlmopsService

    return LlmopsService(
        db=platform.db,
        bus=platform.bus,
        events=platform.events,
        retention_days=platform.settings.llmops_retention_days,
    )


def routes(service: LlmopsService) -> APIRouter:
    from faas.services.llmops_service.alerts_routes import alerts_router
    from faas.services.llmops_service.routes import build_router
    from faas.services.llmops_service.traces_routes import traces_router

    router = build_router(service)
    router.include_router(alerts_router(service))
    router.include_router(traces_router(service))
    return router


SPEC: ServiceSpec[LlmopsService] = ServiceSpec(
    name="llmops",
    port=8008,
    summary="LLM operations: usage and cost from gateway events, traces, a dashboard",
    build=build,
    routes=routes,
    uses=("database", "bus"),
    public_paths=frozenset({"/llmops/dashboard", "/llmops/traces"}),
)
