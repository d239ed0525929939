"""The job retry policy: the delays between runs and the run that is the last."""

from __future__ import annotations

import pytest

from faas.jobs import RetryPolicy
from faas.shared.backoff import backoff


def test_delays_double_from_the_base_after_each_failed_run_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=1.0, cap_s=5.0)
    assert [policy.delay(run) for run in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_job_is_exhausted_once_it_has_run_max_attempts_times() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert not policy.exhausted(2)
    assert policy.exhausted(3)


def test_a_policy_without_a_single_run_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


def test_jittered_backoff_stays_between_zero_and_the_exact_delay() -> None:
    delays = [backoff(3, base_s=0.5, cap_s=60.0, jitter=True) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 1
