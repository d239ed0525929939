"""Resolving a presented API key into the caller's `Identity`, through a short in-process cache.

The database is the truth; each replica caches what it resolved for `ttl_s` (30 s by default)
so the request path reads SQL about once per key and half-minute. A revocation (delete or
rotation) drops the key from the revoking replica's cache at once and publishes
`keys.revoked.{tenant}`, on which every other replica drops it too: the TTL only bounds how
long a replica that missed the event (NATS away) can keep accepting a revoked key.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from faas.keys.store import KeyStore, key_hash, well_formed
from faas.keys.tables import ApiKeyRow
from faas.shared.clock import utcnow
from faas.shared.context import PLATFORM_PREFIX, Identity
from faas.shared.exceptions import Unauthenticated

INVALID = "invalid or revoked API key"


@dataclass(frozen=True, slots=True)
class _Entry:
    identity: Identity | None  # None: no working key has this hash
    expires_at: float | None  # the key's own expiry (epoch seconds)
    until: float  # monotonic time this entry stops being trusted


def identity_of(row: ApiKeyRow, key: str) -> Identity:
    """The identity a key stands for: its tenant, user and scopes, as a JWT would carry them,
    plus the key's id, name, team, allowed models and caps. Platform scopes are never granted to a
    key (creation refuses them); they are dropped here too."""
    return Identity(
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        scopes=frozenset(s for s in row.scopes if not s.startswith(PLATFORM_PREFIX)),
        token=key,
        key_id=row.id,
        key_name=row.name,
        team=row.team,
        models=None if row.models is None else frozenset(row.models),
        key_rpm=row.rpm,
        key_tpm=row.tpm,
        key_budget_usd=row.budget_usd,
    )


class CachedKeyResolver:
    """The `faas.shared.auth.KeyResolver` of a replica."""

    def __init__(
        self,
        store: KeyStore,
        *,
        ttl_s: float = 30.0,
        size: int = 4096,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.size = size
        self.clock = clock
        self.monotonic = monotonic
        self._cache: OrderedDict[str, _Entry] = OrderedDict()  # by the presented key
        self._key_of: dict[str, str] = {}  # key id -> the cached key
        # Bumped by every invalidation: a lookup that started before one does not cache its
        # answer, which may predate the revocation.
        self._epoch = 0

    async def resolve(self, key: str) -> Identity:
        # Keyed by the key itself, as the JWT cache is by token: hashing on every request
        # tripled the cost of a cached resolution (8.6 us against 2.9 us for a cached JWT).
        entry = self._cache.get(key)
        if entry is None or entry.until <= self.monotonic():
            if not well_formed(key):
                raise Unauthenticated(INVALID)
            entry = await self._load(key)
        if entry.identity is None:
            raise Unauthenticated(INVALID)
        if entry.expires_at is not None and entry.expires_at <= time.time():
            raise Unauthenticated("API key expired")
        return entry.identity

    def invalidate(self, key_id: str) -> None:
        """Forget the key with this id (revoked or rotated)."""
        self._epoch += 1
        key = self._key_of.pop(key_id, None)
        if key is not None:
            self._cache.pop(key, None)

    def clear(self) -> None:
        self._epoch += 1
        self._cache.clear()
        self._key_of.clear()

    async def _load(self, key: str) -> _Entry:
        epoch = self._epoch
        row = await self.store.use(key_hash(key), self.clock())
        entry = _Entry(
            identity=None if row is None else identity_of(row, key),
            expires_at=row.expires_at.timestamp() if row and row.expires_at else None,
            until=self.monotonic() + self.ttl_s,
        )
        if epoch == self._epoch:
            self._remember(key, entry)
        return entry

    def _remember(self, key: str, entry: _Entry) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        if entry.identity is not None and entry.identity.key_id is not None:
            self._key_of[entry.identity.key_id] = key
        while len(self._cache) > self.size:
            dropped_key, dropped = self._cache.popitem(last=False)
            key_id = dropped.identity.key_id if dropped.identity is not None else None
            if key_id is not None and self._key_of.get(key_id) == dropped_key:
                del self._key_of[key_id]
