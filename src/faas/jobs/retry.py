"""The one retry policy for jobs: how many runs a job gets and how long it waits between them.

The worker decides with it whether a failed run is retried or fails the job for good, and a
handler that keeps its own record of the work (ingestion's file rows) asks it the same question,
so the two never disagree about which run was the last.
"""

from __future__ import annotations

from dataclasses import dataclass

from faas.shared.backoff import backoff
from faas.shared.config import Settings


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_s: float = 1.0
    cap_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.job_max_attempts, settings.job_retry_base_s, settings.job_retry_max_s)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the run after run number `attempt` (1-based) failed."""
        return backoff(attempt - 1, base_s=self.base_s, cap_s=self.cap_s)

    def exhausted(self, attempts: int) -> bool:
        """Whether a job that has run `attempts` times may not run again."""
        return attempts >= self.max_attempts
