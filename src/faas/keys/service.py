"""`ApiKeys`: the platform's API keys — create, list, read, rotate, revoke — and the resolver
the token verifier delegates `fk-` bearer tokens to, kept current on every replica by the
`keys.revoked.{tenant}` event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from faas.integrations.bus import Message, MessageBus, Subscription
from faas.integrations.codec import default_registry
from faas.integrations.events import EventPublisher
from faas.keys.access import (
    check_may_hand_over,
    granted_models,
    granted_scopes,
    require_read,
    require_write,
)
from faas.keys.models import KeyCreated, KeyRevoked, KeyView, NewKey
from faas.keys.resolver import CachedKeyResolver
from faas.keys.store import PREFIX_CHARS, KeyStore, key_hash, new_key
from faas.keys.tables import ApiKeyRow
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.contracts import Page
from faas.shared.database import Database
from faas.shared.exceptions import NotFound, ValidationFailed

log = logging.getLogger("faas.keys")

EVENTS = "keys"
REVOKED = "revoked"


def view_of(row: ApiKeyRow) -> KeyView:
    return KeyView(
        id=row.id,
        prefix=row.prefix,
        name=row.name,
        user=row.user_id,
        team=row.team,
        scopes=list(row.scopes),
        models=None if row.models is None else list(row.models),
        expires_at=row.expires_at,
        budget_usd=row.budget_usd,
        rpm=row.rpm,
        tpm=row.tpm,
        metadata=dict(row.key_metadata),
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _future_utc(value: datetime | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    try:
        moment = value.astimezone(now.tzinfo)
    except OverflowError as exc:
        raise ValidationFailed(
            "expires_at is out of range", details={"param": "expires_at"}
        ) from exc
    if moment <= now:
        raise ValidationFailed("expires_at is in the past", details={"param": "expires_at"})
    return moment


class ApiKeys:
    def __init__(
        self,
        db: Database,
        bus: MessageBus,
        events: EventPublisher,
        *,
        cache_ttl_s: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = KeyStore(db)
        self.resolver = CachedKeyResolver(self.store, ttl_s=cache_ttl_s, clock=clock)
        self.bus = bus
        self.events = events
        self.clock = clock
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.bus.subscribe(f"{EVENTS}.{REVOKED}.>", self._on_revoked)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    # -- use cases -------------------------------------------------------------------------

    async def create(self, identity: Identity, body: NewKey) -> KeyCreated:
        require_write(identity)
        now = self.clock()
        key = new_key()
        row = ApiKeyRow(
            id=new_id(),
            tenant_id=identity.tenant_id,
            key_hash=key_hash(key),
            prefix=key[:PREFIX_CHARS],
            name=body.name,
            user_id=body.user,
            team=body.team,
            scopes=granted_scopes(identity, body.scopes),
            models=granted_models(identity, body.models),
            expires_at=_future_utc(body.expires_at, now),
            budget_usd=body.budget_usd,
            rpm=body.rpm,
            tpm=body.tpm,
            key_metadata=body.metadata,
            created_by=identity.user_id,
            created_at=now,
            last_used_at=None,
            revoked_at=None,
        )
        await self.store.add(row)
        log.info("API key created", extra={"tenant_id": row.tenant_id, "key_id": row.id})
        return KeyCreated(key=key, **view_of(row).model_dump())

    async def list(self, identity: Identity, *, limit: int, offset: int) -> Page[KeyView]:
        require_read(identity)
        rows, total = await self.store.page(identity.tenant_id, limit=limit, offset=offset)
        return Page(items=[view_of(r) for r in rows], total=total, limit=limit, offset=offset)

    async def get(self, identity: Identity, key_id: str) -> KeyView:
        require_read(identity)
        row = await self.store.get(identity.tenant_id, key_id)
        if row is None:
            raise NotFound(f"API key {key_id!r} not found")
        return view_of(row)

    async def revoke(self, identity: Identity, key_id: str) -> KeyView:
        require_write(identity)
        row = await self.store.revoke(identity.tenant_id, key_id, self.clock())
        if row is None:
            raise NotFound(f"API key {key_id!r} not found")
        await self._revoked(row, "revoked")
        return view_of(row)

    async def rotate(self, identity: Identity, key_id: str) -> KeyCreated:
        """New material for a key, keeping its id and settings; the old key stops at once."""
        require_write(identity)
        current = await self.store.get(identity.tenant_id, key_id)
        if current is None or current.revoked_at is not None:
            raise NotFound(f"API key {key_id!r} not found")
        check_may_hand_over(identity, current.scopes, current.models)
        key = new_key()
        row = await self.store.replace(
            identity.tenant_id, key_id, hash_=key_hash(key), prefix=key[:PREFIX_CHARS]
        )
        if row is None:  # revoked meanwhile
            raise NotFound(f"API key {key_id!r} not found")
        await self._revoked(row, "rotated")
        return KeyCreated(key=key, **view_of(row).model_dump())

    # -- revocation on every replica -------------------------------------------------------

    async def _revoked(self, row: ApiKeyRow, reason: str) -> None:
        self.resolver.invalidate(row.id)
        event = KeyRevoked(key_id=row.id, reason=reason)
        await self.events.publish(EVENTS, REVOKED, row.tenant_id, event.model_dump())
        log.info("API key %s", reason, extra={"tenant_id": row.tenant_id, "key_id": row.id})

    async def _on_revoked(self, message: Message) -> None:
        codec = default_registry().find(message.headers.get("Content-Type", ""))
        codec = codec or self.events.codec
        try:
            body: Any = codec.decode(message.data)
            event = KeyRevoked.model_validate(body["data"])
        except Exception:
            # Which key is unknown: forgetting every cached key is the safe answer.
            log.warning("unreadable key revocation event; key cache cleared")
            self.resolver.clear()
            return
        self.resolver.invalidate(event.key_id)
