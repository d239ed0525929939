"""Per-resource permissions on generated agents and tools (admin implies execute implies
read): granting and revoking, listing, and the checks the Agent service asks before letting
anyone but the owner use a generated resource. The owner is the user of the latest
generation of the resource."""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from faas.services.agent_service.client import AgentClient
from faas.services.prompt_generator_service.generations import latest_generation, latest_owners
from faas.services.prompt_generator_service.models import (
    LEVELS,
    Accessible,
    BulkCheck,
    CheckItem,
    CheckResult,
    Kind,
    Permission,
    PermissionChange,
    PermissionCheck,
    PermissionList,
    PermissionView,
)
from faas.services.prompt_generator_service.tables import GenerationRow, PermissionRow
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Forbidden, NotFound

log = logging.getLogger("faas.prompt_generator")


class ResourcePermissions:
    def __init__(self, db: Database, agents: AgentClient) -> None:
        self.db = db
        self.agents = agents

    async def change(self, identity: Identity, body: PermissionChange) -> PermissionList:
        tenant = identity.tenant_id
        exists, owner = await self._owner(tenant, body.resource_type, body.resource_id)
        if not exists:
            raise NotFound(f"{body.resource_type} {body.resource_id!r} not found")
        may_grant = identity.has_scope("admin") or (
            identity.user_id is not None and identity.user_id == owner
        )
        if not may_grant:
            raise Forbidden(
                "only the owner of the resource or an admin-scoped caller may change permissions"
            )
        try:
            await self._apply(identity, body)
        except IntegrityError:  # a concurrent identical grant: the grant exists either way
            log.info("concurrent grant of %s on %s", body.permission, body.resource_id)
        return await self.of_resource(tenant, body.resource_type, body.resource_id, owner)

    async def of_resource(
        self, tenant: str, kind: Kind, resource_id: str, owner: str | None = None
    ) -> PermissionList:
        async with self.db.session() as session:
            if owner is None:
                generation = await latest_generation(session, tenant, kind, resource_id)
                owner = generation.owner_user_id if generation else None
            rows = await self._grants(session, tenant, kind, resource_id)
        return PermissionList(
            resource_type=kind,
            resource_id=resource_id,
            owner_user_id=owner,
            grants=[
                PermissionView(
                    resource_type=kind,
                    resource_id=r.resource_id,
                    user_id=r.user_id,
                    permission=r.permission,
                    granted_by=r.granted_by,
                    created_at=r.created_at,
                )
                for r in rows
            ],
        )

    async def check(
        self, tenant: str, kind: Kind, resource_id: str, user_id: str, permission: Permission
    ) -> PermissionCheck:
        item = CheckItem(resource_type=kind, resource_id=resource_id, permission=permission)
        (result,) = await self.check_many(tenant, user_id, [item])
        return PermissionCheck(allowed=result.allowed, reason=result.reason)

    async def bulk_check(self, tenant: str, user_id: str, items: list[CheckItem]) -> BulkCheck:
        return BulkCheck(user_id=user_id, results=await self.check_many(tenant, user_id, items))

    async def check_many(
        self, tenant: str, user_id: str, items: list[CheckItem]
    ) -> list[CheckResult]:
        """The owner (of the latest generation of a resource) is always allowed; anyone else
        needs a grant at least as strong. Two queries whatever the number of items."""
        ids = sorted({i.resource_id for i in items})
        async with self.db.session() as session:
            generations = TenantRepository(session, GenerationRow, tenant).select(
                GenerationRow.resource_id.in_(ids)
            )
            owners = latest_owners(await session.scalars(generations))
            grants = TenantRepository(session, PermissionRow, tenant).select(
                PermissionRow.user_id == user_id, PermissionRow.resource_id.in_(ids)
            )
            best: dict[tuple[str, str], int] = {}
            for row in await session.scalars(grants):
                key = (row.resource_type, row.resource_id)
                best[key] = max(best.get(key, 0), LEVELS.get(row.permission, 0))
        results = []
        for item in items:
            key = (item.resource_type, item.resource_id)
            level = best.get(key, 0)
            if owners.get(key) == user_id:
                allowed, reason = True, "owner"
            elif level >= LEVELS[item.permission]:
                allowed, reason = True, f"granted {_permission_at(level)}"
            else:
                allowed, reason = False, f"no {item.permission} permission"
            results.append(CheckResult(**item.model_dump(), allowed=allowed, reason=reason))
        return results

    async def accessible(
        self, tenant: str, kind: Kind, user_id: str, permission: Permission
    ) -> Accessible:
        """Every resource of `kind` the user owns or holds `permission` on (used by the Agent
        service to filter lists in one call)."""
        async with self.db.session() as session:
            grants = TenantRepository(session, PermissionRow, tenant).select(
                PermissionRow.resource_type == kind,
                PermissionRow.user_id == user_id,
                PermissionRow.permission.in_(
                    [p for p, level in LEVELS.items() if level >= LEVELS[permission]]
                ),
            )
            ids = {row.resource_id for row in await session.scalars(grants)}
            repo = TenantRepository(session, GenerationRow, tenant)
            owned = repo.select(GenerationRow.kind == kind, GenerationRow.owner_user_id == user_id)
            candidates = {row.resource_id for row in await session.scalars(owned)}
            if candidates:
                # Owned means owner of the latest generation of that resource id.
                latest = repo.select(
                    GenerationRow.kind == kind, GenerationRow.resource_id.in_(sorted(candidates))
                )
                owners = latest_owners(await session.scalars(latest))
                ids |= {rid for (_, rid), owner in owners.items() if owner == user_id}
        return Accessible(
            resource_type=kind, user_id=user_id, permission=permission, resource_ids=sorted(ids)
        )

    async def _owner(self, tenant: str, kind: Kind, resource_id: str) -> tuple[bool, str | None]:
        """(the resource exists in this tenant, its owner when it was generated here)."""
        async with self.db.session() as session:
            generation = await latest_generation(session, tenant, kind, resource_id)
        if generation is not None:
            return True, generation.owner_user_id
        if kind == "agent":
            return await self._agent_exists(resource_id), None
        names = {t.name for t in await self.agents.list_tools()}
        return resource_id in names, None

    async def _agent_exists(self, agent_id: str) -> bool:
        try:
            await self.agents.get_agent(agent_id)
        except NotFound:
            return False
        return True

    async def _grants(
        self, session: AsyncSession, tenant: str, kind: Kind, resource_id: str
    ) -> list[PermissionRow]:
        repo = TenantRepository(session, PermissionRow, tenant)
        query = repo.select(
            PermissionRow.resource_type == kind, PermissionRow.resource_id == resource_id
        ).order_by(PermissionRow.created_at)
        return list(await session.scalars(query))

    async def _apply(self, identity: Identity, body: PermissionChange) -> None:
        tenant = identity.tenant_id
        async with self.db.session() as session:
            repo = TenantRepository(session, PermissionRow, tenant)
            existing = await session.scalar(
                repo.select(
                    PermissionRow.resource_type == body.resource_type,
                    PermissionRow.resource_id == body.resource_id,
                    PermissionRow.user_id == body.user_id,
                    PermissionRow.permission == body.permission,
                )
            )
            if body.action == "grant" and existing is None:
                repo.add(
                    id=new_id(),
                    resource_type=body.resource_type,
                    resource_id=body.resource_id,
                    user_id=body.user_id,
                    permission=body.permission,
                    granted_by=identity.user_id,
                    created_at=utcnow(),
                )
            elif body.action == "revoke" and existing is not None:
                await session.delete(existing)


def _permission_at(level: int) -> str:
    return next(p for p, value in LEVELS.items() if value == level)
