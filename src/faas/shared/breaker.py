"""The circuit breaker each `ServiceClient` keeps for its target service."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure breaker. Admission returns a ticket (the breaker's epoch), so results
    of requests admitted before the last state change cannot flip the current state."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._epoch = 0
        self._probe_taken = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    @property
    def retry_after_s(self) -> float:
        if self.state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.cooldown_s - self._clock())
        return 0.0

    def acquire(self) -> int | None:
        """A ticket if a request may go now, None to fail fast. Half-open admits one probe."""
        state = self.state
        if state is BreakerState.OPEN:
            return None
        if state is BreakerState.HALF_OPEN:
            if self._probe_taken:
                return None
            self._probe_taken = True
        return self._epoch

    def record(self, ticket: int, *, ok: bool) -> None:
        if ticket != self._epoch:
            return
        if ok:
            self._failures = 0
            if self._state is not BreakerState.CLOSED:
                self._move(BreakerState.CLOSED)
        elif self._state is BreakerState.HALF_OPEN:
            self._move(BreakerState.OPEN)
        else:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._move(BreakerState.OPEN)

    def release(self, ticket: int) -> None:
        """The admitted request ended without a verdict (e.g. cancelled): free the probe slot."""
        if ticket == self._epoch and self._state is BreakerState.HALF_OPEN:
            self._probe_taken = False

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self._epoch += 1
        self._probe_taken = False
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif state is BreakerState.CLOSED:
            self._failures = 0
