"""How other services call the prompt service: render a stored template, and fit a
conversation into a token budget. Requests and answers are the prompt service's own models
(sent with only the fields the caller set, so messages keep their shape);
errors arrive as the shared exceptions (an unknown template stays a 404)."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

import orjson

from faas.kernel.clients import ApiClient, ServiceClients
from faas.services.prompt_service.lru import LRU
from faas.services.prompt_service.models import (
    ContextRequest,
    ContextResponse,
    RenderRequest,
    RenderResponse,
    TemplateSummary,
    TemplateView,
)
from faas.shared.context import current_context
from faas.shared.contracts import Page
from faas.shared.cpu import INLINE_CHARS, json_chars

# (tenant, template, version, label, the variables as sorted JSON): what a render depends on.
# Longer renders are not kept: at most 1,024 x 32 KiB of them per client.
CACHED_RENDER_MAX_CHARS = 32 * 1024
RenderKey = tuple[str, str, int | None, str | None, bytes]


class PromptClient(ApiClient):
    service = "prompt"

    def __init__(
        self,
        clients: ServiceClients,
        *,
        cache_ttl_s: float = 0.0,
        cache_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`cache_ttl_s` > 0: a render is reused for that long by the same tenant asking for
        the same template and variables, as Langfuse's SDK caches prompts (60 s there): every
        agent run renders its system prompt, and the answer is the same until the template
        changes. Variables too big to key inline, and renders over CACHED_RENDER_MAX_CHARS, are
        never kept."""
        super().__init__(clients)
        self.cache_ttl_s = cache_ttl_s
        self.clock = clock
        self._renders: LRU[RenderKey, tuple[float, RenderResponse]] = LRU(cache_entries)

    async def render(self, request: RenderRequest) -> RenderResponse:
        """A template (by label, version, or the production one) rendered with variables, e.g.
        an agent's system prompt."""
        key = self._render_key(request)
        if key is not None:
            kept = self._renders.get(key)
            if kept is not None and self.clock() < kept[0]:
                return kept[1].model_copy(update={"cached": True})
        rendered = await self.model(
            RenderResponse,
            "POST",
            "/api/v1/prompts/render",
            json=request.model_dump(mode="json", exclude_unset=True),
        )
        if key is not None and len(rendered.rendered) <= CACHED_RENDER_MAX_CHARS:
            self._renders.put(key, (self.clock() + self.cache_ttl_s, rendered))
        return rendered

    def _render_key(self, request: RenderRequest) -> RenderKey | None:
        ctx = current_context()
        identity = ctx.identity if ctx is not None else None
        if self.cache_ttl_s <= 0 or identity is None:
            return None
        if json_chars(request.variables) > INLINE_CHARS:
            return None
        try:
            variables = orjson.dumps(request.variables, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a value only pydantic knows how to send: not kept
            return None
        return (identity.tenant_id, request.name, request.version, request.label, variables)

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
