"""Teams inside a tenant (table `gateway_teams`, migration 0015): created, read, changed and
deleted by the tenant's admins; read on the request path through a short per-process cache of
each tenant's teams, so admission never waits on SQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from faas.services.gateway_service.limits import LevelCaps
from faas.services.gateway_service.teams_models import NewTeam, TeamPatch, TeamView
from faas.shared.clock import utcnow
from faas.shared.context import ADMIN, Identity, new_id
from faas.shared.contracts import Page
from faas.shared.database import Base, Database, TenantOwned, UTCDateTime
from faas.shared.exceptions import Conflict, Forbidden, NotFound


class TeamRow(TenantOwned, Base):
    __tablename__ = "gateway_teams"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    members: Mapped[list[str]] = mapped_column(JSON)
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    denied_models: Mapped[list[str]] = mapped_column(JSON)
    # `metadata` is taken by SQLAlchemy's declarative base.
    team_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True, slots=True)
class Team:
    """A team as admission reads it."""

    id: str
    name: str
    caps: LevelCaps
    allowed_models: frozenset[str] | None
    denied_models: frozenset[str]


@dataclass(frozen=True, slots=True)
class TenantTeams:
    """A tenant's teams, found by name or id, and by member."""

    by_handle: dict[str, Team] = field(default_factory=dict)
    by_member: dict[str, Team] = field(default_factory=dict)

    def of(self, identity: Identity) -> Team | None:
        """The caller's team: the one its key or token names, else the one it is a member of."""
        if identity.team is not None:
            return self.by_handle.get(identity.team)
        if identity.user_id is not None:
            return self.by_member.get(identity.user_id)
        return None


def _team(row: TeamRow) -> Team:
    return Team(
        id=row.id,
        name=row.name,
        caps=LevelCaps.model_validate(row.limits),
        allowed_models=None if row.allowed_models is None else frozenset(row.allowed_models),
        denied_models=frozenset(row.denied_models),
    )


def view_of(row: TeamRow) -> TeamView:
    return TeamView(
        id=row.id,
        name=row.name,
        members=list(row.members),
        limits=LevelCaps.model_validate(row.limits),
        allowed_models=None if row.allowed_models is None else list(row.allowed_models),
        denied_models=list(row.denied_models),
        metadata=dict(row.team_metadata),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _admin(identity: Identity) -> str:
    if not identity.has_scope(ADMIN):
        raise Forbidden("managing teams needs the 'admin' scope")
    return identity.tenant_id


class Teams:
    """The teams API and the request path's cached view of it (`ttl_s` per tenant, like the
    tenant limits: another replica sees a change within that time)."""

    def __init__(self, db: Database, *, ttl_s: float = 10.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, TenantTeams]] = {}
        self._loading: dict[str, asyncio.Future[TenantTeams]] = {}
        self._writes: dict[str, int] = {}

    # -- the request path -----------------------------------------------------------------

    async def of_tenant(self, tenant_id: str) -> TenantTeams:
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        loading = self._loading.get(tenant_id)
        if loading is None:  # one read per tenant however many requests wait for it
            loading = asyncio.ensure_future(self._load(tenant_id))
            self._loading[tenant_id] = loading
            loading.add_done_callback(lambda done: self._loaded(tenant_id, done))
        return await asyncio.shield(loading)

    def _loaded(self, tenant_id: str, done: asyncio.Future[TenantTeams]) -> None:
        self._loading.pop(tenant_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    async def _load(self, tenant_id: str) -> TenantTeams:
        started, writes = time.monotonic(), self._writes.get(tenant_id, 0)
        async with self.db.session() as session:
            rows = (
                await session.scalars(select(TeamRow).where(TeamRow.tenant_id == tenant_id))
            ).all()
            teams = TenantTeams()
            for row in rows:
                team = _team(row)
                teams.by_handle[row.id] = teams.by_handle[row.name] = team
                for member in row.members:
                    teams.by_member[member] = team
        if self._writes.get(tenant_id, 0) == writes:  # a load that raced a write is not kept
            self._cache[tenant_id] = (started + self.ttl_s, teams)
        return teams

    def _changed(self, tenant_id: str) -> None:
        self._writes[tenant_id] = self._writes.get(tenant_id, 0) + 1
        self._cache.pop(tenant_id, None)

    # -- the API --------------------------------------------------------------------------

    async def create(self, identity: Identity, body: NewTeam) -> TeamView:
        tenant = _admin(identity)
        now = utcnow()
        row = TeamRow(
            id=new_id(),
            tenant_id=tenant,
            name=body.name,
            members=list(dict.fromkeys(body.members)),
            limits=body.limits.model_dump(mode="json"),
            allowed_models=body.allowed_models,
            denied_models=body.denied_models,
            team_metadata=body.metadata,
            created_by=identity.user_id,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self.db.session() as session:
                await self._check_members(session, tenant, row.members, row.id)
                session.add(row)
        except IntegrityError as exc:
            raise Conflict(
                f"a team named {body.name!r} exists", details={"name": body.name}
            ) from exc
        finally:
            self._changed(tenant)
        return view_of(row)

    async def list(self, identity: Identity, *, limit: int, offset: int) -> Page[TeamView]:
        tenant = _admin(identity)
        where = TeamRow.tenant_id == tenant
        async with self.db.session() as session:
            total = await session.scalar(select(func.count()).select_from(TeamRow).where(where))
            rows = (
                await session.scalars(
                    select(TeamRow)
                    .where(where)
                    .order_by(TeamRow.created_at, TeamRow.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        items = [view_of(r) for r in rows]
        return Page(items=items, total=int(total or 0), limit=limit, offset=offset)

    async def get(self, identity: Identity, team_id: str) -> TeamView:
        tenant = _admin(identity)
        async with self.db.session() as session:
            return view_of(await self._row(session, tenant, team_id))

    async def update(self, identity: Identity, team_id: str, patch: TeamPatch) -> TeamView:
        tenant = _admin(identity)
        try:
            async with self.db.session() as session:
                row = await self._row(session, tenant, team_id)
                if patch.members is not None:
                    members = list(dict.fromkeys(patch.members))
                    await self._check_members(session, tenant, members, row.id)
                    row.members = members
                if patch.limits is not None:
                    row.limits = patch.limits.model_dump(mode="json")
                if "allowed_models" in patch.model_fields_set:
                    row.allowed_models = patch.allowed_models
                if patch.denied_models is not None:
                    row.denied_models = patch.denied_models
                if patch.metadata is not None:
                    row.team_metadata = patch.metadata
                row.updated_at = utcnow()
                view = view_of(row)
        finally:
            self._changed(tenant)
        return view

    async def delete(self, identity: Identity, team_id: str) -> TeamView:
        tenant = _admin(identity)
        try:
            async with self.db.session() as session:
                row = await self._row(session, tenant, team_id)
                view = view_of(row)
                await session.delete(row)
        finally:
            self._changed(tenant)
        return view

    @staticmethod
    async def _row(session: Any, tenant: str, team_id: str) -> TeamRow:
        row = await session.get(TeamRow, team_id)
        if row is None or row.tenant_id != tenant:
            raise NotFound(f"no team {team_id!r}", details={"team_id": team_id})
        return row  # type: ignore[no-any-return]

    @staticmethod
    async def _check_members(
        session: Any, tenant: str, members: Sequence[str], team_id: str
    ) -> None:
        """A user is in one team at most: its caps and model rules must be unambiguous."""
        if not members:
            return
        others = await session.scalars(
            select(TeamRow).where(TeamRow.tenant_id == tenant, TeamRow.id != team_id)
        )
        wanted: set[str] = set(members)
        for other in others:
            taken = wanted.intersection(other.members)
            if taken:
                raise Conflict(
                    f"user {sorted(taken)[0]!r} is already a member of team {other.name!r}",
                    details={"team_id": other.id, "members": sorted(taken)},
                )
