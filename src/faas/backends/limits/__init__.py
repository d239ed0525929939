"""Limit counters per tenant, team, user, key, model and agent run: `build_limit_store(settings,
kv)` uses Redis when the key/value store is Redis (sharing its
connection pool), else counters in this process."""

from __future__ import annotations

import time

from faas.backends.kv import KeyValueStore
from faas.backends.limits.base import (
    MAX_BUDGET_USD,
    MAX_RATE,
    MICRO,
    Caps,
    Clock,
    Level,
    LimitStore,
    Remaining,
    Reservation,
    Scope,
    Windows,
)
from faas.backends.limits.memory import MemoryLimitStore
from faas.shared.config import Settings

__all__ = [
    "MAX_BUDGET_USD",
    "MAX_RATE",
    "MICRO",
    "Caps",
    "Clock",
    "Level",
    "LimitStore",
    "MemoryLimitStore",
    "Remaining",
    "Reservation",
    "Scope",
    "Windows",
    "build_limit_store",
]


def build_limit_store(
    settings: Settings, kv: KeyValueStore, clock: Clock = time.time
) -> LimitStore:
    """Counters go where the key/value store is: shared by replicas exactly when it is."""
    if kv.backend == "redis":
        from faas.backends.kv.redis import RedisKeyValueStore
        from faas.backends.limits.redis import RedisLimitStore

        if isinstance(kv, RedisKeyValueStore):
            return RedisLimitStore(
                kv.client, on_error=settings.gateway_limits_on_store_error, clock=clock
            )
    return MemoryLimitStore(clock)
