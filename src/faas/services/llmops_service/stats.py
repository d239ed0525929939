"""Metrics from summed rollup columns: counts, tokens, cost, error rate and latency
percentiles interpolated inside the histogram buckets, every group computed at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from sqlalchemy import Float, cast, func

from faas.services.llmops_service.tables import BUCKET_COLUMNS, LATENCY_BOUNDS_MS, RollupRow

R = RollupRow.__table__.c

# Sums arrive as floats: PostgreSQL's SUM(integer) is a numeric, and a Decimal per cell was
# the largest cost of a metrics query (720 hours x 26 columns).
SUMS: Final = tuple(
    func.sum(cast(column, Float))
    for column in (
        R.count,
        R.error_count,
        R.prompt_tokens,
        R.completion_tokens,
        R.total_tokens,
        R.cost_usd,
        R.latency_sum_ms,
        *(R[name] for name in BUCKET_COLUMNS),
    )
)
QUANTILES: Final = (0.50, 0.95, 0.99)


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, interpolated linearly inside its bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_BOUNDS_MS):
                return float(low)
            high = LATENCY_BOUNDS_MS[i]
            return round(low + (high - low) * max(0.0, rank - seen) / n, 3)
        seen += n
    return float(LATENCY_BOUNDS_MS[-1])


def _percentiles(counts: np.ndarray, buckets: np.ndarray) -> list[list[float]]:
    """`percentile` for every row of a histogram matrix and each of `QUANTILES`."""
    cum = np.cumsum(buckets, axis=1)
    lows = np.array((0.0, *LATENCY_BOUNDS_MS), dtype=np.float64)
    highs = np.array((*LATENCY_BOUNDS_MS, LATENCY_BOUNDS_MS[-1]), dtype=np.float64)
    rows = np.arange(len(counts))
    out: list[list[float]] = []
    for q in QUANTILES:
        rank = q * counts
        idx = np.minimum((cum < rank[:, None] - 1e-9).sum(axis=1), buckets.shape[1] - 1)
        n = buckets[rows, idx]
        before = cum[rows, idx] - n
        frac = np.where(n > 0, np.clip(rank - before, 0, None) / np.where(n > 0, n, 1), 0.0)
        out.append(np.round(lows[idx] + (highs[idx] - lows[idx]) * frac, 3).tolist())
    return out


def stats_rows(keys: Sequence[str | None], sums: np.ndarray) -> list[dict[str, Any]]:
    """`Stats` rows (as JSON-ready dicts) from summed rollup columns (one row per key, columns
    in `SUMS` order); pydantic models per row would cost more than the query."""
    if len(keys) == 0:
        return []
    counts = sums[:, 0]
    has = (counts > 0).tolist()
    safe = np.where(counts > 0, counts, 1.0)
    pcts = _percentiles(counts, sums[:, 7:])
    ints = np.rint(sums[:, :5]).astype(np.int64).tolist()
    error_rate = np.round(sums[:, 1] / safe, 6).tolist()
    cost = np.round(sums[:, 5], 9).tolist()
    avg = np.round(sums[:, 6] / safe, 3).tolist()
    return [
        {
            "key": key,
            "count": ints[i][0],
            "errors": ints[i][1],
            "error_rate": error_rate[i] if has[i] else 0.0,
            "prompt_tokens": ints[i][2],
            "completion_tokens": ints[i][3],
            "total_tokens": ints[i][4],
            "cost_usd": cost[i],
            "latency_avg_ms": avg[i] if has[i] else None,
            "latency_p50_ms": pcts[0][i] if has[i] else None,
            "latency_p95_ms": pcts[1][i] if has[i] else None,
            "latency_p99_ms": pcts[2][i] if has[i] else None,
        }
        for i, key in enumerate(keys)
    ]
