"""In-process key/value store: bounded LRU by entries and bytes, lazy + periodic TTL expiry."""

from __future__ import annotations

import builtins
import fnmatch
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache

from faas.backends.kv.base import Entry, Usage

_Value = bytes | set[str]


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    # Glob semantics as Redis SCAN MATCH: *, ? and [...].
    return re.compile(fnmatch.translate(pattern))


def _size(value: _Value) -> int:
    if isinstance(value, bytes):
        return len(value)
    return sum(len(m) for m in value)


class MemoryKeyValueStore:
    backend = "memory"

    def __init__(self, *, max_entries: int = 100_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._data: OrderedDict[str, tuple[_Value, float | None]] = OrderedDict()
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.evictions = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str, now: float | None = None) -> tuple[_Value, float | None] | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires = item[1]
        if expires is not None and expires <= (now if now is not None else time.monotonic()):
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return item

    def _remove(self, key: str) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self._bytes -= _size(item[0]) + len(key)
        return True

    def _put(self, key: str, value: _Value, expires: float | None) -> None:
        self._remove(key)
        self._data[key] = (value, expires)
        self._bytes += _size(value) + len(key)
        while self._data and (len(self._data) > self.max_entries or self._bytes > self.max_bytes):
            oldest = next(iter(self._data))
            self._remove(oldest)
            self.evictions += 1

    @staticmethod
    def _expiry(ttl_s: float | None) -> float | None:
        return None if ttl_s is None else time.monotonic() + ttl_s

    async def get(self, key: str) -> bytes | None:
        item = self._live(key)
        return item[0] if item is not None and isinstance(item[0], bytes) else None

    async def get_entry(self, key: str) -> Entry | None:
        now = time.monotonic()
        item = self._live(key, now)
        if item is None or not isinstance(item[0], bytes):
            return None
        return Entry(item[0], None if item[1] is None else max(0.0, item[1] - now))

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._put(key, value, self._expiry(ttl_s))

    async def set_if_absent(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        self._put(key, value, self._expiry(ttl_s))
        return True

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(k) for k in keys]

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        expires = self._expiry(ttl_s)
        for key, value in items.items():
            self._put(key, value, expires)

    async def delete(self, *keys: str) -> int:
        now = time.monotonic()
        return sum(1 for k in keys if self._live(k, now) is not None and self._remove(k))

    async def scan(self, pattern: str) -> list[str]:
        regex = _compile(pattern)
        now = time.monotonic()
        matches = [k for k in list(self._data) if regex.match(k)]
        return [k for k in matches if self._live(k, now) is not None]

    async def delete_matching(self, pattern: str) -> int:
        keys = await self.scan(pattern)
        return sum(1 for k in keys if self._remove(k))

    async def usage(self, pattern: str) -> Usage:
        values = [self._data[k][0] for k in await self.scan(pattern)]
        strings = [v for v in values if isinstance(v, bytes)]  # sets are not values
        return Usage(keys=len(strings), bytes=sum(len(v) for v in strings))

    async def incr(self, key: str, amount: int = 1) -> int:
        # Stored as decimal bytes, as Redis does, so GET/MGET read counters alike.
        item = self._live(key)
        current = int(item[0]) if item is not None and isinstance(item[0], bytes) else 0
        value = current + amount
        self._put(key, str(value).encode(), item[1] if item is not None else None)
        return value

    async def sadd(self, key: str, *members: str) -> None:
        item = self._live(key)
        current = set(item[0]) if item is not None and isinstance(item[0], set) else set()
        current.update(members)
        self._put(key, current, item[1] if item is not None else None)

    async def smembers(self, key: str) -> builtins.set[str]:
        item = self._live(key)
        return set(item[0]) if item is not None and isinstance(item[0], set) else set()

    async def srem(self, key: str, *members: str) -> None:
        item = self._live(key)
        if item is None or not isinstance(item[0], set):
            return
        remaining = item[0] - set(members)
        if remaining:
            self._put(key, remaining, item[1])
        else:
            self._remove(key)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()
        self._bytes = 0
