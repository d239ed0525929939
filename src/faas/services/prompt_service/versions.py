"""Template use cases: immutable versions with movable labels (as in Langfuse prompt
management) — create a version, read one, list templates and versions, move a label, delete."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from faas.services.prompt_service import catalog, templates
from faas.services.prompt_service.defaults import TenantDefaults
from faas.services.prompt_service.generations import NameGenerations
from faas.services.prompt_service.models import (
    LabelMove,
    LabelView,
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
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict

CREATE_ATTEMPTS = 4


class TemplateVersions:
    def __init__(
        self,
        db: Database,
        renderer: TemplateRenderer,
        defaults: TenantDefaults,
        generations: NameGenerations,
    ) -> None:
        self.db = db
        self.renderer = renderer
        self.defaults = defaults
        self.generations = generations

    async def create(self, identity: Identity, body: TemplateCreate) -> TemplateView:
        tenant = identity.tenant_id
        await self.defaults.ensure(tenant)
        # A syntax error is a 422 before any write; compiling 100k characters takes ~1 s.
        await self.renderer.run(templates.compile_template, body.content)
        if body.variables_schema is not None:
            await self.renderer.run(templates.check_schema, body.variables_schema)
        for attempt in range(CREATE_ATTEMPTS):
            try:
                view = await self._insert(identity, body)
                break
            except IntegrityError:
                # Another writer took the name or the version number first: read and retry.
                if attempt == CREATE_ATTEMPTS - 1:
                    raise Conflict(
                        f"prompt {body.name!r} is being changed concurrently; retry"
                    ) from None
        await self.generations.bump(tenant, body.name)
        return view

    async def _insert(self, identity: Identity, body: TemplateCreate) -> TemplateView:
        tenant = identity.tenant_id
        now = utcnow()
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
                await catalog.set_label(session, tenant, template.id, label, version)
            await session.flush()
            labels = await catalog.labels_of(session, tenant, template.id, version)
            return catalog.template_view(template, row, labels)

    async def get(
        self, tenant: str, name: str, version: int | None, label: str | None
    ) -> TemplateView:
        await self.defaults.ensure(tenant)
        async with self.db.session() as session:
            template = await catalog.find_template(session, tenant, name)
            row = await catalog.version_row(session, tenant, template, version, label)
            labels = await catalog.labels_of(session, tenant, template.id, row.version)
            return catalog.template_view(template, row, labels)

    async def list_templates(self, tenant: str, limit: int, offset: int) -> Page[TemplateSummary]:
        await self.defaults.ensure(tenant)
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
        await self.defaults.ensure(tenant)
        async with self.db.session() as session:
            template = await catalog.find_template(session, tenant, name)
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
        await self.defaults.ensure(tenant)
        try:
            async with self.db.session() as session:
                template = await catalog.find_template(session, tenant, name)
                await catalog.version_row(session, tenant, template, body.version, None)
                await catalog.set_label(session, tenant, template.id, body.label, body.version)
        except IntegrityError:
            raise Conflict(f"label {body.label!r} was changed concurrently; retry") from None
        await self.generations.bump(tenant, name)
        return LabelView(name=name, label=body.label, version=body.version)

    async def delete(self, tenant: str, name: str) -> str:
        """Every version and label of `name`; the id the template had (its cached renders are
        then stale)."""
        await self.defaults.ensure(tenant)
        async with self.db.session() as session:
            template = await catalog.find_template(session, tenant, name)
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
        await self.generations.bump(tenant, name)
        self.defaults.deleted(tenant, name)
        return template_id
