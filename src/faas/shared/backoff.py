"""The one backoff formula: exponential from `base_s`, capped at `cap_s`.

`jitter=True` draws the delay uniformly below the cap ("full jitter"), which spreads the retries
of many callers so they do not hit a recovering service in step; without it the delay is exact,
which is what retry schedules that must be predictable (job redelivery) want.
"""

from __future__ import annotations

import random


def backoff(attempt: int, *, base_s: float, cap_s: float, jitter: bool = False) -> float:
    """Delay before retry number `attempt` (0 for the first retry): base, 2·base, 4·base, …"""
    delay = min(cap_s, base_s * 2 ** min(max(attempt, 0), 62))
    return random.uniform(0.0, delay) if jitter else delay
