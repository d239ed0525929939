"""Limit counters in Redis, shared by every gateway replica; check-and-reserve is one Lua script."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Literal

from redis.asyncio import Redis

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
from faas.shared.exceptions import DependencyUnavailable

log = logging.getLogger("faas.gateway.limits")

# Counters outlive their window a little, so a late reconcile still finds them.
_MINUTE_TTL_S, _DAY_TTL_S, _MONTH_TTL_S = 120, 2 * 86400, 40 * 86400

# Every scope of a reservation in one EVAL: all are checked before any is counted.
# KEYS: per scope, its minute-requests, minute-tokens, day-cost and month-cost counters
# ARGV: tokens, cost, minute_ttl, day_ttl, month_ttl, then per scope rpm, tpm, day_cap, month_cap
# Returns 'ok', or '<scope number, from 1>:<the cap it would pass>'.
_RESERVE = """
local function over(key, cap, add)
  if tonumber(cap) < 0 then return false end
  return (tonumber(redis.call('GET', key) or '0') + tonumber(add)) > tonumber(cap)
end
local n = #KEYS / 4
for i = 0, n - 1 do
  local k, a = i * 4, 5 + i * 4
  if over(KEYS[k + 1], ARGV[a + 1], 1) then return (i + 1) .. ':rpm' end
  if over(KEYS[k + 2], ARGV[a + 2], ARGV[1]) then return (i + 1) .. ':tpm' end
  if over(KEYS[k + 3], ARGV[a + 3], ARGV[2]) then return (i + 1) .. ':daily_budget' end
  if over(KEYS[k + 4], ARGV[a + 4], ARGV[2]) then return (i + 1) .. ':monthly_budget' end
end
for i = 0, n - 1 do
  local k = i * 4
  redis.call('INCRBY', KEYS[k + 1], 1)
  redis.call('INCRBY', KEYS[k + 2], ARGV[1])
  redis.call('INCRBY', KEYS[k + 3], ARGV[2])
  redis.call('INCRBY', KEYS[k + 4], ARGV[2])
  redis.call('EXPIRE', KEYS[k + 1], ARGV[3])
  redis.call('EXPIRE', KEYS[k + 2], ARGV[3])
  redis.call('EXPIRE', KEYS[k + 3], ARGV[4])
  redis.call('EXPIRE', KEYS[k + 4], ARGV[5])
end
return 'ok'
"""

# One EVALSHA however many scopes: a pipeline of 3 INCRBYs per scope cost ~50 us of client CPU
# per scope (bench/admission_levels.py).
# KEYS: per scope, its minute-tokens, day-cost and month-cost counters; ARGV: tokens, cost deltas
_RECONCILE = """
for i = 1, #KEYS, 3 do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('INCRBY', KEYS[i + 1], ARGV[2])
  redis.call('INCRBY', KEYS[i + 2], ARGV[2])
end
return 1
"""


class RedisLimitStore:
    backend = "redis"

    def __init__(
        self,
        client: Redis,
        *,
        on_error: Literal["open", "closed"] = "closed",
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._script = client.register_script(_RESERVE)
        self._settle = client.register_script(_RECONCILE)
        self._on_error = on_error
        self._clock = clock

    @staticmethod
    def _keys(tenant_id: str, windows: Windows, level: str = "tenant", name: str = "") -> list[str]:
        """The counters of a scope in these windows: requests, tokens, day and month cost (a
        tenant's own under `gateway-limits`, a team's, user's, ... under `gateway-limits:<level>`
        — all inside the tenant's `faas-meta:{tenant}` prefix)."""
        base = f"faas-meta:{tenant_id}:gateway-limits"
        if level != "tenant":
            base = f"{base}:{level}:{name}"
        return [
            f"{base}:req:{windows.minute}",
            f"{base}:tok:{windows.minute}",
            f"{base}:usd:{windows.day}",
            f"{base}:usd:{windows.month}",
        ]

    async def reserve(
        self, tenant_id: str, caps: Caps, tokens: int, cost_usd: float
    ) -> Reservation:
        return await self.reserve_scopes([Scope(tenant_id, caps)], tokens, cost_usd)

    async def reserve_scopes(
        self, scopes: Sequence[Scope], tokens: int, cost_usd: float
    ) -> Reservation:
        now = self._clock()
        windows = Windows.at(now)
        cost = int(cost_usd * MICRO)
        keys: list[str] = []
        args: list[int] = [tokens, cost, _MINUTE_TTL_S, _DAY_TTL_S, _MONTH_TTL_S]
        for scope in scopes:
            keys += self._keys(scope.tenant_id, windows, scope.level, scope.name)
            args += micro_caps(scope.caps)
        try:
            verdict = await self._script(keys=keys, args=args)
        except Exception as exc:
            if self._on_error == "open":
                # Fail open (explicitly configured): serve, but this request is not counted.
                return Reservation(scopes[0].tenant_id, windows, 0, 0)
            raise DependencyUnavailable("rate-limit store unavailable") from exc
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if verdict != "ok":
            index, _, which = verdict.partition(":")
            raise refusal(which, windows, now, scopes[int(index) - 1])
        return Reservation(scopes[0].tenant_id, windows, tokens, cost, tuple(scopes))

    async def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        w = reservation.windows
        cost = int(cost_usd * MICRO) - reservation.cost_micro
        keys: list[str] = []
        for scope in reservation.scopes:
            keys += self._keys(scope.tenant_id, w, scope.level, scope.name)[1:]
        if not keys:  # a fail-open reservation counted nothing
            return
        try:
            await self._settle(keys=keys, args=[tokens - reservation.tokens, cost])
        except Exception:
            # The completion already happened and is returned; only its accounting is lost.
            log.warning("could not reconcile usage with the limit store", exc_info=True)

    async def remaining(self, tenant_id: str, caps: Caps) -> Remaining:
        values = await self._client.mget(self._keys(tenant_id, Windows.at(self._clock())))
        req, tok, day, month = (int(v or 0) for v in values)
        return remaining(caps, req=req, tok=tok, day=day, month=month)
