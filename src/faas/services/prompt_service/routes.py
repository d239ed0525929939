"""HTTP routes of the prompt service: parse, call the use case, answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from faas.services.prompt_service.models import (
    LABEL_PATTERN,
    NAME_PATTERN,
    ContextRequest,
    ContextResponse,
    LabelMove,
    LabelView,
    RenderRequest,
    RenderResponse,
    TemplateCreate,
    TemplateSummary,
    TemplateView,
    VersionView,
)
from faas.shared.api import PageDep, caller, respond
from faas.shared.contracts import Page, ServiceResponse
from faas.shared.direct_routes import body_as, body_doc, direct
from faas.shared.exceptions import ValidationFailed
from faas.shared.input_rules import MAX_DB_INT

if TYPE_CHECKING:
    from faas.services.prompt_service.service import PromptService

TemplateName = Annotated[str, Path(pattern=NAME_PATTERN)]
RENDER_EXAMPLE = {"name": "greet", "label": "production", "variables": {"name": "Ada"}}


def build_router(service: PromptService) -> APIRouter:
    router = APIRouter(prefix="/api/v1/prompts", tags=["prompts"])
    router.include_router(templates_router(service))
    router.include_router(rendering_router(service))
    return router


def templates_router(service: PromptService) -> APIRouter:
    """Versions and labels of templates."""
    router = APIRouter()

    @router.post("/templates", status_code=201, response_model=ServiceResponse[TemplateView])
    async def create_template(body: TemplateCreate) -> Response:
        """Version 1 of a new name, or the next version of an existing one (versions are
        immutable). The template is compiled first: a syntax error is a 422 naming its line."""
        return respond(await service.create_version(caller(), body), status_code=201)

    @router.get("/templates", response_model=ServiceResponse[Page[TemplateSummary]])
    async def list_templates(page: PageDep) -> Response:
        return respond(await service.list_templates(caller().tenant_id, page.limit, page.offset))

    @router.get("/templates/{name}", response_model=ServiceResponse[TemplateView])
    async def get_template(
        name: TemplateName,
        version: Annotated[int | None, Query(ge=1, le=MAX_DB_INT)] = None,
        label: Annotated[str | None, Query(pattern=LABEL_PATTERN)] = None,
    ) -> Response:
        """One version: `?version=`, `?label=` (`latest` is the newest), by default the
        `production` label, else the newest version."""
        if version is not None and label is not None:
            raise ValidationFailed("give version or label, not both")
        return respond(await service.get_template(caller().tenant_id, name, version, label))

    @router.get("/templates/{name}/versions", response_model=ServiceResponse[list[VersionView]])
    async def list_versions(name: TemplateName) -> Response:
        views = await service.list_versions(caller().tenant_id, name)
        return respond([v.model_dump(mode="json") for v in views])

    @router.post("/templates/{name}/labels", response_model=ServiceResponse[LabelView])
    async def move_label(name: TemplateName, body: LabelMove) -> Response:
        return respond(await service.move_label(caller(), name, body))

    @router.delete("/templates/{name}", status_code=204)
    async def delete_template(name: TemplateName) -> Response:
        await service.delete_template(caller(), name)
        return Response(status_code=204)

    return router


def rendering_router(service: PromptService) -> APIRouter:
    """Rendering a stored template, and fitting a conversation into a context window."""
    router = APIRouter()

    @router.post(
        "/render",
        response_model=ServiceResponse[RenderResponse],
        openapi_extra=body_doc(RenderRequest, RENDER_EXAMPLE),
    )
    @direct  # every agent run renders its system prompt here
    async def render(request: Request) -> Response:
        return respond(await service.render(caller(), await body_as(request, RenderRequest)))

    @router.post("/context", response_model=ServiceResponse[ContextResponse])
    async def context(body: ContextRequest) -> Response:
        return respond(await service.build_context(caller(), body))

    return router
