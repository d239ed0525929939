"""Queries on the prompt tables within one session: a template by name, the version a selector
names, the labels of a version, moving a label. Shared by the version use cases and by
resolution for rendering, so a selector means the same thing everywhere."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from faas.services.prompt_service.models import DEFAULT_LABEL, LATEST, TemplateView
from faas.services.prompt_service.tables import (
    PromptLabelRow,
    PromptTemplateRow,
    PromptVersionRow,
)
from faas.shared.clock import utcnow
from faas.shared.database import TenantRepository
from faas.shared.exceptions import NotFound


async def find_template(session: AsyncSession, tenant: str, name: str) -> PromptTemplateRow:
    row: PromptTemplateRow | None = await session.scalar(
        TenantRepository(session, PromptTemplateRow, tenant).select(PromptTemplateRow.name == name)
    )
    if row is None:
        raise NotFound(f"prompt {name!r} not found")
    return row


async def version_row(
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


async def labels_of(
    session: AsyncSession, tenant: str, template_id: str, version: int
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


async def set_label(
    session: AsyncSession, tenant: str, template_id: str, label: str, version: int
) -> None:
    repo = TenantRepository(session, PromptLabelRow, tenant)
    existing = await session.scalar(
        repo.select(PromptLabelRow.template_id == template_id, PromptLabelRow.label == label)
    )
    if existing is None:
        repo.add(template_id=template_id, label=label, version=version, updated_at=utcnow())
    else:
        existing.version, existing.updated_at = version, utcnow()


def template_view(
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
