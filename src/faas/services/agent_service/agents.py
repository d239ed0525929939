"""Agents of a tenant: create, read, list, change and delete their specs, and who may do so
(agents the Prompt Generator made follow its permissions, see access.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, or_
from sqlalchemy.ext.asyncio import AsyncSession

from faas.services.agent_service.access import (
    GENERATED,
    GeneratorPermissions,
    Use,
    sees_everything,
)
from faas.services.agent_service.models import AgentSpec, AgentUpdate, AgentView, Origin
from faas.services.agent_service.tables import AgentRow
from faas.services.agent_service.tool_catalog import ToolCatalog
from faas.services.gateway_service.client import GatewayClient
from faas.services.prompt_generator_service.models import Permission
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound, ValidationFailed
from faas.shared.input_rules import validated


async def agent_row(session: AsyncSession, tenant: str, agent_id: str) -> AgentRow:
    """The agent, read in `session`; 404 outside the tenant."""
    return _found(await TenantRepository(session, AgentRow, tenant).get(agent_id), agent_id)


def _found(row: AgentRow | None, agent_id: str) -> AgentRow:
    if row is None:
        raise NotFound(f"agent {agent_id} not found")
    return row


class AgentCatalog:
    def __init__(
        self,
        db: Database,
        access: GeneratorPermissions,
        gateway: GatewayClient,
        tools: ToolCatalog,
    ) -> None:
        self.db = db
        self.access = access
        self.gateway = gateway
        self.tools = tools

    async def create(
        self, identity: Identity, spec: AgentSpec, origin: Origin | None = None
    ) -> AgentView:
        await self._validate(identity, spec)
        now = utcnow()
        async with self.db.session() as session:
            row = TenantRepository(session, AgentRow, identity.tenant_id).add(
                id=new_id(),
                name=spec.name,
                description=spec.description,
                spec=spec.model_dump(mode="json"),
                created_by=identity.user_id,
                origin=origin,
                created_at=now,
                updated_at=now,
            )
            return _agent_view(row)

    async def get(self, identity: Identity, agent_id: str) -> AgentView:
        return _agent_view(await self.load(identity, agent_id, "read"))

    async def list_visible(self, identity: Identity, limit: int, offset: int) -> Page[AgentView]:
        """The tenant's agents, without the generated ones this caller may not read."""
        visible = await self._visible(identity)
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, AgentRow, identity.tenant_id).page(
                *visible, order_by=AgentRow.created_at.desc(), limit=limit, offset=offset
            )
            return Page[AgentView](
                items=[_agent_view(r) for r in rows], total=total, limit=limit, offset=offset
            )

    async def update(self, identity: Identity, agent_id: str, body: AgentUpdate) -> AgentView:
        row = await self.load(identity, agent_id, "admin")
        merged = validated(
            AgentSpec, {**row.spec, **body.model_dump(exclude_unset=True, mode="json")}
        )
        await self._validate(identity, merged)
        async with self.db.session() as session:
            row = await agent_row(session, identity.tenant_id, agent_id)
            row.spec, row.name, row.description = (
                merged.model_dump(mode="json"),
                merged.name,
                merged.description,
            )
            row.updated_at = utcnow()
            return _agent_view(row)

    async def delete(self, identity: Identity, agent_id: str) -> None:
        await self.load(identity, agent_id, "admin")
        async with self.db.session() as session:
            await session.delete(await agent_row(session, identity.tenant_id, agent_id))

    async def row(self, tenant: str, agent_id: str) -> AgentRow:
        """The agent, whoever asks (404 outside the tenant): the caller checks permissions.
        Read in Core, once per run: a row that belongs to no session."""
        found = await self.db.fetch_by_id(AgentRow, tenant, agent_id)
        return _found(AgentRow(**found) if found is not None else None, agent_id)

    async def load(self, identity: Identity, agent_id: str, permission: Permission) -> AgentRow:
        """The agent (404 outside the caller's tenant), if the caller holds `permission`."""
        row = await self.row(identity.tenant_id, agent_id)
        await self.access.require(identity, Use("agent", agent_id, permission), row)
        return row

    async def _visible(self, identity: Identity) -> list[Any]:
        """SQL conditions for the agents this caller may read. The generator is asked for the
        caller's grants only when the tenant has generated agents made by someone else."""
        if sees_everything(identity):
            return []
        user = identity.user_id
        mine = AgentRow.created_by == user if user else false()
        visible = or_(AgentRow.origin.is_(None), mine)
        not_mine = or_(AgentRow.created_by.is_(None), AgentRow.created_by != user)
        async with self.db.session() as session:
            query = TenantRepository(session, AgentRow, identity.tenant_id).select(
                AgentRow.origin == GENERATED, not_mine
            )
            found = await session.scalar(query.with_only_columns(AgentRow.id).limit(1))
        if found is None:
            return [visible]
        granted = await self.access.accessible(identity, "agent", "read")
        return [or_(visible, AgentRow.id.in_(sorted(granted)))] if granted else [visible]

    async def _validate(self, identity: Identity, spec: AgentSpec) -> None:
        known = await self.tools.names(identity.tenant_id)
        unknown = sorted(set(spec.tools) - known)
        if unknown:
            raise ValidationFailed(
                f"unknown tools: {', '.join(unknown)}", details={"known_tools": sorted(known)}
            )
        models = await self.gateway.chat_models()
        if spec.model not in models:
            raise ValidationFailed(
                f"unknown model {spec.model!r}", details={"known_models": sorted(models)}
            )


def _agent_view(row: AgentRow) -> AgentView:
    return AgentView.model_validate(
        {
            **row.spec,
            "id": row.id,
            "created_by": row.created_by,
            "origin": row.origin,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )
