"""The key material and the rows that hold it.

A key is `fk-` and 32 random bytes (`secrets.token_urlsafe`); the database keeps its SHA-256
and an 11-character prefix for display. A plain fast hash is enough here, unlike for
passwords: the key has 256 bits of entropy, so no dictionary or brute-force search over
hashes can find it, and a slow hash (bcrypt, argon2) would only add milliseconds to every
cache miss while preventing the indexed lookup by hash that resolution needs.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from faas.keys.tables import ApiKeyRow
from faas.shared.auth import API_KEY_PREFIX
from faas.shared.database import Database

KEY_BYTES = 32
PREFIX_CHARS = len(API_KEY_PREFIX) + 8
KEY_RE = re.compile(rf"^{re.escape(API_KEY_PREFIX)}[A-Za-z0-9_-]{{43}}$")


def new_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def well_formed(key: str) -> bool:
    """Whether `key` has the shape `new_key` makes: anything else is refused unread."""
    return bool(KEY_RE.match(key))


class KeyStore:
    """Rows of `api_keys`. Every method but `use` is scoped to one tenant."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, row: ApiKeyRow) -> ApiKeyRow:
        async with self.db.session() as session:
            session.add(row)
        return row

    async def page(
        self, tenant_id: str, *, limit: int, offset: int
    ) -> tuple[Sequence[ApiKeyRow], int]:
        """The tenant's keys that still work, newest first."""
        where = (ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.revoked_at.is_(None))
        async with self.db.session() as session:
            total = await session.scalar(select(func.count()).select_from(ApiKeyRow).where(*where))
            query = (
                select(ApiKeyRow)
                .where(*where)
                .order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.id)
                .limit(limit)
                .offset(offset)
            )
            rows = (await session.execute(query)).scalars().all()
        return rows, int(total or 0)

    async def get(self, tenant_id: str, key_id: str) -> ApiKeyRow | None:
        async with self.db.session() as session:
            query = select(ApiKeyRow).where(
                ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.id == key_id
            )
            return (await session.execute(query)).scalar_one_or_none()

    async def revoke(self, tenant_id: str, key_id: str, now: datetime) -> ApiKeyRow | None:
        """Revoke a working key; None if the tenant has no such working key."""
        return await self._change(tenant_id, key_id, revoked_at=now)

    async def replace(
        self, tenant_id: str, key_id: str, *, hash_: str, prefix: str
    ) -> ApiKeyRow | None:
        """Give a working key new material: the old key stops resolving with this statement."""
        return await self._change(tenant_id, key_id, key_hash=hash_, prefix=prefix)

    async def use(self, hash_: str, now: datetime) -> ApiKeyRow | None:
        """The working key with this hash, its `last_used_at` set in the same statement."""
        statement = (
            update(ApiKeyRow)
            .where(ApiKeyRow.key_hash == hash_, ApiKeyRow.revoked_at.is_(None))
            .values(last_used_at=now)
            .returning(ApiKeyRow)
        )
        async with self.db.session() as session:
            return (await session.execute(statement)).scalar_one_or_none()

    async def _change(self, tenant_id: str, key_id: str, **values: Any) -> ApiKeyRow | None:
        statement = (
            update(ApiKeyRow)
            .where(
                ApiKeyRow.tenant_id == tenant_id,
                ApiKeyRow.id == key_id,
                ApiKeyRow.revoked_at.is_(None),
            )
            .values(**values)
            .returning(ApiKeyRow)
        )
        async with self.db.session() as session:
            return (await session.execute(statement)).scalar_one_or_none()
