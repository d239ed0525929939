"""In-process limit counters: one gateway instance (use Redis for several).

The check and the increments run with no await between them, which is atomic in asyncio: every
scope of a reservation is checked before any is counted, so a refusal counts nothing anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from faas.backends.limits.base import (
    MICRO,
    Caps,
    Clock,
    Remaining,
    Reservation,
    Scope,
    Windows,
    micro_caps,
    refusal,
    remaining,
)

_PRUNE_AT = 10_000  # counters kept before those of past windows are dropped

_Counter = tuple[str, str, str, str, str]  # tenant, level, name, kind, window


def _key(scope: Scope, kind: str, window: str) -> _Counter:
    return (scope.tenant_id, scope.level, scope.name, kind, window)


class MemoryLimitStore:
    backend = "memory"

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._counters: dict[_Counter, int] = {}

    def _get(self, scope: Scope, kind: str, window: str) -> int:
        return self._counters.get(_key(scope, kind, window), 0)

    def _add(self, scope: Scope, kind: str, window: str, amount: int) -> None:
        key = _key(scope, kind, window)
        self._counters[key] = self._counters.get(key, 0) + amount

    async def reserve(
        self, tenant_id: str, caps: Caps, tokens: int, cost_usd: float
    ) -> Reservation:
        return await self.reserve_scopes([Scope(tenant_id, caps)], tokens, cost_usd)

    async def reserve_scopes(
        self, scopes: Sequence[Scope], tokens: int, cost_usd: float
    ) -> Reservation:
        now = self._clock()
        windows = Windows.at(now)
        self._expire(windows)
        cost = int(cost_usd * MICRO)
        # No await from here to the increments: the checks and the reservation are atomic.
        for scope in scopes:
            rpm, tpm, day, month = micro_caps(scope.caps)
            if rpm >= 0 and self._get(scope, "req", windows.minute) + 1 > rpm:
                raise refusal("rpm", windows, now, scope)
            if tpm >= 0 and self._get(scope, "tok", windows.minute) + tokens > tpm:
                raise refusal("tpm", windows, now, scope)
            if day >= 0 and self._get(scope, "day", windows.day) + cost > day:
                raise refusal("daily_budget", windows, now, scope)
            if month >= 0 and self._get(scope, "month", windows.month) + cost > month:
                raise refusal("monthly_budget", windows, now, scope)
        for scope in scopes:
            self._add(scope, "req", windows.minute, 1)
            self._add(scope, "tok", windows.minute, tokens)
            self._add(scope, "day", windows.day, cost)
            self._add(scope, "month", windows.month, cost)
        return Reservation(scopes[0].tenant_id, windows, tokens, cost, tuple(scopes))

    async def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        w = reservation.windows
        cost = int(cost_usd * MICRO) - reservation.cost_micro
        for scope in reservation.scopes:
            self._add(scope, "tok", w.minute, tokens - reservation.tokens)
            self._add(scope, "day", w.day, cost)
            self._add(scope, "month", w.month, cost)

    async def remaining(self, tenant_id: str, caps: Caps) -> Remaining:
        scope = Scope(tenant_id, caps)
        w = Windows.at(self._clock())
        return remaining(
            caps,
            req=self._get(scope, "req", w.minute),
            tok=self._get(scope, "tok", w.minute),
            day=self._get(scope, "day", w.day),
            month=self._get(scope, "month", w.month),
        )

    def _expire(self, windows: Windows) -> None:
        if len(self._counters) < _PRUNE_AT:
            return
        live = {windows.minute, windows.day, windows.month}
        self._counters = {k: v for k, v in self._counters.items() if k[4] in live}
