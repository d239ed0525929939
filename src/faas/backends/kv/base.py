"""The key/value store port: byte values, TTLs, glob scans, sets and counters."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Entry:
    value: bytes
    ttl_remaining_s: float | None


@dataclass(frozen=True, slots=True)
class Usage:
    keys: int
    bytes: int


@runtime_checkable
class KeyValueStore(Protocol):
    """Keys are opaque strings; patterns use glob syntax (`*`, `?`) as Redis' SCAN MATCH does.

    TTLs are seconds (`None` = no expiry). Expired keys are never returned by any method.
    """

    backend: str

    async def get(self, key: str) -> bytes | None: ...

    async def get_entry(self, key: str) -> Entry | None:
        """The value and its remaining TTL, in one round trip."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    async def set_if_absent(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        """Store only when the key does not exist; True when stored."""
        ...

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None: ...

    async def delete(self, *keys: str) -> int:
        """Delete keys; the number that existed."""
        ...

    async def scan(self, pattern: str) -> list[str]:
        """Every live key that matches the glob pattern."""
        ...

    async def delete_matching(self, pattern: str) -> int: ...

    async def usage(self, pattern: str) -> Usage:
        """Count and total value bytes of the live keys matching the pattern."""
        ...

    async def incr(self, key: str, amount: int = 1) -> int: ...

    async def sadd(self, key: str, *members: str) -> None: ...

    async def smembers(self, key: str) -> builtins.set[str]: ...

    async def srem(self, key: str, *members: str) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
