"""One contract for every limit store: the same tests run against memory and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from faas.backends.limits import LimitStore, MemoryLimitStore, Scope
from faas.backends.limits.redis import RedisLimitStore
from faas.shared.exceptions import RateLimited

# 2026-03-31 23:59:30 UTC: 30 s before the minute, the day and the month all roll over.
NOW = datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Caps:
    rpm: int | None = None
    tpm: int | None = None
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None


class ManualClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tenant() -> str:
    """A fresh tenant so tests never see each other's counters on a shared Redis."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, clock: ManualClock, tenant: str
) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        yield MemoryLimitStore(clock)
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisLimitStore(client, clock=clock)
    keys = [k async for k in client.scan_iter(match=f"faas-meta:{tenant}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def refused(store: LimitStore, tenant: str, caps: Caps, tokens: int, cost: float) -> str:
    with pytest.raises(RateLimited) as caught:
        await store.reserve(tenant, caps, tokens, cost)
    return str(caught.value.details["limit"])


async def test_a_reservation_within_the_caps_is_counted(store: LimitStore, tenant: str) -> None:
    caps = Caps(rpm=10, tpm=1000, daily_budget_usd=1.0, monthly_budget_usd=5.0)
    reservation = await store.reserve(tenant, caps, 300, 0.25)
    assert (reservation.tenant_id, reservation.tokens, reservation.cost_micro) == (
        tenant,
        300,
        250_000,
    )
    left = await store.remaining(tenant, caps)
    assert (left.requests, left.tokens) == (9, 700)
    assert left.daily_budget_usd == pytest.approx(0.75)
    assert left.monthly_budget_usd == pytest.approx(4.75)
    assert left.used == {
        "requests_this_minute": 1,
        "tokens_this_minute": 300,
        "usd_today": 0.25,
        "usd_this_month": 0.25,
    }


async def test_no_caps_never_refuse_and_report_no_remaining(store: LimitStore, tenant: str) -> None:
    for _ in range(5):
        await store.reserve(tenant, Caps(), 10**6, 10**3)
    left = await store.remaining(tenant, Caps())
    assert (left.requests, left.tokens, left.daily_budget_usd, left.monthly_budget_usd) == (
        None,
        None,
        None,
        None,
    )
    assert left.used["requests_this_minute"] == 5


@pytest.mark.parametrize(
    ("caps", "tokens", "cost", "limit", "retry_after_s"),
    [
        (Caps(rpm=1), 0, 0.0, "rpm", 30),
        (Caps(tpm=100), 60, 0.0, "tpm", 30),
        (Caps(daily_budget_usd=1.0), 0, 0.6, "daily_budget", 30),
        (Caps(monthly_budget_usd=1.0), 0, 0.6, "monthly_budget", 10 * 86400 + 30),
    ],
)
async def test_a_reservation_over_a_cap_is_refused_with_its_name_and_retry_after(
    store: LimitStore,
    tenant: str,
    clock: ManualClock,
    caps: Caps,
    tokens: int,
    cost: float,
    limit: str,
    retry_after_s: float,
) -> None:
    clock.now = NOW - 10 * 86400  # 30 s before a minute and a day roll over, 10 days to April
    await store.reserve(tenant, caps, tokens, cost)
    with pytest.raises(RateLimited) as caught:
        await store.reserve(tenant, caps, tokens, cost)
    assert caught.value.details == {"level": "tenant", "limit": limit}
    assert caught.value.retry_after_s == pytest.approx(retry_after_s)


async def test_a_refused_reservation_counts_nothing(store: LimitStore, tenant: str) -> None:
    caps = Caps(rpm=5, tpm=100, daily_budget_usd=1.0)
    await store.reserve(tenant, caps, 50, 0.5)
    assert await refused(store, tenant, caps, 60, 0.1) == "tpm"
    assert await refused(store, tenant, caps, 10, 0.6) == "daily_budget"
    left = await store.remaining(tenant, caps)
    assert (left.requests, left.tokens) == (4, 50)
    assert left.daily_budget_usd == pytest.approx(0.5)


async def test_reconcile_releases_what_the_call_did_not_use(store: LimitStore, tenant: str) -> None:
    caps = Caps(tpm=100, daily_budget_usd=1.0)
    reservation = await store.reserve(tenant, caps, 100, 1.0)
    assert await refused(store, tenant, caps, 1, 0.0) == "tpm"
    await store.reconcile(reservation, 40, 0.25)
    left = await store.remaining(tenant, caps)
    assert left.tokens == 60
    assert left.daily_budget_usd == pytest.approx(0.75)
    released = await store.reserve(tenant, caps, 0, 0.0)
    await store.reconcile(released, 0, 0.0)
    assert (await store.remaining(tenant, caps)).tokens == 60


async def test_a_bill_above_the_reservation_is_seen_by_the_next_admission(
    store: LimitStore, tenant: str
) -> None:
    caps = Caps(tpm=1000, daily_budget_usd=1.0)
    reservation = await store.reserve(tenant, caps, 10, 0.1)
    await store.reconcile(reservation, 900, 0.95)
    assert await refused(store, tenant, caps, 200, 0.0) == "tpm"
    assert await refused(store, tenant, caps, 0, 0.1) == "daily_budget"


async def test_windows_roll_over_with_the_clock(
    store: LimitStore, tenant: str, clock: ManualClock
) -> None:
    minute, day, month = Caps(rpm=1), Caps(daily_budget_usd=1.0), Caps(monthly_budget_usd=2.0)
    await store.reserve(tenant, minute, 0, 0.0)
    await store.reserve(tenant, day, 0, 1.0)
    clock.now += 30  # 2026-04-01 00:00:00: a new minute, day and month
    await store.reserve(tenant, minute, 0, 0.0)
    await store.reserve(tenant, day, 0, 1.0)
    assert await refused(store, tenant, day, 0, 0.5) == "daily_budget"
    clock.now += 86400  # the next day, same month: the month's spend is still there
    assert await refused(store, tenant, month, 0, 1.5) == "monthly_budget"
    await store.reserve(tenant, month, 0, 1.0)


async def test_reconcile_counts_in_the_windows_it_reserved_in(
    store: LimitStore, tenant: str, clock: ManualClock
) -> None:
    caps = Caps(tpm=100)
    reservation = await store.reserve(tenant, caps, 80, 0.0)
    clock.now += 60
    await store.reconcile(reservation, 100, 0.0)
    assert (await store.remaining(tenant, caps)).tokens == 100


@pytest.mark.parametrize(
    "caps",
    [Caps(rpm=10), Caps(tpm=100), Caps(daily_budget_usd=1.0), Caps(monthly_budget_usd=1.0)],
    ids=["rpm", "tpm", "daily_budget", "monthly_budget"],
)
async def test_concurrent_reservations_never_pass_a_cap(
    store: LimitStore, tenant: str, caps: Caps
) -> None:
    async def attempt() -> bool:
        try:
            await store.reserve(tenant, caps, 10, 0.1)
        except RateLimited:
            return False
        return True

    admitted = await asyncio.gather(*(attempt() for _ in range(64)))
    assert sum(admitted) == 10


# -- every level at once: a reservation counts in all its scopes or in none --------------------

LEVELS = ("team", "user", "key", "model", "agent")


def scopes(tenant: str, level: str, caps: Caps, tenant_caps: Caps | None = None) -> list[Scope]:
    """The tenant's scope (unlimited unless given) and one scope of `level` named `x`."""
    return [Scope(tenant, tenant_caps or Caps()), Scope(tenant, caps, level, "x")]  # type: ignore[arg-type]


@pytest.mark.parametrize("level", LEVELS)
async def test_the_tightest_level_refuses_naming_itself_and_counts_nothing(
    store: LimitStore, tenant: str, level: str
) -> None:
    tight = scopes(tenant, level, Caps(rpm=1, daily_budget_usd=1.0), Caps(rpm=100))
    await store.reserve_scopes(tight, 10, 0.5)
    with pytest.raises(RateLimited) as caught:
        await store.reserve_scopes(tight, 10, 0.1)
    assert caught.value.details == {"level": level, "limit": "rpm"}
    assert level in str(caught.value)
    left = await store.remaining(tenant, Caps(rpm=100))
    assert (left.requests, left.used["tokens_this_minute"]) == (99, 10)


async def test_a_level_refusal_after_a_tenant_check_leaves_the_tenant_uncounted(
    store: LimitStore, tenant: str
) -> None:
    team = Scope(tenant, Caps(tpm=50), "team", "a")
    user = Scope(tenant, Caps(daily_budget_usd=0.2), "user", "u")
    both = [Scope(tenant, Caps(rpm=10)), team, user]
    await store.reserve_scopes(both, 40, 0.1)
    with pytest.raises(RateLimited) as caught:
        await store.reserve_scopes(both, 5, 0.15)
    assert caught.value.details == {"level": "user", "limit": "daily_budget"}
    assert (await store.remaining(tenant, Caps(rpm=10))).requests == 9
    # Another team of the same tenant has its own counters.
    other = [Scope(tenant, Caps(rpm=10)), Scope(tenant, Caps(tpm=50), "team", "b")]
    await store.reserve_scopes(other, 50, 0.0)


async def test_reconcile_settles_every_scope_of_the_reservation(
    store: LimitStore, tenant: str
) -> None:
    levels = scopes(tenant, "key", Caps(tpm=100, daily_budget_usd=1.0))
    reservation = await store.reserve_scopes(levels, 100, 1.0)
    await store.reconcile(reservation, 30, 0.25)
    await store.reserve_scopes(levels, 70, 0.75)
    with pytest.raises(RateLimited) as caught:
        await store.reserve_scopes(levels, 1, 0.0)
    assert caught.value.details == {"level": "key", "limit": "tpm"}
    assert (await store.remaining(tenant, Caps())).used["usd_today"] == pytest.approx(1.0)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(
    ("caps", "limit"),
    [
        (Caps(rpm=10), "rpm"),
        (Caps(tpm=100), "tpm"),
        (Caps(monthly_budget_usd=1.0), "monthly_budget"),
    ],
    ids=["rpm", "tpm", "budget"],
)
async def test_64_concurrent_calls_never_pass_a_cap_at_any_level(
    store: LimitStore, tenant: str, level: str, caps: Caps, limit: str
) -> None:
    levels = scopes(tenant, level, caps, Caps(rpm=1000))
    refusals: list[dict[str, object]] = []

    async def attempt() -> bool:
        try:
            await store.reserve_scopes(levels, 10, 0.1)
        except RateLimited as exc:
            refusals.append(exc.details)
            return False
        return True

    admitted = await asyncio.gather(*(attempt() for _ in range(64)))
    assert sum(admitted) == 10
    assert refusals == [{"level": level, "limit": limit}] * 54
    # The tenant counted exactly the admitted calls: refused ones left no trace there.
    assert (await store.remaining(tenant, Caps(rpm=1000))).requests == 990
