"""The service catalogue: name → builder. A service absent here does not exist yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faas.runtime import Runtime
    from faas.shared.api import Service


def _cache(runtime: Runtime) -> Service:
    from faas.services.cache_service.service import CacheService

    return CacheService(runtime.settings, runtime.kv, runtime.events)


def _gateway(runtime: Runtime) -> Service:
    from faas.services.gateway_service.service import GatewayService

    return GatewayService(
        runtime.settings,
        kv=runtime.kv,
        db=runtime.db,
        events=runtime.events,
        meter=runtime.telemetry.meter,
    )


def _rag(runtime: Runtime) -> Service:
    from faas.backends.vectors import build_vector_index
    from faas.services.rag_service.service import RagService

    return RagService(
        db=runtime.db,
        index=build_vector_index(runtime.settings),
        kv=runtime.kv,
        events=runtime.events,
        clients=runtime.clients,
        embedding_model=runtime.settings.rag_embedding_model,
        chat_model=runtime.settings.rag_chat_model,
        cpu=runtime.cpu,
        jobs=runtime.jobs,
        service_identity=runtime.service_identity,
    )


def _ingestion(runtime: Runtime) -> Service:
    from faas.services.ingestion_service.service import IngestionService

    return IngestionService(runtime.settings, db=runtime.db, jobs=runtime.jobs, runtime=runtime)


def _agent(runtime: Runtime) -> Service:
    from faas.services.agent_service.service import AgentService

    return AgentService(
        db=runtime.db,
        kv=runtime.kv,
        events=runtime.events,
        jobs=runtime.jobs,
        runtime=runtime,
        http_allowlist=runtime.settings.agent_http_allowlist,
        session_lock_wait_s=runtime.settings.agent_session_lock_wait_s,
    )


def _prompt(runtime: Runtime) -> Service:
    from faas.services.prompt_service.rendering import TemplateRenderer
    from faas.services.prompt_service.service import PromptService

    return PromptService(
        db=runtime.db,
        kv=runtime.kv,
        clients=runtime.clients,
        renderer=TemplateRenderer.from_settings(runtime.settings),
    )


def _prompt_generator(runtime: Runtime) -> Service:
    from faas.services.prompt_generator_service.service import PromptGeneratorService

    return PromptGeneratorService(db=runtime.db, clients=runtime.clients)


def _llmops(runtime: Runtime) -> Service:
    from faas.services.llmops_service.service import LlmopsService

    return LlmopsService(
        db=runtime.db,
        bus=runtime.bus,
        events=runtime.events,
        retention_days=int(getattr(runtime.settings, "llmops_retention_days", 90)),
    )


def _ml(runtime: Runtime) -> Service:
    from faas.services.ml_service.service import MLService

    return MLService(
        runtime.settings, db=runtime.db, jobs=runtime.jobs, meter=runtime.telemetry.meter
    )


BUILDERS: dict[str, Callable[[Runtime], Service]] = {
    "gateway": _gateway,
    "cache": _cache,
    "rag": _rag,
    "ingestion": _ingestion,
    "prompt": _prompt,
    "agent": _agent,
    "prompt_generator": _prompt_generator,
    "llmops": _llmops,
    "ml": _ml,
}


def available() -> list[str]:
    return list(BUILDERS)
