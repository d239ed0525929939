"""HTTP routes of the prompt generator service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from faas.services.prompt_generator_service.models import (
    Accessible,
    AgentPrompt,
    BulkCheck,
    BulkCheckRequest,
    FeedbackItem,
    FeedbackStats,
    GeneratedAgent,
    GeneratedTool,
    Kind,
    Permission,
    PermissionChange,
    PermissionCheck,
    PermissionList,
    RateRequest,
    ToolPrompt,
)
from faas.shared.api import caller, respond
from faas.shared.contracts import ServiceResponse

if TYPE_CHECKING:
    from faas.services.prompt_generator_service.service import PromptGeneratorService

Plural = Annotated[Literal["agents", "tools"], Path()]
ResourceId = Annotated[str, Path(min_length=1, max_length=128)]
KINDS: dict[str, Kind] = {"agents": "agent", "tools": "tool"}


def build_router(service: PromptGeneratorService) -> APIRouter:
    router = APIRouter(prefix="/api/v1/prompt", tags=["prompt-generator"])

    @router.post("/agents", status_code=201, response_model=ServiceResponse[GeneratedAgent])
    async def generate_agent(body: AgentPrompt) -> Response:
        """Describe an agent in words; the model writes its spec (validated, one repair round),
        then the agent is created through the Agent service."""
        result = await service.generate_agent(caller(), body.prompt, body.model)
        return respond(result, status_code=201)

    @router.post("/tools", status_code=201, response_model=ServiceResponse[GeneratedTool])
    async def generate_tool(body: ToolPrompt) -> Response:
        """Describe a tool in words; the model writes a declarative HTTP tool spec or an
        arithmetic expression tool spec (validated by the calculator's whitelist, never run as
        code), created through the Agent service."""
        result = await service.generate_tool(caller(), body.prompt, body.model)
        return respond(result, status_code=201)

    @router.post("/permissions", response_model=ServiceResponse[PermissionList])
    async def change_permission(body: PermissionChange) -> Response:
        """Grant or revoke read / execute / admin (owner or admin-scoped callers only)."""
        return respond(await service.change_permission(caller(), body))

    @router.get("/permissions/check", response_model=ServiceResponse[PermissionCheck])
    async def check_permission(
        resource_id: Annotated[str, Query(min_length=1, max_length=128)],
        user_id: Annotated[str, Query(min_length=1, max_length=128)],
        permission: Permission,
        resource_type: Kind = "agent",
    ) -> Response:
        """`{allowed}`: the owner always; admin implies execute implies read."""
        return respond(
            await service.check(caller().tenant_id, resource_type, resource_id, user_id, permission)
        )

    @router.post("/permissions/check", response_model=ServiceResponse[BulkCheck])
    async def check_permissions(body: BulkCheckRequest) -> Response:
        """Many checks for one user in one call (the Agent service asks for an agent and its
        generated tools at once); results in the order asked."""
        return respond(await service.bulk_check(caller().tenant_id, body.user_id, body.checks))

    @router.get("/permissions/accessible", response_model=ServiceResponse[Accessible])
    async def accessible(
        user_id: Annotated[str, Query(min_length=1, max_length=128)],
        permission: Permission = "read",
        resource_type: Kind = "agent",
    ) -> Response:
        """Ids of the resources the user owns or holds `permission` on (for list filtering)."""
        return respond(
            await service.accessible(caller().tenant_id, resource_type, user_id, permission)
        )

    @router.get("/permissions", response_model=ServiceResponse[PermissionList])
    async def list_permissions(
        resource_id: Annotated[str, Query(min_length=1, max_length=128)],
        resource_type: Kind = "agent",
    ) -> Response:
        return respond(await service.permissions(caller().tenant_id, resource_type, resource_id))

    @router.post(
        "/{plural}/{resource_id}/rate",
        status_code=201,
        response_model=ServiceResponse[FeedbackItem],
    )
    async def rate(plural: Plural, resource_id: ResourceId, body: RateRequest) -> Response:
        result = await service.rate(caller(), KINDS[plural], resource_id, body)
        return respond(result, status_code=201)

    @router.get("/{plural}/{resource_id}/feedback", response_model=ServiceResponse[FeedbackStats])
    async def feedback(plural: Plural, resource_id: ResourceId) -> Response:
        return respond(await service.feedback(caller().tenant_id, KINDS[plural], resource_id))

    return router
