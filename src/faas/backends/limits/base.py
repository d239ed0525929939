"""The limit-store port: request/token rates and USD budgets, checked and reserved atomically in
minute, day and month windows, for every level a call is counted at (its tenant, team, user, key,
model and agent run: each a `Scope`) at once: all of them reserve or none does.

A request reserves its worst-case tokens and cost at admission and reconciles the actual figures
at completion, releasing what it did not use; an actual figure above the reservation is added at
once, so the next admission sees it. N concurrent reservations can therefore never together pass
a cap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

from faas.shared.exceptions import RateLimited

MICRO = 1_000_000  # budgets are counted in micro-USD so Redis can use integer INCRBY
# Bounds keep every counter an exact integer in Python, in Redis and in Lua's doubles (< 2**53):
# 10**9 USD is 10**15 micro-USD. A larger value used to be accepted and then fail every call of
# the tenant (int(1e303 * MICRO) is an OverflowError).
MAX_RATE = 10**9
MAX_BUDGET_USD = 10**9
Clock = Callable[[], float]
Level = Literal["tenant", "team", "user", "key", "model", "agent"]


class Caps(Protocol):
    """A tenant's caps; `None` is unlimited. Callers pass their own model (the gateway's
    `TenantLimits`), so the store needs nothing but these numbers."""

    @property
    def rpm(self) -> int | None: ...

    @property
    def tpm(self) -> int | None: ...

    @property
    def daily_budget_usd(self) -> float | None: ...

    @property
    def monthly_budget_usd(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Windows:
    """The window names a moment falls in, and when each rolls over (UTC epoch seconds)."""

    minute: str
    day: str
    month: str
    minute_end: float
    day_end: float
    month_end: float

    @classmethod
    def at(cls, now: float) -> Windows:
        # One per minute, built once: two datetimes and two strftime calls cost ~4 us a call.
        minute_start = int(now // 60) * 60
        cached = _latest_windows[0]
        if cached is not None and cached.minute_end == minute_start + 60:
            return cached
        moment = datetime.fromtimestamp(minute_start, UTC)
        day_start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp()
        next_month = (
            datetime(moment.year + 1, 1, 1, tzinfo=UTC)
            if moment.month == 12
            else datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
        )
        windows = cls(
            minute=str(minute_start),
            day=moment.strftime("%Y%m%d"),
            month=moment.strftime("%Y%m"),
            minute_end=minute_start + 60.0,
            day_end=day_start + 86400,
            month_end=next_month.timestamp(),
        )
        _latest_windows[0] = windows
        return windows


_latest_windows: list[Windows | None] = [None]


@dataclass(frozen=True, slots=True)
class Scope:
    """One level's counters and caps: the tenant's own (`name` empty), or a team, user, key,
    model or agent run inside the tenant, named by `name`."""

    tenant_id: str
    caps: Caps
    level: Level = "tenant"
    name: str = ""


@dataclass(slots=True)
class Reservation:
    tenant_id: str
    windows: Windows
    tokens: int
    cost_micro: int
    scopes: tuple[Scope, ...] = ()


@dataclass(frozen=True, slots=True)
class Remaining:
    requests: int | None
    tokens: int | None
    daily_budget_usd: float | None
    monthly_budget_usd: float | None
    used: dict[str, float]


@runtime_checkable
class LimitStore(Protocol):
    """Counters are per scope; a reservation counts in the windows current at `reserve`.

    `reserve_scopes` checks every scope's caps and counts the request in all of them, or raises
    `RateLimited` (details `level`: the scope's level, `limit`: `rpm`, `tpm`, `daily_budget` or
    `monthly_budget`; retry-after the seconds until that window rolls over) and counts nothing
    anywhere. `reserve` is the same for the tenant's scope alone. `reconcile` replaces the
    reservation's tokens and cost by the actual ones in every scope it counted in (0 and 0.0
    release it); it never refuses.
    """

    backend: str

    async def reserve(
        self, tenant_id: str, caps: Caps, tokens: int, cost_usd: float
    ) -> Reservation: ...

    async def reserve_scopes(
        self, scopes: Sequence[Scope], tokens: int, cost_usd: float
    ) -> Reservation: ...

    async def reconcile(self, reservation: Reservation, tokens: int, cost_usd: float) -> None: ...

    async def remaining(self, tenant_id: str, caps: Caps) -> Remaining: ...


def micro_caps(caps: Caps) -> tuple[int, int, int, int]:
    """rpm, tpm, daily and monthly micro-USD; -1 means unlimited (Lua has no None)."""
    return (
        caps.rpm or -1,
        caps.tpm or -1,
        -1 if caps.daily_budget_usd is None else int(caps.daily_budget_usd * MICRO),
        -1 if caps.monthly_budget_usd is None else int(caps.monthly_budget_usd * MICRO),
    )


def refusal(which: str, windows: Windows, now: float, scope: Scope | None = None) -> RateLimited:
    end = {
        "rpm": windows.minute_end,
        "tpm": windows.minute_end,
        "daily_budget": windows.day_end,
        "monthly_budget": windows.month_end,
    }[which]
    level = "tenant" if scope is None else scope.level
    named = f"{level} {scope.name!r}" if scope is not None and scope.name else level
    return RateLimited(
        f"{named} {which.replace('_', ' ')} exceeded",
        retry_after_s=max(0.0, end - now),
        details={"level": level, "limit": which},
    )


def remaining(caps: Caps, req: int, tok: int, day: int, month: int) -> Remaining:
    """What is left of each cap, from the counters of the current windows."""
    rpm, tpm, day_cap, month_cap = micro_caps(caps)
    return Remaining(
        requests=None if rpm < 0 else max(0, rpm - req),
        tokens=None if tpm < 0 else max(0, tpm - tok),
        daily_budget_usd=None if day_cap < 0 else max(0, day_cap - day) / MICRO,
        monthly_budget_usd=None if month_cap < 0 else max(0, month_cap - month) / MICRO,
        used={
            "requests_this_minute": req,
            "tokens_this_minute": tok,
            "usd_today": day / MICRO,
            "usd_this_month": month / MICRO,
        },
    )
