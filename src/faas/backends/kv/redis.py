"""Redis key/value store (redis-py asyncio, one connection pool)."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from faas.backends.kv.base import Entry, Usage
from faas.shared.exceptions import DependencyUnavailable

_SCAN_BATCH = 1000
P = ParamSpec("P")
R = TypeVar("R")


def unavailable_on_connection_error(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis being unreachable is a 503 for the caller, not an unexpected 500."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise DependencyUnavailable("the key/value store (Redis) is unreachable") from exc

    return wrapper


def _ms(ttl_s: float | None) -> int | None:
    return None if ttl_s is None else max(1, int(ttl_s * 1000))


class RedisKeyValueStore:
    backend = "redis"

    def __init__(self, client: Redis) -> None:
        self._client = client

    @classmethod
    def with_url(
        cls, url: str, *, max_connections: int = 64, pool_timeout_s: float = 10.0
    ) -> RedisKeyValueStore:
        # A burst beyond `max_connections` waits for a free connection. redis-py's default
        # pool raises "Too many connections" instead: a gateway replica answered 503 ("rate-
        # limit store unavailable") to most of 300 concurrent calls (bench/scaleout.py).
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s, decode_responses=False
        )
        return cls(Redis.from_pool(pool))

    @property
    def client(self) -> Redis:
        """The connection pool, for stores that keep their own data beside the key/value
        entries on the same Redis (the limit counters and their Lua script)."""
        return self._client

    @unavailable_on_connection_error
    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self._client.get(key))

    @unavailable_on_connection_error
    async def get_entry(self, key: str) -> Entry | None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
        if value is None:
            return None
        return Entry(value, None if pttl is None or pttl < 0 else pttl / 1000)

    @unavailable_on_connection_error
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._client.set(key, value, px=_ms(ttl_s))

    @unavailable_on_connection_error
    async def set_if_absent(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        return bool(await self._client.set(key, value, px=_ms(ttl_s), nx=True))

    @unavailable_on_connection_error
    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return cast(list[bytes | None], await self._client.mget(list(keys)))

    @unavailable_on_connection_error
    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        if not items:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            for key, value in items.items():
                pipe.set(key, value, px=_ms(ttl_s))
            await pipe.execute()

    @unavailable_on_connection_error
    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return int(await self._client.delete(*keys))

    @unavailable_on_connection_error
    async def scan(self, pattern: str) -> list[str]:
        keys: list[str] = []
        async for key in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
            keys.append(key.decode() if isinstance(key, bytes) else str(key))
        return keys

    @unavailable_on_connection_error
    async def delete_matching(self, pattern: str) -> int:
        removed = 0
        batch: list[str] = []
        async for key in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
            batch.append(key.decode() if isinstance(key, bytes) else str(key))
            if len(batch) >= _SCAN_BATCH:
                removed += await self.delete(*batch)
                batch = []
        return removed + await self.delete(*batch)

    @unavailable_on_connection_error
    async def usage(self, pattern: str) -> Usage:
        keys = await self.scan(pattern)
        if not keys:
            return Usage(0, 0)
        # Only string values count (sets, like the semantic cache's index, are not values), and
        # STRLEN of a set is a WRONGTYPE error: type first, then lengths of the strings.
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            kinds: list[Any] = await pipe.execute()
        strings = [k for k, kind in zip(keys, kinds, strict=True) if kind in (b"string", "string")]
        if not strings:
            return Usage(0, 0)
        async with self._client.pipeline(transaction=False) as pipe:
            for key in strings:
                pipe.strlen(key)
            lengths: list[Any] = await pipe.execute()
        return Usage(len(strings), sum(int(n) for n in lengths))

    @unavailable_on_connection_error
    async def incr(self, key: str, amount: int = 1) -> int:
        return int(await self._client.incrby(key, amount))

    @unavailable_on_connection_error
    async def sadd(self, key: str, *members: str) -> None:
        if members:
            await self._client.sadd(key, *members)

    @unavailable_on_connection_error
    async def smembers(self, key: str) -> builtins.set[str]:
        raw = await self._client.smembers(key)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in raw}

    @unavailable_on_connection_error
    async def srem(self, key: str, *members: str) -> None:
        if members:
            await self._client.srem(key, *members)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.aclose()
