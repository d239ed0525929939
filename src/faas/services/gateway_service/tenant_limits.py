"""Per-tenant limit overrides: defaults from settings, overrides in the database, read through
a short in-process cache so the request path never waits on SQL."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from faas.backends.limits import MAX_BUDGET_USD, MAX_RATE
from faas.services.gateway_service.limits import TenantLimits
from faas.shared.clock import utcnow
from faas.shared.database import Base, Database, UTCDateTime

log = logging.getLogger("faas.gateway.limits")


class TenantLimitsRow(Base):
    __tablename__ = "gateway_tenant_limits"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TenantLimitsStore:
    def __init__(self, db: Database, defaults: TenantLimits, *, ttl_s: float = 10.0) -> None:
        self.db = db
        self.defaults = defaults
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, TenantLimits]] = {}
        self._loading: dict[str, asyncio.Future[TenantLimits]] = {}
        self._writes: dict[str, int] = {}  # per tenant: a load that raced a set() is not cached

    async def get(self, tenant_id: str) -> TenantLimits:
        cached = self._cache.get(tenant_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        # One read per tenant when the entry expires, however many requests are waiting: at
        # concurrency 32 every in-flight request used to miss together (a profile showed it).
        loading = self._loading.get(tenant_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(tenant_id))
            self._loading[tenant_id] = loading
            loading.add_done_callback(lambda done: self._loaded(tenant_id, done))
        return await asyncio.shield(loading)

    def _loaded(self, tenant_id: str, done: asyncio.Future[TenantLimits]) -> None:
        self._loading.pop(tenant_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone (clients disconnected)

    async def _load(self, tenant_id: str) -> TenantLimits:
        started, writes = time.monotonic(), self._writes.get(tenant_id, 0)
        async with self.db.session() as session:
            row = await session.get(TenantLimitsRow, tenant_id)
            limits = self.defaults if row is None else _stored(tenant_id, row.limits)
        if self._writes.get(tenant_id, 0) == writes:
            self._cache[tenant_id] = (started + self.ttl_s, limits)
        return limits

    async def set(self, tenant_id: str, limits: TenantLimits, *, by: str | None) -> TenantLimits:
        self._writes[tenant_id] = self._writes.get(tenant_id, 0) + 1
        async with self.db.session() as session:
            row = await session.get(TenantLimitsRow, tenant_id)
            values = limits.model_dump(mode="json")
            if row is None:
                session.add(
                    TenantLimitsRow(
                        tenant_id=tenant_id, limits=values, updated_by=by, updated_at=utcnow()
                    )
                )
            else:
                row.limits, row.updated_by, row.updated_at = values, by, utcnow()
        # Again after the commit: a load that began during the write read the old row.
        self._writes[tenant_id] += 1
        self._cache[tenant_id] = (time.monotonic() + self.ttl_s, limits)
        return limits


def _stored(tenant_id: str, values: dict[str, Any]) -> TenantLimits:
    """A saved row; one written before the limits were bounded is brought inside the bounds
    (a huge budget becomes the largest allowed), so the tenant keeps being served."""
    try:
        return TenantLimits.model_validate(values)
    except ValidationError:
        log.warning("stored gateway limits out of bounds; clamped", extra={"tenant": tenant_id})
    clamped: dict[str, Any] = dict(values)
    for name, ceiling in (
        ("rpm", MAX_RATE),
        ("tpm", MAX_RATE),
        ("daily_budget_usd", MAX_BUDGET_USD),
        ("monthly_budget_usd", MAX_BUDGET_USD),
    ):
        value = clamped.get(name)
        if isinstance(value, int | float) and not value <= ceiling:  # NaN too
            clamped[name] = ceiling
    return TenantLimits.model_validate(clamped)
