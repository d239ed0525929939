"""An agent's long-term memory: texts embedded through the gateway, recalled by cosine
similarity to the task of a run (agents with `memory.long_term`)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete

from faas.services.agent_service.agents import AgentCatalog
from faas.services.agent_service.models import MemoryCreate, MemoryView
from faas.services.agent_service.tables import MemoryRow
from faas.services.gateway_service.client import GatewayClient
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound

RECALL_K = 3
RECALL_THRESHOLD = 0.3


class LongTermMemory:
    def __init__(self, db: Database, agents: AgentCatalog, gateway: GatewayClient) -> None:
        self.db = db
        self.agents = agents
        self.gateway = gateway

    async def remember(self, identity: Identity, agent_id: str, body: MemoryCreate) -> MemoryView:
        """Long-term memory shapes every later run: changing it takes admin."""
        await self.agents.load(identity, agent_id, "admin")
        vector = (await self._embed([body.text]))[0]
        async with self.db.session() as session:
            row = TenantRepository(session, MemoryRow, identity.tenant_id).add(
                id=new_id(),
                agent_id=agent_id,
                text=body.text,
                embedding=vector.tobytes(),
                meta=body.metadata,
                created_at=utcnow(),
            )
            return _memory_view(row)

    async def memories(self, identity: Identity, agent_id: str) -> list[MemoryView]:
        await self.agents.load(identity, agent_id, "read")
        return [_memory_view(r) for r in await self._rows(identity.tenant_id, agent_id)]

    async def recall(self, identity: Identity, agent_id: str, text: str) -> list[MemoryView]:
        """The memories closest to `text` (at most RECALL_K, none under RECALL_THRESHOLD)."""
        rows = await self._rows(identity.tenant_id, agent_id)
        if not rows:
            return []
        query = (await self._embed([text]))[0]
        usable = [r for r in rows if len(r.embedding) == query.nbytes]
        if not usable:
            return []
        matrix = np.vstack([np.frombuffer(r.embedding, dtype=np.float32) for r in usable])
        scores = matrix @ query
        order = np.argsort(-scores)[:RECALL_K]
        return [
            _memory_view(usable[i], score=round(float(scores[i]), 4))
            for i in order
            if scores[i] >= RECALL_THRESHOLD
        ]

    async def forget(self, identity: Identity, agent_id: str, memory_id: str) -> None:
        await self.agents.load(identity, agent_id, "admin")
        async with self.db.session() as session:
            result = await session.execute(
                delete(MemoryRow).where(
                    MemoryRow.tenant_id == identity.tenant_id,
                    MemoryRow.agent_id == agent_id,
                    MemoryRow.id == memory_id,
                )
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"memory {memory_id} not found")

    async def _rows(self, tenant: str, agent_id: str) -> list[MemoryRow]:
        async with self.db.session() as session:
            query = (
                TenantRepository(session, MemoryRow, tenant)
                .select(MemoryRow.agent_id == agent_id)
                .order_by(MemoryRow.created_at)
            )
            return list((await session.scalars(query)).all())

    async def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, so that a dot product is the cosine similarity."""
        matrix = (await self.gateway.embed(texts)).vectors
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        unit: np.ndarray = matrix / norms
        return unit


def _memory_view(row: MemoryRow, score: float | None = None) -> MemoryView:
    return MemoryView(
        id=row.id, text=row.text, metadata=row.meta, created_at=row.created_at, score=score
    )
