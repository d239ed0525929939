"""Prompt use cases: immutable template versions with movable labels (as in Langfuse prompt
management), sandboxed rendering with caches, default templates per tenant, and fitting a
conversation into a context window (truncate, or summarize the oldest turns via the gateway)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson
from fastapi import APIRouter
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from faas.backends.kv import KeyValueStore
from faas.services.gateway_service.providers import tokens
from faas.services.gateway_service.providers.tokens import REPLY_PRIMING, count_chat_tokens
from faas.services.prompt_service import templates
from faas.services.prompt_service.budget import RenderLimits
from faas.services.prompt_service.models import (
    DEFAULT_LABEL,
    LATEST,
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
from faas.services.prompt_service.tables import (
    PromptLabelRow,
    PromptTemplateRow,
    PromptVersionRow,
)
from faas.shared.context import Identity, new_id
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, NotFound, ValidationFailed
from faas.shared.http_client import raise_for_error

if TYPE_CHECKING:
    from faas.runtime import ServiceClients

log = logging.getLogger("faas.prompt")

K = TypeVar("K")
V = TypeVar("V")

SUMMARY_PREFIX = "Summary of earlier conversation: "
SUMMARY_TEMPLATE = "agent.summarize_memory"
SUMMARY_MAX_TOKENS = 512
SUMMARY_MIN_TOKENS = 8
# The transcript handed to the summarizer: newest dropped turns first, up to this size.
SUMMARY_INPUT_CHARS = 200_000
SUMMARY_MESSAGE_CHARS = 20_000
RENDER_CACHE_MAX_CHARS = 256_000
CREATE_ATTEMPTS = 4
DEFAULT_NAMES = frozenset(t.name for t in templates.DEFAULT_TEMPLATES)


def _now() -> datetime:
    return datetime.now(UTC)


class LRU(Generic[K, V]):
    """A small bounded in-process cache (the event loop is single-threaded: no lock)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def drop(self, predicate: Any) -> None:
        for key in [k for k in self._data if predicate(k)]:
            del self._data[key]

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class Resolved:
    """One immutable version of a template, as a name and selector resolved to it."""

    template_id: str
    name: str
    version: int
    content: str
    variables_schema: dict[str, Any] | None


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
        self.db = db
        self.kv = kv
        self.clients = clients
        self.chat_model = chat_model
        self.renderer = renderer or TemplateRenderer(RenderLimits())
        # (tenant, template_id, version) → compiled template; content per key is immutable.
        self.compiled: LRU[tuple[str, str, int], templates.Compiled] = LRU(cache_entries)
        # (tenant, name, version, label) → (generation, resolved version)
        self.resolved: LRU[tuple[str, str, int | None, str | None], tuple[int, Resolved]] = LRU(
            cache_entries
        )
        # (tenant, template_id, version, variables digest) → rendered text
        self.rendered: LRU[tuple[str, str, int, str], str] = LRU(cache_entries)
        self._seeded: set[str] = set()
        self._seed_locks: dict[str, asyncio.Lock] = {}

    def router(self) -> APIRouter:
        from faas.services.prompt_service.routes import build_router

        return build_router(self)

    async def start(self) -> None:
        self.renderer.start()
        # The first token count loads cl100k: ~0.2 s, ~0.1 s of it holding the GIL (measured),
        # which would stall the event loop in the middle of serving; pay it at start instead.
        await self.renderer.run(count_chat_tokens, [{"role": "user", "content": "x"}])
        # Load the tokenizer now: building it holds the GIL for ~100 ms, which at the first
        # request stalled every other one.
        await asyncio.to_thread(tokens.encoding)

    async def stop(self) -> None:
        await self.renderer.stop()

    # -- generations (invalidate label/version resolution, across replicas via the KV) ------

    def _generation_key(self, tenant: str, name: str) -> str:
        return f"faas-meta:{tenant}:prompt:{name}:generation"

    async def _generation(self, tenant: str, name: str) -> int:
        raw = await self.kv.get(self._generation_key(tenant, name))
        return int(raw) if raw else 0

    async def _bump(self, tenant: str, name: str) -> None:
        await self.kv.incr(self._generation_key(tenant, name))

    # -- default templates ------------------------------------------------------------------

    async def ensure_defaults(self, tenant: str) -> None:
        """Create the default templates of a tenant on its first use (idempotent; concurrent
        creators across processes are settled by the unique (tenant, name) constraint)."""
        if tenant in self._seeded:
            return
        lock = self._seed_locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            if tenant in self._seeded:
                return
            for default in templates.DEFAULT_TEMPLATES:
                try:
                    async with self.db.session() as session:
                        repo = TenantRepository(session, PromptTemplateRow, tenant)
                        if await session.scalar(
                            repo.select(PromptTemplateRow.name == default.name)
                        ):
                            continue
                        now = _now()
                        row = repo.add(
                            id=new_id(),
                            name=default.name,
                            description=default.description,
                            created_at=now,
                        )
                        await session.flush()
                        TenantRepository(session, PromptVersionRow, tenant).add(
                            id=new_id(),
                            template_id=row.id,
                            version=1,
                            content=default.content,
                            variables_schema=default.variables_schema,
                            created_by=None,
                            created_at=now,
                        )
                        TenantRepository(session, PromptLabelRow, tenant).add(
                            template_id=row.id, label=DEFAULT_LABEL, version=1, updated_at=now
                        )
                        await session.flush()
                except IntegrityError:
                    log.debug("default prompt %s of %s created concurrently", default.name, tenant)
            self._seeded.add(tenant)
            self._seed_locks.pop(tenant, None)

    # -- templates and versions -------------------------------------------------------------

    async def create_version(self, identity: Identity, body: TemplateCreate) -> TemplateView:
        tenant = identity.tenant_id
        await self.ensure_defaults(tenant)
        # A syntax error is a 422 before any write; compiling 100k characters takes ~1 s.
        await self.renderer.run(templates.compile_template, body.content)
        if body.variables_schema is not None:
            await self.renderer.run(templates.check_schema, body.variables_schema)
        for attempt in range(CREATE_ATTEMPTS):
            try:
                view = await self._insert_version(identity, body)
                break
            except IntegrityError:
                # Another writer took the name or the version number first: read and retry.
                if attempt == CREATE_ATTEMPTS - 1:
                    raise Conflict(
                        f"prompt {body.name!r} is being changed concurrently; retry"
                    ) from None
        await self._bump(tenant, body.name)
        return view

    async def _insert_version(self, identity: Identity, body: TemplateCreate) -> TemplateView:
        tenant = identity.tenant_id
        now = _now()
        async with self.db.session() as session:
            repo = TenantRepository(session, PromptTemplateRow, tenant)
            template = await session.scalar(repo.select(PromptTemplateRow.name == body.name))
            if template is None:
                template = repo.add(
                    id=new_id(), name=body.name, description=body.description or "", created_at=now
                )
                await session.flush()
            elif body.description is not None:
                template.description = body.description
            latest = await session.scalar(
                select(func.max(PromptVersionRow.version)).where(
                    PromptVersionRow.tenant_id == tenant,
                    PromptVersionRow.template_id == template.id,
                )
            )
            version = int(latest or 0) + 1
            row = TenantRepository(session, PromptVersionRow, tenant).add(
                id=new_id(),
                template_id=template.id,
                version=version,
                content=body.content,
                variables_schema=body.variables_schema,
                created_by=identity.user_id,
                created_at=now,
            )
            for label in body.labels:
                await self._set_label(session, tenant, template.id, label, version)
            await session.flush()
            labels = await self._labels_of(session, tenant, template.id, version)
            return _template_view(template, row, labels)

    async def _set_label(
        self, session: AsyncSession, tenant: str, template_id: str, label: str, version: int
    ) -> None:
        repo = TenantRepository(session, PromptLabelRow, tenant)
        existing = await session.scalar(
            repo.select(PromptLabelRow.template_id == template_id, PromptLabelRow.label == label)
        )
        if existing is None:
            repo.add(template_id=template_id, label=label, version=version, updated_at=_now())
        else:
            existing.version, existing.updated_at = version, _now()

    async def _labels_of(
        self, session: AsyncSession, tenant: str, template_id: str, version: int
    ) -> list[str]:
        labels = await session.scalars(
            select(PromptLabelRow.label)
            .where(
                PromptLabelRow.tenant_id == tenant,
                PromptLabelRow.template_id == template_id,
                PromptLabelRow.version == version,
            )
            .order_by(PromptLabelRow.label)
        )
        return list(labels.all())

    async def _template(self, session: AsyncSession, tenant: str, name: str) -> PromptTemplateRow:
        row: PromptTemplateRow | None = await session.scalar(
            TenantRepository(session, PromptTemplateRow, tenant).select(
                PromptTemplateRow.name == name
            )
        )
        if row is None:
            raise NotFound(f"prompt {name!r} not found")
        return row

    async def _version_row(
        self,
        session: AsyncSession,
        tenant: str,
        template: PromptTemplateRow,
        version: int | None,
        label: str | None,
    ) -> PromptVersionRow:
        """The version a selector names: an explicit version, a label (`latest` is the newest
        version), or by default the `production` label, else the newest version."""
        repo = TenantRepository(session, PromptVersionRow, tenant)
        if version is None and label != LATEST:
            wanted = label or DEFAULT_LABEL
            pointed = await session.scalar(
                select(PromptLabelRow.version).where(
                    PromptLabelRow.tenant_id == tenant,
                    PromptLabelRow.template_id == template.id,
                    PromptLabelRow.label == wanted,
                )
            )
            if pointed is None and label is not None:
                raise NotFound(f"prompt {template.name!r} has no label {label!r}")
            version = pointed
        query = repo.select(PromptVersionRow.template_id == template.id)
        if version is None:
            query = query.order_by(PromptVersionRow.version.desc()).limit(1)
        else:
            query = query.where(PromptVersionRow.version == version)
        row: PromptVersionRow | None = await session.scalar(query)
        if row is None:
            raise NotFound(f"version {version} of prompt {template.name!r} not found")
        return row

    async def get_template(
        self, tenant: str, name: str, version: int | None, label: str | None
    ) -> TemplateView:
        await self.ensure_defaults(tenant)
        async with self.db.session() as session:
            template = await self._template(session, tenant, name)
            row = await self._version_row(session, tenant, template, version, label)
            labels = await self._labels_of(session, tenant, template.id, row.version)
            return _template_view(template, row, labels)

    async def list_templates(self, tenant: str, limit: int, offset: int) -> Page[TemplateSummary]:
        await self.ensure_defaults(tenant)
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, PromptTemplateRow, tenant).page(
                order_by=PromptTemplateRow.name, limit=limit, offset=offset
            )
            ids = [r.id for r in rows]
            latest = await session.execute(
                select(
                    PromptVersionRow.template_id,
                    func.max(PromptVersionRow.version),
                    func.max(PromptVersionRow.created_at),
                )
                .where(PromptVersionRow.tenant_id == tenant, PromptVersionRow.template_id.in_(ids))
                .group_by(PromptVersionRow.template_id)
            )
            newest = {tid: (int(v), at) for tid, v, at in latest.all()}
            label_rows = await session.execute(
                select(PromptLabelRow.template_id, PromptLabelRow.label, PromptLabelRow.version)
                .where(PromptLabelRow.tenant_id == tenant, PromptLabelRow.template_id.in_(ids))
                .order_by(PromptLabelRow.label)
            )
            labels: dict[str, dict[str, int]] = {}
            for tid, label, version in label_rows.all():
                labels.setdefault(tid, {})[label] = version
            items = []
            for r in rows:
                version, updated = newest.get(r.id, (0, r.created_at))
                items.append(
                    TemplateSummary(
                        name=r.name,
                        description=r.description,
                        latest_version=version,
                        labels=labels.get(r.id, {}),
                        created_at=r.created_at,
                        updated_at=max(updated, r.created_at),
                    )
                )
        return Page[TemplateSummary](items=items, total=total, limit=limit, offset=offset)

    async def list_versions(self, tenant: str, name: str) -> list[VersionView]:
        await self.ensure_defaults(tenant)
        async with self.db.session() as session:
            template = await self._template(session, tenant, name)
            rows = (
                await session.scalars(
                    TenantRepository(session, PromptVersionRow, tenant)
                    .select(PromptVersionRow.template_id == template.id)
                    .order_by(PromptVersionRow.version.desc())
                )
            ).all()
            label_rows = await session.execute(
                select(PromptLabelRow.label, PromptLabelRow.version)
                .where(
                    PromptLabelRow.tenant_id == tenant, PromptLabelRow.template_id == template.id
                )
                .order_by(PromptLabelRow.label)
            )
            by_version: dict[int, list[str]] = {}
            for label, version in label_rows.all():
                by_version.setdefault(version, []).append(label)
            return [
                VersionView(
                    version=r.version,
                    labels=by_version.get(r.version, []),
                    chars=len(r.content),
                    variables_schema=r.variables_schema,
                    created_by=r.created_by,
                    created_at=r.created_at,
                )
                for r in rows
            ]

    async def move_label(self, identity: Identity, name: str, body: LabelMove) -> LabelView:
        tenant = identity.tenant_id
        await self.ensure_defaults(tenant)
        try:
            async with self.db.session() as session:
                template = await self._template(session, tenant, name)
                await self._version_row(session, tenant, template, body.version, None)
                await self._set_label(session, tenant, template.id, body.label, body.version)
        except IntegrityError:
            raise Conflict(f"label {body.label!r} was changed concurrently; retry") from None
        await self._bump(tenant, name)
        return LabelView(name=name, label=body.label, version=body.version)

    async def delete_template(self, identity: Identity, name: str) -> None:
        tenant = identity.tenant_id
        await self.ensure_defaults(tenant)
        async with self.db.session() as session:
            template = await self._template(session, tenant, name)
            template_id = template.id
            await session.execute(
                delete(PromptLabelRow).where(
                    PromptLabelRow.tenant_id == tenant, PromptLabelRow.template_id == template_id
                )
            )
            await session.execute(
                delete(PromptVersionRow).where(
                    PromptVersionRow.tenant_id == tenant,
                    PromptVersionRow.template_id == template_id,
                )
            )
            await session.delete(template)
        await self._bump(tenant, name)
        self.compiled.drop(lambda key: key[0] == tenant and key[1] == template_id)
        self.rendered.drop(lambda key: key[0] == tenant and key[1] == template_id)
        if name in DEFAULT_NAMES:
            # A deleted default comes back, as shipped, on the tenant's next request.
            self._seeded.discard(tenant)

    # -- rendering --------------------------------------------------------------------------

    async def resolve(
        self, tenant: str, name: str, version: int | None, label: str | None
    ) -> Resolved:
        """Name + selector → one immutable version, cached until the name's generation moves
        (a new version, a label move or a delete)."""
        key = (tenant, name, version, label)
        generation = await self._generation(tenant, name)
        hit = self.resolved.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        async with self.db.session() as session:
            template = await self._template(session, tenant, name)
            row = await self._version_row(session, tenant, template, version, label)
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

    async def render(self, identity: Identity, body: RenderRequest) -> RenderResponse:
        tenant = identity.tenant_id
        await self.ensure_defaults(tenant)
        resolved = await self.resolve(tenant, body.name, body.version, body.label)
        return await self.render_resolved(tenant, resolved, body.variables)

    async def render_resolved(
        self, tenant: str, resolved: Resolved, variables: Mapping[str, Any]
    ) -> RenderResponse:
        compiled = await self._compiled(tenant, resolved)
        used = sorted(compiled.variables & variables.keys())
        # Variables may be megabytes: hashing them leaves the loop too.
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

    # -- context windows --------------------------------------------------------------------

    async def build_context(self, identity: Identity, body: ContextRequest) -> ContextResponse:
        """Keep the system prompt and the newest messages that fit `max_tokens` (cl100k chat
        tokens, exact for OpenAI cl100k models); with `summarize`, the dropped oldest turns
        are replaced by one summary message written through the gateway."""
        history = [m.model_dump(exclude_unset=True) for m in body.messages]
        system: dict[str, Any] | None = None
        if body.system_prompt is not None:
            system = {"role": "system", "content": body.system_prompt}
        else:
            first = next((i for i, m in enumerate(history) if m["role"] == "system"), None)
            if first is not None:
                system = history.pop(first)
        head = [system] if system is not None else []
        # Counting tokens of megabytes of messages takes seconds: off the event loop.
        base, costs = await self.renderer.run(_costs, head, history)
        if base > body.max_tokens:
            raise ValidationFailed(
                f"the system prompt alone needs {base} tokens; max_tokens is {body.max_tokens}",
                details={"system_tokens": base, "max_tokens": body.max_tokens},
            )
        start = _fit(history, costs, body.max_tokens - base)
        truncated = await self.renderer.run(
            _context, head + history[start:], start, summarized=False
        )
        if start == 0 or body.strategy == "truncate":
            return truncated

        overhead = count_chat_tokens([{"role": "system", "content": SUMMARY_PREFIX}])
        overhead -= REPLY_PRIMING
        reserve = min(SUMMARY_MAX_TOKENS, (body.max_tokens - base) // 3)
        summary_tokens = reserve - overhead - 1  # 1: the prefix may merge with the summary
        if summary_tokens < SUMMARY_MIN_TOKENS:
            truncated.note = "no room for a summary within max_tokens: truncated instead"
            return truncated
        start = _fit(history, costs, body.max_tokens - base - reserve)
        summary = await self._summarize(identity, history[:start], summary_tokens, body.model)
        if not summary:
            truncated.note = "the summarizer returned nothing: truncated instead"
            return truncated
        summary_message = {"role": "system", "content": SUMMARY_PREFIX + summary}
        result = await self.renderer.run(
            _context, [*head, summary_message, *history[start:]], start, summarized=True
        )
        if result.token_count > body.max_tokens:
            truncated.note = (
                f"the summary did not fit ({result.token_count} > {body.max_tokens} tokens): "
                "truncated instead"
            )
            return truncated
        return result

    async def _summarize(
        self, identity: Identity, dropped: list[dict[str, Any]], max_tokens: int, model: str | None
    ) -> str:
        transcript: list[dict[str, Any]] = []
        size = 0
        for message in reversed(dropped):  # newest first, so a cut loses the oldest turns
            content = _text(message)[:SUMMARY_MESSAGE_CHARS]
            size += len(content)
            if size > SUMMARY_INPUT_CHARS:
                break
            transcript.append({"role": message["role"], "content": content})
        transcript.reverse()
        tenant = identity.tenant_id
        await self.ensure_defaults(tenant)
        resolved = await self.resolve(tenant, SUMMARY_TEMPLATE, None, None)
        prompt = (await self.render_resolved(tenant, resolved, {"messages": transcript})).rendered
        request: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        if model or self.chat_model:
            request["model"] = model or self.chat_model
        response = await self.clients.get("gateway").post("/api/v1/gateway/generate", json=request)
        raise_for_error(response, "gateway")
        return str(response.json()["data"].get("text") or "").strip()


def _digest(variables: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _costs(head: list[dict[str, Any]], history: list[dict[str, Any]]) -> tuple[int, list[int]]:
    """Tokens of the head (system prompt and reply priming), and of each message alone."""
    return count_chat_tokens(head), [count_chat_tokens([m]) - REPLY_PRIMING for m in history]


def _fit(history: list[dict[str, Any]], costs: list[int], budget: int) -> int:
    """The index of the oldest message kept when keeping the newest messages that fit; a tool
    result whose assistant tool call was dropped is dropped too."""
    start, total = len(costs), 0
    while start > 0 and total + costs[start - 1] <= budget:
        total += costs[start - 1]
        start -= 1
    while start < len(history) and history[start]["role"] == "tool":
        start += 1
    return start


def _text(message: dict[str, Any]) -> str:
    """A message as transcript text: text parts, and the names of the tools it called."""
    content = message.get("content")
    if isinstance(content, list):
        text = " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    else:
        text = str(content or "")
    calls = [
        str(call.get("function", {}).get("name", ""))
        for call in message.get("tool_calls") or []
        if isinstance(call, dict)
    ]
    if calls:
        text = f"{text} [called {', '.join(calls)}]".strip()
    return text


def _context(messages: list[dict[str, Any]], dropped: int, *, summarized: bool) -> ContextResponse:
    return ContextResponse(
        messages=messages,
        token_count=count_chat_tokens(messages),
        dropped=dropped,
        summarized=summarized,
    )


def _template_view(
    template: PromptTemplateRow, row: PromptVersionRow, labels: list[str]
) -> TemplateView:
    return TemplateView(
        name=template.name,
        version=row.version,
        content=row.content,
        variables_schema=row.variables_schema,
        labels=labels,
        description=template.description,
        created_by=row.created_by,
        created_at=row.created_at,
    )
