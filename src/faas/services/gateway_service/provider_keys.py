"""Bring your own key: a tenant's own provider credentials, used for its calls instead of the
deployment's. Stored sealed (shared/secrets.py, FAAS_SECRETS_KEY) with the tenant and target as
associated data; read through a per-tenant in-process cache so the request path never waits
on SQL; never returned (a view shows the last four characters) and never logged. A change
publishes `gateway.provider_keys_changed.{tenant}`, on which every replica drops that tenant's
cached keys at once; the TTL bounds only a replica that missed the event (NATS away).

A key targets a provider (`openai`: every deployment of that provider) or a model of the
routing table (`gpt-4o`: that model's deployments); the model's key wins."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy import LargeBinary, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from faas.integrations.bus import Message, Subscription
from faas.integrations.events import EventPublisher
from faas.services.gateway_service.routing_table import Deployment, ModelConfig, ProviderName
from faas.shared.clock import utcnow
from faas.shared.context import TENANT_HEADER
from faas.shared.database import Base, Database, UTCDateTime
from faas.shared.exceptions import Conflict, DependencyUnavailable, NotFound
from faas.shared.secrets import SealError, SecretBox

CHANGED = "provider_keys_changed"  # gateway.provider_keys_changed.{tenant}: no key in the event
NOT_CONFIGURED = (
    "provider keys need FAAS_SECRETS_KEY (the key ring that seals them at rest); "
    "it is not set on this deployment"
)


class ProviderKeyRow(Base):
    __tablename__ = "gateway_provider_keys"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(160), primary_key=True)  # provider:x | model:y
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    suffix: Mapped[str] = mapped_column(String(8))
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProviderKeyTarget(BaseModel):
    """What a key is for: exactly one of `provider` or `model`."""

    provider: ProviderName | None = None
    model: str | None = Field(None, pattern=r"^[A-Za-z0-9._:/-]{1,128}$")

    @model_validator(mode="after")
    def _one_target(self) -> ProviderKeyTarget:
        if (self.provider is None) == (self.model is None):
            raise ValueError("give exactly one of provider or model")
        return self

    @property
    def key(self) -> str:
        return f"provider:{self.provider}" if self.provider else f"model:{self.model}"


class ProviderKeyBody(ProviderKeyTarget):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"provider": "openai", "api_key": "sk-your-own-key"}]}
    )

    api_key: SecretStr = Field(min_length=8, max_length=1024)

    @model_validator(mode="after")
    def _printable(self) -> ProviderKeyBody:
        value = self.api_key.get_secret_value()
        if not value.isascii() or not value.isprintable() or value.strip() != value:
            raise ValueError("api_key must be printable ASCII without surrounding spaces")
        return self


class ProviderKeyView(BaseModel):
    provider: str | None
    model: str | None
    key_suffix: str = Field(description="The key's last four characters, for recognition.")
    created_by: str | None
    created_at: datetime
    updated_at: datetime


def _view(row: ProviderKeyRow) -> ProviderKeyView:
    kind, _, name = row.target.partition(":")
    return ProviderKeyView(
        provider=name if kind == "provider" else None,
        model=name if kind == "model" else None,
        key_suffix="…" + row.suffix,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _context(tenant_id: str, target: str) -> bytes:
    return f"faas.provider_key\0{tenant_id}\0{target}".encode()


class TenantKeys:
    """One tenant's keys, and the deployments derived from them (built once, then reused)."""

    def __init__(self, keys: dict[str, SecretStr]) -> None:
        self.keys = keys
        self._derived: dict[tuple[str, int], tuple[Deployment, Deployment]] = {}

    def deployment(self, model: ModelConfig, deployment: Deployment) -> Deployment:
        """`deployment` with this tenant's key, or `deployment` itself when it has none."""
        if not self.keys:
            return deployment
        slot = (model.name, id(deployment))
        found = self._derived.get(slot)
        if found is not None and found[0] is deployment:
            return found[1]
        key = self.keys.get(f"model:{model.name}") or self.keys.get(
            f"provider:{deployment.provider}"
        )
        derived = deployment
        if key is not None:
            derived = deployment.model_copy(update={"api_key": key})
            derived._missing_key = None  # the tenant's key replaces an unset variable
        self._derived[slot] = (deployment, derived)
        return derived


_NO_KEYS = TenantKeys({})


class ProviderKeys:
    """The store and the per-tenant cache. Without a key ring it stores nothing and serves
    every tenant with the deployments' own keys."""

    def __init__(
        self,
        db: Database,
        ring: SecretStr | None,
        *,
        events: EventPublisher | None = None,
        ttl_s: float = 30.0,
    ) -> None:
        self.db = db
        self.box = SecretBox(ring.get_secret_value()) if ring else None
        self.events = events
        self.ttl_s = ttl_s
        self._subscription: Subscription | None = None
        self._cache: dict[str, tuple[float, TenantKeys]] = {}
        self._loading: dict[str, asyncio.Future[TenantKeys]] = {}
        self._writes: dict[str, int] = {}  # per tenant: a load that raced a write is not cached

    async def start(self) -> None:
        if self.box is not None and self.events is not None:
            subject = f"gateway.{CHANGED}.>"
            self._subscription = await self.events.bus.subscribe(subject, self._on_changed)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    def _require(self) -> SecretBox:
        if self.box is None:
            # 409, not 503: retrying cannot help until an operator sets the variable.
            raise Conflict(NOT_CONFIGURED, details={"setting": "FAAS_SECRETS_KEY"})
        return self.box

    async def put(self, tenant_id: str, body: ProviderKeyBody, by: str | None) -> ProviderKeyView:
        box = self._require()
        target = body.key
        secret = body.api_key.get_secret_value()
        sealed = box.seal(secret.encode(), _context(tenant_id, target))
        now = utcnow()
        async with self.db.session(writes=True) as session:
            row = await session.get(ProviderKeyRow, (tenant_id, target))
            if row is None:
                row = ProviderKeyRow(tenant_id=tenant_id, target=target, created_at=now)
                session.add(row)
            row.sealed, row.suffix, row.created_by, row.updated_at = sealed, secret[-4:], by, now
            view = _view(row)
        await self._changed(tenant_id)
        return view

    async def list(self, tenant_id: str) -> list[ProviderKeyView]:
        self._require()
        async with self.db.session() as session:
            rows = await session.scalars(
                select(ProviderKeyRow)
                .where(ProviderKeyRow.tenant_id == tenant_id)
                .order_by(ProviderKeyRow.target)
            )
            return [_view(row) for row in rows]

    async def delete(self, tenant_id: str, target: ProviderKeyTarget) -> None:
        self._require()
        async with self.db.session(writes=True) as session:
            result: Any = await session.execute(
                delete(ProviderKeyRow).where(
                    ProviderKeyRow.tenant_id == tenant_id, ProviderKeyRow.target == target.key
                )
            )
        await self._changed(tenant_id)
        if not result.rowcount:
            raise NotFound(f"no provider key for {target.key}", details={"target": target.key})

    async def rotate(self) -> int:
        """Re-seal every stored key under the ring's first key; the number re-sealed."""
        box = self._require()
        resealed = 0
        async with self.db.session(writes=True) as session:
            for row in await session.scalars(select(ProviderKeyRow)):
                if box.needs_rotation(row.sealed):
                    row.sealed = box.reseal(row.sealed, _context(row.tenant_id, row.target))
                    resealed += 1
        return resealed

    async def for_tenant(self, tenant_id: str) -> TenantKeys:
        """The tenant's keys, from a cache refreshed every `ttl_s` (one read per tenant)."""
        if self.box is None:
            return _NO_KEYS
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        loading = self._loading.get(tenant_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(tenant_id, self.box))
            self._loading[tenant_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(tenant_id, None))
        return await asyncio.shield(loading)

    async def _changed(self, tenant_id: str) -> None:
        self._forget(tenant_id)
        if self.events is not None:
            await self.events.publish("gateway", CHANGED, tenant_id, {})

    async def _on_changed(self, message: Message) -> None:
        tenant_id = message.headers.get(TENANT_HEADER) or message.subject.rsplit(".", 1)[-1]
        self._forget(tenant_id)

    def _forget(self, tenant_id: str) -> None:
        self._writes[tenant_id] = self._writes.get(tenant_id, 0) + 1
        self._cache.pop(tenant_id, None)

    async def _load(self, tenant_id: str, box: SecretBox) -> TenantKeys:
        writes = self._writes.get(tenant_id, 0)
        async with self.db.session() as session:
            rows = list(
                await session.scalars(
                    select(ProviderKeyRow).where(ProviderKeyRow.tenant_id == tenant_id)
                )
            )
        try:
            keys = {
                row.target: SecretStr(
                    box.open(row.sealed, _context(row.tenant_id, row.target)).decode()
                )
                for row in rows
            }
        except SealError as exc:
            # Never fall back to the platform's key: the tenant expects to be billed on its own.
            raise DependencyUnavailable(
                "a stored provider key of this tenant cannot be opened with FAAS_SECRETS_KEY "
                "(was its key dropped from the ring before `rotate`?)",
                details={"setting": "FAAS_SECRETS_KEY"},
            ) from exc
        found = TenantKeys(keys)
        if self._writes.get(tenant_id, 0) == writes:
            self._cache[tenant_id] = (time.monotonic() + self.ttl_s, found)
        return found
