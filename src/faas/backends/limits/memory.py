"""In-process limit counters: one gateway instance (use Redis for several).

The check and the increments run with no await between them, which is atomic in asyncio.
"""

from __future__ import annotations

import time

from faas.backends.limits.base import (
    MICRO,
    Caps,
    Clock,
    Remaining,
    Reservation,
    Windows,
    micro_caps,
    refusal,
    remaining,
)

_PRUNE_AT = 10_000  # counters kept before those of past windows are dropped


class MemoryLimitStore:
    backend = "memory"

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._counters: dict[tuple[str, str, str], int] = {}

    def _get(self, tenant: str, kind: str, window: str) -> int:
        return self._counters.get((tenant, kind, window), 0)

    def _add(self, tenant: str, kind: str, window: str, amount: int) -> None:
        key = (tenant, kind, window)
        self._counters[key] = self._counters.get(key, 0) + amount

    async def reserve(
        self, tenant_id: str, caps: Caps, tokens: int, cost_usd: float
    ) -> Reservation:
        now = self._clock()
        windows = Windows.at(now)
        self._expire(windows)
        rpm, tpm, day, month = micro_caps(caps)
        cost = int(cost_usd * MICRO)
        # No await from here to the increments: the check and the reservation are atomic.
        if rpm >= 0 and self._get(tenant_id, "req", windows.minute) + 1 > rpm:
            raise refusal("rpm", windows, now)
        if tpm >= 0 and self._get(tenant_id, "tok", windows.minute) + tokens > tpm:
            raise refusal("tpm", windows, now)
        if day >= 0 and self._get(tenant_id, "day", windows.day) + cost > day:
            raise refusal("daily_budget", windows, now)
        if month >= 0 and self._get(tenant_id, "month", windows.month) + cost > month:
            raise refusal("monthly_budget", windows, now)
        self._add(tenant_id, "req", windows.minute, 1)
        self._add(tenant_id, "tok", windows.minute, tokens)
        self._add(tenant_id, "day", windows.day, cost)
        self._add(tenant_id, "month", windows.month, cost)
        return Reservation(tenant_id, windows, tokens, cost)

    async def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        w = reservation.windows
        cost = int(cost_usd * MICRO)
        self._add(reservation.tenant_id, "tok", w.minute, tokens - reservation.tokens)
        self._add(reservation.tenant_id, "day", w.day, cost - reservation.cost_micro)
        self._add(reservation.tenant_id, "month", w.month, cost - reservation.cost_micro)

    async def remaining(self, tenant_id: str, caps: Caps) -> Remaining:
        w = Windows.at(self._clock())
        return remaining(
            caps,
            req=self._get(tenant_id, "req", w.minute),
            tok=self._get(tenant_id, "tok", w.minute),
            day=self._get(tenant_id, "day", w.day),
            month=self._get(tenant_id, "month", w.month),
        )

    def _expire(self, windows: Windows) -> None:
        if len(self._counters) < _PRUNE_AT:
            return
        live = {windows.minute, windows.day, windows.month}
        self._counters = {k: v for k, v in self._counters.items() if k[2] in live}
