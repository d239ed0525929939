"""The record of what was generated: one row per generation, naming the resource it created
and its owner (the user who asked). Feedback and permissions hang off the latest generation of
a resource."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from faas.services.prompt_generator_service.models import Kind
from faas.services.prompt_generator_service.tables import GenerationRow
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.database import Database, TenantRepository


async def record_generation(
    db: Database,
    identity: Identity,
    kind: Kind,
    prompt: str,
    spec: dict[str, Any],
    resource_id: str,
) -> str:
    """The id of the new generation row."""
    generation_id = new_id()
    async with db.session() as session:
        TenantRepository(session, GenerationRow, identity.tenant_id).add(
            id=generation_id,
            kind=kind,
            prompt=prompt,
            spec=spec,
            resource_id=resource_id,
            owner_user_id=identity.user_id,
            created_at=utcnow(),
        )
    return generation_id


async def latest_generation(
    session: AsyncSession, tenant: str, kind: Kind, resource_id: str
) -> GenerationRow | None:
    repo = TenantRepository(session, GenerationRow, tenant)
    query = repo.select(
        GenerationRow.kind == kind, GenerationRow.resource_id == resource_id
    ).order_by(GenerationRow.created_at.desc())
    row: GenerationRow | None = (await session.scalars(query)).first()
    return row


def latest_owners(rows: Iterable[GenerationRow]) -> dict[tuple[str, str], str | None]:
    """(kind, resource id) → the owner of its latest generation."""
    owners: dict[tuple[str, str], tuple[datetime, str | None]] = {}
    for row in rows:
        key = (row.kind, row.resource_id)
        if key not in owners or row.created_at >= owners[key][0]:
            owners[key] = (row.created_at, row.owner_user_id)
    return {key: owner for key, (_, owner) in owners.items()}
