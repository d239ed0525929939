"""The model registry: models, their numbered versions and the aliases pointing at them
(MLflow-style), and resolving which version a request is served by."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from faas.services.ml_service.artifacts import artifact_path
from faas.services.ml_service.models import ModelView, VersionView
from faas.services.ml_service.tables import ModelAliasRow, ModelRow, ModelVersionRow
from faas.shared.clock import utcnow
from faas.shared.context import new_id
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound

CHAMPION = "champion"
RESOLVE_TTL_S = 5.0
REGISTER_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Resolved:
    """A servable model version: its registry facts and where its artifact is."""

    model: str
    row: ModelVersionRow
    path: Path

    @property
    def model_id(self) -> str:
        return self.row.model_id

    @property
    def version(self) -> int:
        return self.row.version


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A trained version to register; the registry numbers it."""

    id: str
    task: str
    algorithm: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    input_schema: list[dict[str, Any]]
    output: dict[str, Any]
    profile: dict[str, Any]
    lineage: dict[str, Any]
    artifact_sha256: str
    artifact_types: list[str]
    job_id: str


class ModelRegistry:
    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root
        # Resolution is on every prediction's path: cached briefly per process, and dropped at
        # once when this process moves an alias or registers a version.
        self._resolved: dict[tuple[str, str, str], tuple[float, Resolved]] = {}

    async def page(self, tenant: str, limit: int, offset: int) -> Page[ModelView]:
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, ModelRow, tenant).page(
                order_by=ModelRow.name, limit=limit, offset=offset
            )
            items = [await _model_view(session, r) for r in rows]
        return Page[ModelView](items=items, total=total, limit=limit, offset=offset)

    async def get(self, tenant: str, name: str) -> ModelView:
        async with self.db.session() as session:
            return await _model_view(session, await _require_model(session, tenant, name))

    async def task_of(self, tenant: str, name: str) -> str | None:
        """The task of an existing model (a new version must keep it); None for a new model."""
        async with self.db.session() as session:
            model = await _find_model(session, tenant, name)
            return None if model is None else model.task

    async def set_alias(self, tenant: str, name: str, alias: str, version: int) -> ModelView:
        async with self.db.session() as session:
            model = await _require_model(session, tenant, name)
            await _version_row(session, model, version)
            current = await _alias_row(session, model, alias)
            if current is None:
                TenantRepository(session, ModelAliasRow, tenant).add(
                    id=new_id(),
                    model_id=model.id,
                    alias=alias,
                    version=version,
                    updated_at=utcnow(),
                )
            else:
                current.version = version
                current.updated_at = utcnow()
            model.updated_at = utcnow()
            await session.flush()
            view = await _model_view(session, model)
        self._forget(tenant, name)
        return view

    async def add_version(self, tenant: str, name: str, new: NewVersion) -> int:
        """Add the version (and the model, the first time); its number. Jobs training the same
        model at once race for the next number; the unique constraints settle it and the loser
        takes the next number instead of training again."""
        for attempt in range(1, REGISTER_ATTEMPTS + 1):
            try:
                version = await self._insert_version(tenant, name, new)
            except IntegrityError:
                if attempt == REGISTER_ATTEMPTS:
                    raise
            else:
                self._forget(tenant, name)
                return version
        raise AssertionError("unreachable")  # pragma: no cover

    async def _insert_version(self, tenant: str, name: str, new: NewVersion) -> int:
        async with self.db.session() as session:
            model = await _find_model(session, tenant, name)
            now = utcnow()
            if model is None:
                model = TenantRepository(session, ModelRow, tenant).add(
                    id=new_id(),
                    name=name,
                    task=new.task,
                    description="",
                    created_at=now,
                    updated_at=now,
                )
                await session.flush()
            model.updated_at = now
            latest = await session.scalar(
                select(func.max(ModelVersionRow.version)).where(
                    ModelVersionRow.model_id == model.id
                )
            )
            version = int(latest or 0) + 1
            TenantRepository(session, ModelVersionRow, tenant).add(
                model_id=model.id, version=version, created_at=now, **asdict(new)
            )
            await session.flush()
        return version

    async def resolve(
        self, tenant: str, name: str, *, version: int | None = None, alias: str | None = None
    ) -> Resolved:
        """The version asked for: explicit, by alias, else `champion`, else the latest."""
        key = (tenant, name, f"v{version}" if version else f"a{alias or ''}")
        cached = self._resolved.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < RESOLVE_TTL_S:
            return cached[1]
        async with self.db.session() as session:
            model = await _require_model(session, tenant, name)
            if version is None:
                version = await _served_version(session, model, alias)
            found = await _version_row(session, model, version)
        resolved = Resolved(name, found, artifact_path(self.root, tenant, found.id))
        self._resolved[key] = (now, resolved)
        return resolved

    def _forget(self, tenant: str, name: str) -> None:
        for key in [k for k in self._resolved if k[0] == tenant and k[1] == name]:
            del self._resolved[key]


async def _find_model(session: AsyncSession, tenant: str, name: str) -> ModelRow | None:
    result = await session.execute(
        TenantRepository(session, ModelRow, tenant).select(ModelRow.name == name)
    )
    row: ModelRow | None = result.scalar_one_or_none()
    return row


async def _require_model(session: AsyncSession, tenant: str, name: str) -> ModelRow:
    model = await _find_model(session, tenant, name)
    if model is None:
        raise NotFound(f"model {name} not found")
    return model


async def _alias_row(session: AsyncSession, model: ModelRow, alias: str) -> ModelAliasRow | None:
    row: ModelAliasRow | None = (
        await session.execute(
            select(ModelAliasRow).where(
                ModelAliasRow.model_id == model.id, ModelAliasRow.alias == alias
            )
        )
    ).scalar_one_or_none()
    return row


async def _served_version(session: AsyncSession, model: ModelRow, alias: str | None) -> int:
    """The version behind `alias` (404 when unset), or behind `champion`, else the latest."""
    row = await _alias_row(session, model, alias or CHAMPION)
    if row is not None:
        return row.version
    if alias is not None:
        raise NotFound(f"model {model.name} has no alias {alias!r}")
    latest = await session.scalar(
        select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == model.id)
    )
    if latest is None:
        raise NotFound(f"model {model.name} has no versions")
    return int(latest)


async def _version_row(session: AsyncSession, model: ModelRow, version: int) -> ModelVersionRow:
    row: ModelVersionRow | None = (
        await session.execute(
            select(ModelVersionRow).where(
                ModelVersionRow.model_id == model.id, ModelVersionRow.version == version
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"model {model.name} has no version {version}")
    return row


async def _model_view(session: AsyncSession, model: ModelRow) -> ModelView:
    versions = (
        (
            await session.execute(
                select(ModelVersionRow)
                .where(ModelVersionRow.model_id == model.id)
                .order_by(ModelVersionRow.version.desc())
            )
        )
        .scalars()
        .all()
    )
    aliases = (
        (await session.execute(select(ModelAliasRow).where(ModelAliasRow.model_id == model.id)))
        .scalars()
        .all()
    )
    by_version: dict[int, list[str]] = {}
    for alias in aliases:
        by_version.setdefault(alias.version, []).append(alias.alias)
    return ModelView(
        name=model.name,
        task=model.task,
        aliases={a.alias: a.version for a in aliases},
        latest_version=versions[0].version if versions else None,
        versions=[_version_view(v, sorted(by_version.get(v.version, []))) for v in versions],
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def _version_view(row: ModelVersionRow, aliases: list[str]) -> VersionView:
    return VersionView(
        version=row.version,
        task=row.task,
        algorithm=row.algorithm,
        params=row.params,
        metrics=row.metrics,
        input_schema=row.input_schema,
        output=row.output,
        lineage=row.lineage,
        artifact_sha256=row.artifact_sha256,
        aliases=aliases,
        job_id=row.job_id,
        created_at=row.created_at,
    )
