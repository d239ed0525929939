"""HTTP routes of the prompt generator service: parse, call the use case, answer.

The service lives under `/api/v1/prompt-generator`. Its first prefix, `/api/v1/prompt`, was a
letter away from the prompt service's `/api/v1/prompts`; it stays for one release as a
deprecated alias: the same handlers, hidden from the OpenAPI schema, each answer carrying
`Deprecation: true` and a `Link` to its successor path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

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

PREFIX = "/api/v1/prompt-generator"
DEPRECATED_PREFIX = "/api/v1/prompt"

Plural = Annotated[Literal["agents", "tools"], Path()]
ResourceId = Annotated[str, Path(min_length=1, max_length=128)]
QueryId = Annotated[str, Query(min_length=1, max_length=128)]
KINDS: dict[str, Kind] = {"agents": "agent", "tools": "tool"}


class DeprecatedRoute(APIRoute):
    """A route under the deprecated prefix: every answer, errors included, says so and links
    to the same call under the current prefix."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        successor = str(scope["path"]).replace(f"{DEPRECATED_PREFIX}/", f"{PREFIX}/", 1)
        if scope.get("query_string"):
            successor += "?" + scope["query_string"].decode("latin-1")
        marks = [
            (b"deprecation", b"true"),
            (b"link", f'<{successor}>; rel="successor-version"'.encode("latin-1")),
        ]

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *marks]}
            await send(message)

        await super().handle(scope, receive, marked)


def build_router(service: PromptGeneratorService) -> APIRouter:
    router = APIRouter()
    router.include_router(_api(service, APIRoute), prefix=PREFIX)
    router.include_router(
        _api(service, DeprecatedRoute), prefix=DEPRECATED_PREFIX, include_in_schema=False
    )
    return router


def _api(service: PromptGeneratorService, route_class: type[APIRoute]) -> APIRouter:
    api = APIRouter(tags=["prompt-generator"])
    for part in (generation_router, permissions_router, feedback_router):
        api.include_router(part(service, route_class))
    return api


def generation_router(service: PromptGeneratorService, route_class: type[APIRoute]) -> APIRouter:
    router = APIRouter(route_class=route_class)

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

    return router


def permissions_router(service: PromptGeneratorService, route_class: type[APIRoute]) -> APIRouter:
    router = APIRouter(prefix="/permissions", route_class=route_class)

    @router.post("", response_model=ServiceResponse[PermissionList])
    async def change_permission(body: PermissionChange) -> Response:
        """Grant or revoke read / execute / admin (owner or admin-scoped callers only)."""
        return respond(await service.change_permission(caller(), body))

    @router.get("/check", response_model=ServiceResponse[PermissionCheck])
    async def check_permission(
        resource_id: QueryId,
        user_id: QueryId,
        permission: Permission,
        resource_type: Kind = "agent",
    ) -> Response:
        """`{allowed}`: the owner always; admin implies execute implies read."""
        tenant = caller().tenant_id
        return respond(await service.check(tenant, resource_type, resource_id, user_id, permission))

    @router.post("/check", response_model=ServiceResponse[BulkCheck])
    async def check_permissions(body: BulkCheckRequest) -> Response:
        """Many checks for one user in one call (the Agent service asks for an agent and its
        generated tools at once); results in the order asked."""
        return respond(await service.bulk_check(caller().tenant_id, body.user_id, body.checks))

    @router.get("/accessible", response_model=ServiceResponse[Accessible])
    async def accessible(
        user_id: QueryId, permission: Permission = "read", resource_type: Kind = "agent"
    ) -> Response:
        """Ids of the resources the user owns or holds `permission` on (for list filtering)."""
        tenant = caller().tenant_id
        return respond(await service.accessible(tenant, resource_type, user_id, permission))

    @router.get("", response_model=ServiceResponse[PermissionList])
    async def list_permissions(resource_id: QueryId, resource_type: Kind = "agent") -> Response:
        tenant = caller().tenant_id
        return respond(await service.list_permissions(tenant, resource_type, resource_id))

    return router


def feedback_router(service: PromptGeneratorService, route_class: type[APIRoute]) -> APIRouter:
    router = APIRouter(route_class=route_class)

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
