"""Rendering a stored template by name: name + selector → one immutable version → compiled →
rendered, each step cached in process.

- resolutions by (tenant, name, version, label), valid while the name's generation is unchanged
  (a new version, a label move or a delete moves it, on every replica);
- compiled templates by (tenant, template id, version): a version's content never changes;
- rendered text by (tenant, template id, version, digest of the variables), up to
  `RENDER_CACHE_MAX_CHARS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from faas.services.prompt_service import catalog, templates
from faas.services.prompt_service.defaults import TenantDefaults
from faas.services.prompt_service.generations import NameGenerations
from faas.services.prompt_service.lru import LRU
from faas.services.prompt_service.models import RenderResponse
from faas.services.prompt_service.rendering import TemplateRenderer
from faas.shared.cpu import INLINE_CHARS, json_chars
from faas.shared.database import Database

RENDER_CACHE_MAX_CHARS = 256_000


@dataclass(frozen=True)
class Resolved:
    """One immutable version of a template, as a name and selector resolved to it."""

    template_id: str
    name: str
    version: int
    content: str
    variables_schema: dict[str, Any] | None


class StoredTemplateRenderer:
    def __init__(
        self,
        db: Database,
        renderer: TemplateRenderer,
        defaults: TenantDefaults,
        generations: NameGenerations,
        cache_entries: int,
    ) -> None:
        self.db = db
        self.renderer = renderer
        self.defaults = defaults
        self.generations = generations
        self.compiled: LRU[tuple[str, str, int], templates.Compiled] = LRU(cache_entries)
        # (tenant, name, version, label) → (generation, resolved version)
        self.resolved: LRU[tuple[str, str, int | None, str | None], tuple[int, Resolved]] = LRU(
            cache_entries
        )
        self.rendered: LRU[tuple[str, str, int, str], str] = LRU(cache_entries)

    async def render(
        self,
        tenant: str,
        name: str,
        variables: Mapping[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> RenderResponse:
        await self.defaults.ensure(tenant)
        resolved = await self.resolve(tenant, name, version, label)
        return await self._render_resolved(tenant, resolved, variables)

    def forget(self, tenant: str, template_id: str) -> None:
        """Drop what is cached of a deleted template."""
        self.compiled.drop(lambda key: key[0] == tenant and key[1] == template_id)
        self.rendered.drop(lambda key: key[0] == tenant and key[1] == template_id)

    async def resolve(
        self, tenant: str, name: str, version: int | None, label: str | None
    ) -> Resolved:
        key = (tenant, name, version, label)
        generation = await self.generations.current(tenant, name)
        hit = self.resolved.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        async with self.db.session() as session:
            template = await catalog.find_template(session, tenant, name)
            row = await catalog.version_row(session, tenant, template, version, label)
            resolved = Resolved(template.id, name, row.version, row.content, row.variables_schema)
        self.resolved.put(key, (generation, resolved))
        return resolved

    async def _compiled(self, tenant: str, resolved: Resolved) -> templates.Compiled:
        key = (tenant, resolved.template_id, resolved.version)
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = await self.renderer.run(templates.compile_template, resolved.content)
            self.compiled.put(key, compiled)
        return compiled

    async def _render_resolved(
        self, tenant: str, resolved: Resolved, variables: Mapping[str, Any]
    ) -> RenderResponse:
        compiled = await self._compiled(tenant, resolved)
        used = sorted(compiled.variables & variables.keys())
        # Variables may be megabytes: hashing those leaves the loop (a thread hop for the few
        # hundred bytes of an agent's system prompt cost more than the hash, and waited for the
        # GIL behind whatever the loop ran meanwhile).
        if json_chars(variables) <= INLINE_CHARS:
            digest = _digest(variables)
        else:
            digest = await self.renderer.run(_digest, variables)
        key = (tenant, resolved.template_id, resolved.version, digest)
        text = self.rendered.get(key)
        cached = text is not None
        if text is None:
            text = await self.renderer.render(compiled, variables, resolved.variables_schema)
            if len(text) <= RENDER_CACHE_MAX_CHARS:
                self.rendered.put(key, text)
        return RenderResponse(
            rendered=text,
            name=resolved.name,
            version=resolved.version,
            variables_used=used,
            cached=cached,
        )


def _digest(variables: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)).hexdigest()
