"""The generation counter of a template name: it moves on every new version, label move or
delete, and resolutions cached under an older generation are stale. It lives in the key/value
store, so with Redis a change on one replica invalidates every replica."""

from __future__ import annotations

from faas.backends.kv import KeyValueStore


class NameGenerations:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @staticmethod
    def _key(tenant: str, name: str) -> str:
        return f"faas-meta:{tenant}:prompt:{name}:generation"

    async def current(self, tenant: str, name: str) -> int:
        raw = await self.kv.get(self._key(tenant, name))
        return int(raw) if raw else 0

    async def bump(self, tenant: str, name: str) -> None:
        await self.kv.incr(self._key(tenant, name))
