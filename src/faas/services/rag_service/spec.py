"""The rag service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec

if TYPE_CHECKING:
    from faas.services.rag_service.service import RagService


def build(platform: Platform) -> RagService:
    from faas.backends.vectors import build_vector_index
    from faas.services.rag_service.service import RagService

    return RagService(
        db=platform.db,
        index=build_vector_index(platform.settings),
        kv=platform.kv,
        events=platform.events,
        clients=platform.clients,
        embedding_model=platform.settings.rag_embedding_model,
        chat_model=platform.settings.rag_chat_model,
        cpu=platform.cpu,
        jobs=platform.jobs,
        service_identity=platform.service_identity,
    )


def routes(service: RagService) -> APIRouter:
    from faas.services.rag_service.routes import build_router

    return build_router(service)


SPEC: ServiceSpec[RagService] = ServiceSpec(
    name="rag",
    port=8003,
    summary="Retrieval-augmented generation: collections, hybrid search, grounded answers",
    build=build,
    routes=routes,
    calls=("gateway",),
    uses=("database", "kv", "bus", "vectors", "jobs", "cpu"),
    job_kinds=("rag.reindex",),
)
