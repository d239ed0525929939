"""A burst of calls beyond the Redis pool's connections waits for a free one instead of failing:
redis-py's default pool raised "Too many connections", which a gateway replica answered as 503
"rate-limit store unavailable" under 300 concurrent calls (bench/scaleout.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from faas.backends.kv.redis import RedisKeyValueStore

pytestmark = pytest.mark.integration


async def test_a_burst_larger_than_the_pool_waits_for_connections(redis_url: str) -> None:
    store = RedisKeyValueStore.with_url(redis_url, max_connections=4)
    key = f"faas-test:burst:{uuid.uuid4().hex}"
    try:
        await store.set(key, b"v", ttl_s=60)
        assert await asyncio.gather(*(store.get(key) for _ in range(50))) == [b"v"] * 50
    finally:
        await store.delete(key)
        await store.close()
