"""Budgets, rpm and tpm hold under 64 concurrent calls (streamed and not) on the in-memory and
the Redis limit store, with an upstream that bills more than the gateway's default estimate."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from faas.services.gateway_service.routing_table import Deployment
from faas.shared.config import Settings
from tests.gateway_app import GatewayEnv
from tests.support import gateway_budgets as scenarios
from tests.support.mock_upstream import MockUpstream


@pytest.fixture
def clock() -> scenarios.ManualClock:
    return scenarios.ManualClock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def setup(
    request: pytest.FixtureRequest,
    clock: scenarios.ManualClock,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[GatewayEnv, MockUpstream]]:
    store = str(request.param)
    extra = {"redis_url": request.getfixturevalue("redis_url")} if store == "redis" else {}
    async with scenarios.budget_env(make_settings(**extra), clock) as (env, up):
        assert env.service.limits.backend == store
        yield env, up


@pytest.mark.parametrize("budget", ["daily_budget_usd", "monthly_budget_usd"])
async def test_spend_stays_within_the_budget_when_the_upstream_bills_more_than_estimated(
    setup: tuple[GatewayEnv, MockUpstream], budget: str
) -> None:
    await scenarios.spend_stays_within_budget(setup[0], budget)


async def test_a_bill_above_the_reservation_is_seen_by_the_next_admission(
    setup: tuple[GatewayEnv, MockUpstream],
) -> None:
    await scenarios.overspend_is_seen_by_the_next_admission(*setup)


async def test_rpm_holds_under_concurrency(setup: tuple[GatewayEnv, MockUpstream]) -> None:
    await scenarios.rpm_holds_under_concurrency(setup[0])


async def test_tpm_holds_under_concurrency(setup: tuple[GatewayEnv, MockUpstream]) -> None:
    await scenarios.tpm_holds_under_concurrency(setup[0])


async def test_minute_windows_follow_the_injected_clock(
    setup: tuple[GatewayEnv, MockUpstream], clock: scenarios.ManualClock
) -> None:
    await scenarios.minute_windows_follow_the_injected_clock(setup[0], clock)


@pytest.mark.parametrize(
    ("deployment", "prompt", "asked", "bound"),
    [
        ({}, 10, None, 256),  # nothing declared: the gateway's estimate
        ({}, 10, 1000, 1000),  # the request's max_tokens
        ({"max_output_tokens": 500}, 10, None, 500),
        ({"max_output_tokens": 500}, 10, 1000, 500),  # the model cannot write more
        ({"max_output_tokens": 500, "context_window": 300}, 100, None, 200),
        ({"context_window": 100_000}, 10, None, 256),  # a window alone never inflates it
        ({"context_window": 50}, 80, None, 1),
    ],
)
def test_the_output_reserved_is_the_most_the_deployment_can_bill(
    deployment: dict[str, int], prompt: int, asked: int | None, bound: int
) -> None:
    d = Deployment(provider="mock", **deployment)
    assert d.output_bound(prompt, asked, fallback=256) == bound
