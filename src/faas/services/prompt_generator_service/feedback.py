"""Ratings and feedback on generated agents and tools: each rating attaches to the latest
generation of the resource; the stats count every rating of the resource."""

from __future__ import annotations

from collections import Counter

from faas.services.prompt_generator_service.generations import latest_generation
from faas.services.prompt_generator_service.models import (
    FeedbackItem,
    FeedbackStats,
    Kind,
    RateRequest,
)
from faas.services.prompt_generator_service.tables import FeedbackRow
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound

RECENT_FEEDBACK = 10


class GenerationFeedback:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def rate(
        self, identity: Identity, kind: Kind, resource_id: str, body: RateRequest
    ) -> FeedbackItem:
        async with self.db.session() as session:
            generation = await latest_generation(session, identity.tenant_id, kind, resource_id)
            if generation is None:
                raise NotFound(f"no generated {kind} {resource_id!r}")
            row = TenantRepository(session, FeedbackRow, identity.tenant_id).add(
                id=new_id(),
                generation_id=generation.id,
                kind=kind,
                resource_id=resource_id,
                user_id=identity.user_id,
                rating=body.rating,
                feedback=body.feedback,
                created_at=utcnow(),
            )
            return _feedback_item(row)

    async def stats(self, tenant: str, kind: Kind, resource_id: str) -> FeedbackStats:
        async with self.db.session() as session:
            if await latest_generation(session, tenant, kind, resource_id) is None:
                raise NotFound(f"no generated {kind} {resource_id!r}")
            repo = TenantRepository(session, FeedbackRow, tenant)
            rows = list(
                await session.scalars(
                    repo.select(
                        FeedbackRow.kind == kind, FeedbackRow.resource_id == resource_id
                    ).order_by(FeedbackRow.created_at.desc())
                )
            )
        counts = Counter(r.rating for r in rows)
        return FeedbackStats(
            count=len(rows),
            average=round(sum(r.rating for r in rows) / len(rows), 3) if rows else None,
            distribution={str(n): counts.get(n, 0) for n in range(1, 6)},
            recent=[_feedback_item(r) for r in rows[:RECENT_FEEDBACK]],
        )


def _feedback_item(row: FeedbackRow) -> FeedbackItem:
    return FeedbackItem(
        id=row.id,
        rating=row.rating,
        feedback=row.feedback,
        user_id=row.user_id,
        created_at=row.created_at,
    )
