"""The prompt service: versioned templates with movable labels (versions.py), rendering
stored templates with caches (stored_templates.py), fitting a conversation into a context
window (context.py), and the default templates each tenant starts with (defaults.py). This
class builds them and owns their lifecycle."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from faas.backends.kv import KeyValueStore
from faas.integrations.genai import NOOP_TRACER, operation_span
from faas.services.gateway_service.client import GatewayClient
from faas.services.prompt_service.budget import RenderLimits
from faas.services.prompt_service.context import ContextBuilder
from faas.services.prompt_service.defaults import TenantDefaults
from faas.services.prompt_service.generations import NameGenerations
from faas.services.prompt_service.models import (
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
from faas.services.prompt_service.rendering import TemplateRenderer
from faas.services.prompt_service.stored_templates import StoredTemplateRenderer
from faas.services.prompt_service.versions import TemplateVersions
from faas.shared import tokens
from faas.shared.context import Identity
from faas.shared.contracts import Page
from faas.shared.database import Database

if TYPE_CHECKING:
    from faas.kernel.clients import ServiceClients


class PromptService:
    name = "prompt"

    def __init__(
        self,
        *,
        db: Database,
        kv: KeyValueStore,
        clients: ServiceClients,
        chat_model: str | None = None,
        cache_entries: int = 2048,
        renderer: TemplateRenderer | None = None,
    ) -> None:
        self.renderer = renderer or TemplateRenderer(RenderLimits())
        self.tracer = clients.tracer or NOOP_TRACER
        defaults = TenantDefaults(db)
        generations = NameGenerations(kv)
        self.versions = TemplateVersions(db, self.renderer, defaults, generations)
        self.renders = StoredTemplateRenderer(
            db, self.renderer, defaults, generations, cache_entries
        )
        self.context = ContextBuilder(
            self.renderer, self.renders, GatewayClient(clients), chat_model
        )

    async def start(self) -> None:
        self.renderer.start()
        # The first token count loads cl100k: ~0.2 s, ~0.1 s of it holding the GIL (measured),
        # which would stall the event loop in the middle of serving; pay it at start instead.
        await self.renderer.run(tokens.count_chat_tokens, [{"role": "user", "content": "x"}])
        # Load the tokenizer now: building it holds the GIL for ~100 ms, which at the first
        # request stalled every other one.
        await asyncio.to_thread(tokens.encoding)

    async def stop(self) -> None:
        await self.renderer.stop()

    async def create_version(self, identity: Identity, body: TemplateCreate) -> TemplateView:
        return await self.versions.create(identity, body)

    async def get_template(
        self, tenant: str, name: str, version: int | None, label: str | None
    ) -> TemplateView:
        return await self.versions.get(tenant, name, version, label)

    async def list_templates(self, tenant: str, limit: int, offset: int) -> Page[TemplateSummary]:
        return await self.versions.list_templates(tenant, limit, offset)

    async def list_versions(self, tenant: str, name: str) -> list[VersionView]:
        return await self.versions.list_versions(tenant, name)

    async def move_label(self, identity: Identity, name: str, body: LabelMove) -> LabelView:
        return await self.versions.move_label(identity, name, body)

    async def delete_template(self, identity: Identity, name: str) -> None:
        template_id = await self.versions.delete(identity.tenant_id, name)
        self.renders.forget(identity.tenant_id, template_id)

    async def render(self, identity: Identity, body: RenderRequest) -> RenderResponse:
        with operation_span(self.tracer, "prompt.render", {"faas.prompt.name": body.name}) as span:
            rendered = await self.renders.render(
                identity.tenant_id,
                body.name,
                body.variables,
                version=body.version,
                label=body.label,
            )
            if span.is_recording():
                span.set_attributes(
                    {"faas.prompt.version": rendered.version, "faas.prompt.cached": rendered.cached}
                )
                if body.label:
                    span.set_attribute("faas.prompt.label", body.label)
            return rendered

    async def build_context(self, identity: Identity, body: ContextRequest) -> ContextResponse:
        return await self.context.build(identity, body)
