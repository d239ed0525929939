"""The agent service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec

if TYPE_CHECKING:
    from faas.services.agent_service.service import AgentService


def build(platform: Platform) -> AgentService:
    from faas.services.agent_service.service import AgentService

    return AgentService(
        db=platform.db,
        kv=platform.kv,
        events=platform.events,
        jobs=platform.jobs,
        runtime=platform,
        http_allowlist=platform.settings.agent_http_allowlist,
        session_lock_wait_s=platform.settings.agent_session_lock_wait_s,
    )


def routes(service: AgentService) -> APIRouter:
    from faas.services.agent_service.routes import build_router

    router = build_router(service)
    router.routes.append(service.mcp.route())  # /mcp, faas as an MCP server (mcp_server.py)
    return router


SPEC: ServiceSpec[AgentService] = ServiceSpec(
    name="agent",
    port=8004,
    summary="Agents: tools, runs (sync, streamed, background), sessions, memory, workflows",
    build=build,
    routes=routes,
    calls=("gateway", "prompt", "rag", "cache", "prompt_generator", "ml"),
    uses=("database", "kv", "bus", "jobs"),
    job_kinds=("agent.execute",),
)
