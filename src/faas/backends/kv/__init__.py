"""Key/value stores: `build_kv(settings)` picks Redis when FAAS_REDIS_URL is set, else memory."""

from __future__ import annotations

from faas.backends.kv.base import Entry, KeyValueStore, Usage
from faas.backends.kv.memory import MemoryKeyValueStore
from faas.shared.config import Settings

__all__ = ["Entry", "KeyValueStore", "MemoryKeyValueStore", "Usage", "build_kv"]


def build_kv(settings: Settings) -> KeyValueStore:
    if settings.redis_url:
        from faas.backends.kv.redis import RedisKeyValueStore

        return RedisKeyValueStore.with_url(settings.redis_url)
    return MemoryKeyValueStore(
        max_entries=settings.cache_max_entries, max_bytes=settings.cache_max_bytes
    )
