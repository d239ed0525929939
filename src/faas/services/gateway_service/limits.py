"""Per-tenant request/token rate limits and USD budgets, checked and reserved atomically.

A request reserves its worst-case tokens and cost at admission (the caller works them out)
and reconciles the actual figures at completion, releasing what it did not use; an actual figure
above the reservation is added at once, so the next admission sees it. N concurrent requests
can therefore never together pass a limit: with Redis
the check-and-reserve is one Lua script; in memory it is one synchronous step of the event loop
(no await between check and increment), which is atomic in asyncio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from faas.shared.exceptions import DependencyUnavailable, RateLimited

log = logging.getLogger("faas.gateway.limits")

MICRO = 1_000_000  # budgets are counted in micro-USD so Redis can use integer INCRBY
# Bounds keep every counter an exact integer in Python, in Redis and in Lua's doubles (< 2**53):
# 10**9 USD is 10**15 micro-USD. A larger value used to be accepted and then fail every call of
# the tenant (int(1e303 * MICRO) is an OverflowError).
MAX_RATE = 10**9
MAX_BUDGET_USD = 10**9
Clock = Callable[[], float]


class TenantLimits(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"rpm": 600, "tpm": 200000, "daily_budget_usd": 5.0, "monthly_budget_usd": 100.0}
            ]
        }
    )

    rpm: int | None = Field(None, ge=1, le=MAX_RATE, description="requests per minute")
    tpm: int | None = Field(None, ge=1, le=MAX_RATE, description="tokens per minute")
    daily_budget_usd: float | None = Field(None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    monthly_budget_usd: float | None = Field(None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    semantic_cache: bool = False


@dataclass(frozen=True, slots=True)
class Windows:
    minute: str
    day: str
    month: str
    retry_minute_s: float
    retry_day_s: float
    retry_month_s: float

    @classmethod
    def at(cls, now: float) -> Windows:
        moment = datetime.fromtimestamp(now, UTC)
        minute_start = int(now // 60) * 60
        day_end = datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp() + 86400
        next_month = (
            datetime(moment.year + 1, 1, 1, tzinfo=UTC)
            if moment.month == 12
            else datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
        )
        return cls(
            minute=str(minute_start),
            day=moment.strftime("%Y%m%d"),
            month=moment.strftime("%Y%m"),
            retry_minute_s=minute_start + 60 - now,
            retry_day_s=day_end - now,
            retry_month_s=next_month.timestamp() - now,
        )


@dataclass(slots=True)
class Reservation:
    tenant_id: str
    windows: Windows
    tokens: int
    cost_micro: int


@dataclass(frozen=True, slots=True)
class Remaining:
    requests: int | None
    tokens: int | None
    daily_budget_usd: float | None
    monthly_budget_usd: float | None
    used: dict[str, float]


def _refusal(which: str, windows: Windows) -> RateLimited:
    retry = {
        "rpm": windows.retry_minute_s,
        "tpm": windows.retry_minute_s,
        "daily_budget": windows.retry_day_s,
        "monthly_budget": windows.retry_month_s,
    }[which]
    return RateLimited(
        f"tenant {which.replace('_', ' ')} exceeded", retry_after_s=retry, details={"limit": which}
    )


def _caps(limits: TenantLimits) -> tuple[int, int, int, int]:
    """-1 means unlimited (Lua has no None)."""
    return (
        limits.rpm or -1,
        limits.tpm or -1,
        -1 if limits.daily_budget_usd is None else int(limits.daily_budget_usd * MICRO),
        -1 if limits.monthly_budget_usd is None else int(limits.monthly_budget_usd * MICRO),
    )


class LimitStore(Protocol):
    backend: str

    async def reserve(
        self, tenant_id: str, limits: TenantLimits, tokens: int, cost_usd: float
    ) -> Reservation: ...

    async def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None: ...

    async def remaining(self, tenant_id: str, limits: TenantLimits) -> Remaining: ...


def _remaining(limits: TenantLimits, used: dict[str, int]) -> Remaining:
    rpm, tpm, day, month = _caps(limits)
    return Remaining(
        requests=None if rpm < 0 else max(0, rpm - used["req"]),
        tokens=None if tpm < 0 else max(0, tpm - used["tok"]),
        daily_budget_usd=None if day < 0 else max(0, day - used["day"]) / MICRO,
        monthly_budget_usd=None if month < 0 else max(0, month - used["month"]) / MICRO,
        used={
            "requests_this_minute": used["req"],
            "tokens_this_minute": used["tok"],
            "usd_today": used["day"] / MICRO,
            "usd_this_month": used["month"] / MICRO,
        },
    )


class MemoryLimitStore:
    """Counters in this process (one gateway instance; use Redis for several)."""

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
        self, tenant_id: str, limits: TenantLimits, tokens: int, cost_usd: float
    ) -> Reservation:
        windows = Windows.at(self._clock())
        self._expire(windows)
        rpm, tpm, day, month = _caps(limits)
        cost = int(cost_usd * MICRO)
        # No await from here to the increments: the check and the reservation are atomic.
        if rpm >= 0 and self._get(tenant_id, "req", windows.minute) + 1 > rpm:
            raise _refusal("rpm", windows)
        if tpm >= 0 and self._get(tenant_id, "tok", windows.minute) + tokens > tpm:
            raise _refusal("tpm", windows)
        if day >= 0 and self._get(tenant_id, "day", windows.day) + cost > day:
            raise _refusal("daily_budget", windows)
        if month >= 0 and self._get(tenant_id, "month", windows.month) + cost > month:
            raise _refusal("monthly_budget", windows)
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

    async def remaining(self, tenant_id: str, limits: TenantLimits) -> Remaining:
        w = Windows.at(self._clock())
        used = {
            "req": self._get(tenant_id, "req", w.minute),
            "tok": self._get(tenant_id, "tok", w.minute),
            "day": self._get(tenant_id, "day", w.day),
            "month": self._get(tenant_id, "month", w.month),
        }
        return _remaining(limits, used)

    def _expire(self, windows: Windows) -> None:
        if len(self._counters) < 10_000:
            return
        live = {windows.minute, windows.day, windows.month}
        self._counters = {k: v for k, v in self._counters.items() if k[2] in live}


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
    """Counters in Redis, shared by every gateway replica."""

    backend = "redis"

    def __init__(
        self,
        client: Any,
        *,
        on_error: Literal["open", "closed"] = "closed",
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._script = client.register_script(_RESERVE)
        self._on_error = on_error
        self._clock = clock

    @staticmethod
    def _keys(tenant: str, w: Windows) -> list[str]:
        base = f"faas-meta:{tenant}:gateway-limits"
        return [
            f"{base}:req:{w.minute}",
            f"{base}:tok:{w.minute}",
            f"{base}:usd:{w.day}",
            f"{base}:usd:{w.month}",
        ]

    async def reserve(
        self, tenant_id: str, limits: TenantLimits, tokens: int, cost_usd: float
    ) -> Reservation:
        windows = Windows.at(self._clock())
        cost = int(cost_usd * MICRO)
        args = [*_caps(limits), tokens, cost, 120, 2 * 86400, 40 * 86400]
        try:
            verdict = await self._script(keys=self._keys(tenant_id, windows), args=args)
        except Exception as exc:
            if self._on_error == "open":
                # Fail open (explicitly configured): serve, but this request is not counted.
                return Reservation(tenant_id, windows, 0, 0)
            raise DependencyUnavailable("rate-limit store unavailable") from exc
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if verdict != "ok":
            raise _refusal(verdict, windows)
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

    async def remaining(self, tenant_id: str, limits: TenantLimits) -> Remaining:
        keys = self._keys(tenant_id, Windows.at(self._clock()))
        values = await self._client.mget(keys)
        req, tok, day, month = (int(v or 0) for v in values)
        return _remaining(limits, {"req": req, "tok": tok, "day": day, "month": month})
