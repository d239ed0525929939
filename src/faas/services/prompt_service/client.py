"""How other services call the prompt service: render a stored template, and fit a
conversation into a token budget. Requests and answers are the prompt service's own models
(sent with only the fields the caller set, so messages keep their shape);
errors arrive as the shared exceptions (an unknown template stays a 404)."""

from __future__ import annotations

from urllib.parse import quote

from faas.kernel.clients import ApiClient
from faas.services.prompt_service.models import (
    ContextRequest,
    ContextResponse,
    RenderRequest,
    RenderResponse,
    TemplateSummary,
    TemplateView,
)
from faas.shared.contracts import Page


class PromptClient(ApiClient):
    service = "prompt"

    async def render(self, request: RenderRequest) -> RenderResponse:
        """A template (by label, version, or the production one) rendered with variables, e.g.
        an agent's system prompt."""
        return await self.model(
            RenderResponse,
            "POST",
            "/api/v1/prompts/render",
            json=request.model_dump(mode="json", exclude_unset=True),
        )

    async def build_context(self, request: ContextRequest) -> ContextResponse:
        """The newest messages that fit `max_tokens`, older ones cut or summarised (per
        `strategy`), e.g. an agent session's history before the next model call."""
        return await self.model(
            ContextResponse,
            "POST",
            "/api/v1/prompts/context",
            json=request.model_dump(mode="json", exclude_unset=True),
        )

    async def list_templates(self, limit: int, offset: int) -> Page[TemplateSummary]:
        """A page of the caller's templates."""
        params = {"limit": limit, "offset": offset}
        return await self.model(
            Page[TemplateSummary], "GET", "/api/v1/prompts/templates", params=params
        )

    async def get_template(self, name: str) -> TemplateView:
        """A template's `production` version, else its newest; `NotFound` otherwise."""
        path = f"/api/v1/prompts/templates/{quote(name, safe='')}"
        return await self.model(TemplateView, "GET", path)
