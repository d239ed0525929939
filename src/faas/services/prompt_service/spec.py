"""The prompt service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec

if TYPE_CHECKING:
    from faas.services.prompt_service.service import PromptService


def build(platform: Platform) -> PromptService:
    from faas.services.prompt_service.rendering import TemplateRenderer
    from faas.services.prompt_service.service import PromptService

    return PromptService(
        db=platform.db,
        kv=platform.kv,
        clients=platform.clients,
        renderer=TemplateRenderer.from_settings(platform.settings),
    )


def routes(service: PromptService) -> APIRouter:
    from faas.services.prompt_service.routes import build_router

    return build_router(service)


SPEC: ServiceSpec[PromptService] = ServiceSpec(
    name="prompt",
    port=8005,
    summary="Prompt templates: versions, labels, rendering, context windows, evaluations",
    build=build,
    routes=routes,
    calls=("gateway",),
    uses=("database", "kv"),
)
