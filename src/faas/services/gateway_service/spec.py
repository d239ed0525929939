"""The gateway service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec
from faas.services.gateway_service.anthropic_errors import (
    ANTHROPIC_PREFIX,
    anthropic_error_renderer,
)
from faas.services.gateway_service.models_in_use import models_in_use
from faas.services.gateway_service.openai_errors import OPENAI_PREFIX, openai_error_renderer

if TYPE_CHECKING:
    from faas.services.gateway_service.service import GatewayService


def build(platform: Platform) -> GatewayService:
    from faas.services.gateway_service.service import GatewayService

    return GatewayService(
        platform.settings,
        kv=platform.kv,
        db=platform.db,
        events=platform.events,
        meter=platform.meter,
        tracer=platform.tracer,
    )


def routes(service: GatewayService) -> APIRouter:
    from faas.services.gateway_service.anthropic_routes import build_anthropic_router
    from faas.services.gateway_service.openai_routes import build_openai_router
    from faas.services.gateway_service.responses_routes import build_responses_router
    from faas.services.gateway_service.routes import build_router
    from faas.services.gateway_service.teams_routes import build_teams_router

    combined = APIRouter()
    combined.routes.extend(build_router(service).routes)
    combined.routes.extend(build_openai_router(service).routes)
    combined.routes.extend(build_responses_router(service).routes)
    combined.routes.extend(build_anthropic_router(service).routes)
    combined.routes.extend(build_teams_router(service.teams).routes)
    return combined


SPEC: ServiceSpec[GatewayService] = ServiceSpec(
    name="gateway",
    port=8001,
    summary="LLM gateway: OpenAI-compatible chat and embeddings, routing, limits, budgets, caching",
    build=build,
    routes=routes,
    uses=("database", "kv", "bus"),
    error_renderers={
        OPENAI_PREFIX: openai_error_renderer,
        ANTHROPIC_PREFIX: anthropic_error_renderer,
    },
    describe=lambda settings: {"models": models_in_use(settings)},
)
