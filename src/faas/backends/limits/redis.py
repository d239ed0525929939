"""Limit counters in Redis, shared by every gateway replica; check-and-reserve is one Lua script."""

from __future__ import annotations

import logging
import time
from typing import Literal

from redis.asyncio import Redis

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
from faas.shared.exceptions import DependencyUnavailable

log = logging.getLogger("faas.gateway.limits")

# Counters outlive their window a little, so a late reconcile still finds them.
_MINUTE_TTL_S, _DAY_TTL_S, _MONTH_TTL_S = 120, 2 * 86400, 40 * 86400

# KEYS: minute-requests, minute-tokens, day-cost, month-cost
# ARGV: rpm, tpm, day_cap, month_cap, tokens, cost, minute_ttl, day_ttl, month_ttl
_RESERVE = """
local function over(key, cap, add)
  if tonumber(cap) < 0 then return false end
  return (tonumber(redis.call('GET', key) or '0') + tonumber(add)) > tonumber(cap)
end
if over(KEYS[1], ARGV[1], 1) then return 'rpm' end
if over(KEYS[2], ARGV[2], ARGV[5]) then return 'tpm' end
if over(KEYS[3], ARGV[3], ARGV[6]) then return 'daily_budget' end
if over(KEYS[4], ARGV[4], ARGV[6]) then return 'monthly_budget' end
redis.call('INCRBY', KEYS[1], 1)
redis.call('INCRBY', KEYS[2], ARGV[5])
redis.call('INCRBY', KEYS[3], ARGV[6])
redis.call('INCRBY', KEYS[4], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('EXPIRE', KEYS[3], ARGV[8])
redis.call('EXPIRE', KEYS[4], ARGV[9])
return 'ok'
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
        self._on_error = on_error
        self._clock = clock

    @staticmethod
    def _keys(tenant_id: str, windows: Windows) -> list[str]:
        """The counters of a tenant in these windows: requests, tokens, day and month cost."""
        base = f"faas-meta:{tenant_id}:gateway-limits"
        return [
            f"{base}:req:{windows.minute}",
            f"{base}:tok:{windows.minute}",
            f"{base}:usd:{windows.day}",
            f"{base}:usd:{windows.month}",
        ]

    async def reserve(
        self, tenant_id: str, caps: Caps, tokens: int, cost_usd: float
    ) -> Reservation:
        now = self._clock()
        windows = Windows.at(now)
        cost = int(cost_usd * MICRO)
        args = [*micro_caps(caps), tokens, cost, _MINUTE_TTL_S, _DAY_TTL_S, _MONTH_TTL_S]
        try:
            verdict = await self._script(keys=self._keys(tenant_id, windows), args=args)
        except Exception as exc:
            if self._on_error == "open":
                # Fail open (explicitly configured): serve, but this request is not counted.
                return Reservation(tenant_id, windows, 0, 0)
            raise DependencyUnavailable("rate-limit store unavailable") from exc
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if verdict != "ok":
            raise refusal(verdict, windows, now)
        return Reservation(tenant_id, windows, tokens, cost)

    async def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        keys = self._keys(reservation.tenant_id, reservation.windows)
        cost = int(cost_usd * MICRO) - reservation.cost_micro
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.incrby(keys[1], tokens - reservation.tokens)
                pipe.incrby(keys[2], cost)
                pipe.incrby(keys[3], cost)
                await pipe.execute()
        except Exception:
            # The completion already happened and is returned; only its accounting is lost.
            log.warning("could not reconcile usage with the limit store", exc_info=True)

    async def remaining(self, tenant_id: str, caps: Caps) -> Remaining:
        values = await self._client.mget(self._keys(tenant_id, Windows.at(self._clock())))
        req, tok, day, month = (int(v or 0) for v in values)
        return remaining(caps, req=req, tok=tok, day=day, month=month)
