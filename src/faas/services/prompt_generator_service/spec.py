"""The prompt_generator service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec

if TYPE_CHECKING:
    from faas.services.prompt_generator_service.service import PromptGeneratorService


def build(platform: Platform) -> PromptGeneratorService:
    from faas.services.prompt_generator_service.service import PromptGeneratorService

    return PromptGeneratorService(db=platform.db, clients=platform.clients)


def routes(service: PromptGeneratorService) -> APIRouter:
    from faas.services.prompt_generator_service.routes import build_router

    return build_router(service)


SPEC: ServiceSpec[PromptGeneratorService] = ServiceSpec(
    name="prompt_generator",
    port=8009,
    summary="Generates prompts, agents and tools from a description",
    build=build,
    routes=routes,
    calls=("gateway", "agent"),
    uses=("database",),
)
