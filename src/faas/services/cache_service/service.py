"""Cache use cases. Every key lives under `faas:{tenant}:{namespace}:{key}`; tag indexes and
hit/miss counters live under `faas-meta:{tenant}:...` so they never count as cached data."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from faas.backends.kv import KeyValueStore
from faas.integrations.events import EventPublisher
from faas.services.cache_service.models import (
    CacheCleared,
    CacheInvalidated,
    CacheInvalidateRequest,
    CacheItem,
    CacheMGetRequest,
    CacheMSetRequest,
    CacheSetRequest,
    CacheStats,
    CacheStored,
)
from faas.shared.config import Settings
from faas.shared.exceptions import PayloadTooLarge, ValidationFailed

log = logging.getLogger("faas.cache")

STATS_FLUSH_S = 1.0


@dataclass(frozen=True, slots=True)
class Lookup:
    key: str
    namespace: str
    raw: bytes | None
    ttl_remaining_s: float | None

    @property
    def found(self) -> bool:
        return self.raw is not None


def data_key(tenant: str, namespace: str, key: str) -> str:
    return f"faas:{tenant}:{namespace}:{key}"


def tag_key(tenant: str, tag: str) -> str:
    return f"faas-meta:{tenant}:tags:{tag}"


def counter_key(tenant: str, which: str) -> str:
    return f"faas-meta:{tenant}:stats:{which}"


class CacheService:
    name = "cache"

    def __init__(self, settings: Settings, kv: KeyValueStore, events: EventPublisher) -> None:
        self.kv = kv
        self.events = events
        self.max_value_bytes = settings.cache_max_value_bytes
        self.default_ttl_s = settings.cache_default_ttl_s
        # Hit/miss counts are batched in memory and flushed, so a GET costs one round trip.
        self._pending: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="cache-stats-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_stats()

    # -- use cases -------------------------------------------------------------------------

    async def get(self, tenant: str, key: str, namespace: str) -> Lookup:
        entry = await self.kv.get_entry(data_key(tenant, namespace, key))
        self._pending[tenant][0 if entry is not None else 1] += 1
        if entry is None:
            return Lookup(key, namespace, None, None)
        return Lookup(key, namespace, entry.value, entry.ttl_remaining_s)

    async def set(self, tenant: str, request: CacheSetRequest) -> CacheStored:
        raw = self._encode(request.value)
        ttl = request.ttl_s if request.ttl_s is not None else self.default_ttl_s
        full_key = data_key(tenant, request.namespace, request.key)
        await self.kv.set(full_key, raw, ttl)
        await self._tag(tenant, full_key, request.tags)
        return CacheStored(key=request.key, namespace=request.namespace, bytes=len(raw), ttl_s=ttl)

    async def delete(self, tenant: str, key: str, namespace: str) -> bool:
        return await self.kv.delete(data_key(tenant, namespace, key)) > 0

    async def mget(self, tenant: str, request: CacheMGetRequest) -> list[Lookup]:
        keys = [data_key(tenant, request.namespace, k) for k in request.keys]
        values = await self.kv.mget(keys)
        counts = self._pending[tenant]
        found = sum(1 for v in values if v is not None)
        counts[0] += found
        counts[1] += len(values) - found
        return [
            Lookup(k, request.namespace, v, None) for k, v in zip(request.keys, values, strict=True)
        ]

    async def mset(self, tenant: str, request: CacheMSetRequest) -> int:
        by_ttl: dict[float | None, dict[str, bytes]] = defaultdict(dict)
        tagged: list[tuple[str, CacheItem]] = []
        for item in request.items:
            full_key = data_key(tenant, request.namespace, item.key)
            ttl = item.ttl_s if item.ttl_s is not None else self.default_ttl_s
            by_ttl[ttl][full_key] = self._encode(item.value)
            if item.tags:
                tagged.append((full_key, item))
        for ttl, items in by_ttl.items():
            await self.kv.mset(items, ttl)
        for full_key, item in tagged:
            await self._tag(tenant, full_key, item.tags)
        return len(request.items)

    async def invalidate(self, tenant: str, request: CacheInvalidateRequest) -> int:
        removed = 0
        if request.pattern is not None:
            removed += await self.kv.delete_matching(
                data_key(tenant, request.namespace, request.pattern)
            )
        for tag in request.tags or []:
            members = await self.kv.smembers(tag_key(tenant, tag))
            # The tag index only ever holds this tenant's keys; check anyway, it is cheap.
            own = [m for m in members if m.startswith(f"faas:{tenant}:")]
            if own:
                removed += await self.kv.delete(*own)
            await self.kv.delete(tag_key(tenant, tag))
        event = CacheInvalidated(
            namespace=request.namespace,
            pattern=request.pattern,
            tags=request.tags or [],
            removed=removed,
        )
        await self.events.publish("cache", "invalidated", tenant, event.model_dump())
        return removed

    async def clear(self, tenant: str) -> int:
        removed = await self.kv.delete_matching(f"faas:{tenant}:*")
        await self.kv.delete_matching(tag_key(tenant, "*"))
        cleared = CacheCleared(removed=removed)
        await self.events.publish("cache", "invalidated", tenant, cleared.model_dump())
        return removed

    async def stats(self, tenant: str) -> CacheStats:
        await self.flush_stats()
        hits_raw, misses_raw = await self.kv.mget(
            [counter_key(tenant, "hits"), counter_key(tenant, "misses")]
        )
        hits = int(hits_raw or 0)
        misses = int(misses_raw or 0)
        usage = await self.kv.usage(f"faas:{tenant}:*")
        total = hits + misses
        return CacheStats(
            tenant_id=tenant,
            hits=hits,
            misses=misses,
            hit_rate=round(hits / total, 4) if total else 0.0,
            keys=usage.keys,
            bytes=usage.bytes,
        )

    # -- internals -------------------------------------------------------------------------

    def _encode(self, value: Any) -> bytes:
        try:
            raw = orjson.dumps(value)
        except TypeError as exc:
            raise ValidationFailed(f"value is not JSON-serialisable: {exc}") from exc
        if len(raw) > self.max_value_bytes:
            raise PayloadTooLarge(
                f"value is {len(raw)} bytes; the limit is {self.max_value_bytes}",
                details={"max_value_bytes": self.max_value_bytes, "bytes": len(raw)},
            )
        return raw

    async def _tag(self, tenant: str, full_key: str, tags: list[str]) -> None:
        for tag in tags:
            await self.kv.sadd(tag_key(tenant, tag), full_key)

    async def flush_stats(self) -> None:
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0])
        for tenant, (hits, misses) in pending.items():
            if hits:
                await self.kv.incr(counter_key(tenant, "hits"), hits)
            if misses:
                await self.kv.incr(counter_key(tenant, "misses"), misses)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_FLUSH_S)
            try:
                await self.flush_stats()
            except Exception:
                log.warning("cache stats flush failed; will retry", exc_info=True)
