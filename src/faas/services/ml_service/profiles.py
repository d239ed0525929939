"""Training profiles (quantiles, histogram bins, category frequencies) and the drift of a
window of prediction inputs against one (PSI and KS). Pure numpy: callers run it in a thread."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import Any

import numpy as np

from faas.services.ml_service.data import is_number, parse_datetime
from faas.services.ml_service.features import MISSING

QUANTILES = 101
BINS = 10


def _numeric_values(rows: Sequence[Mapping[str, Any]], column: Mapping[str, Any]) -> Any:
    name = column["name"]
    if column["kind"] == "datetime":
        values = [parse_datetime(r.get(name)) for r in rows]
        return np.array([v.timestamp() for v in values if v is not None], dtype=float)
    return np.array([float(r[name]) for r in rows if is_number(r.get(name))], dtype=float)


def profile(
    rows: Sequence[Mapping[str, Any]], schema: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The training reference: quantiles and histogram bins per numeric (and datetime) feature,
    category frequencies per categorical one."""
    features: dict[str, Any] = {}
    for column in schema:
        name = column["name"]
        if column["kind"] in ("numeric", "datetime"):
            values = _numeric_values(rows, column)
            if values.size == 0:
                continue
            quantiles = np.quantile(values, np.linspace(0, 1, QUANTILES))
            edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)))
            counts = _histogram(values, edges)
            features[name] = {
                "kind": "numeric",
                "count": int(values.size),
                "mean": float(values.mean()),
                "std": float(values.std()),
                "quantiles": [float(q) for q in quantiles],
                "bin_edges": [float(e) for e in edges],
                "bin_fractions": [float(c) for c in counts / counts.sum()],
            }
        else:
            counter = Counter(MISSING if r.get(name) is None else str(r.get(name)) for r in rows)
            total = sum(counter.values())
            top = counter.most_common(100)
            features[name] = {
                "kind": "categorical",
                "count": total,
                "frequencies": {k: v / total for k, v in top},
            }
    return {"rows": len(rows), "features": features}


def _histogram(values: Any, edges: Any) -> Any:
    """Counts in the bins between inner edges; values outside fall into the end bins."""
    inner = edges[1:-1]
    index = np.searchsorted(inner, values, side="right")
    return np.bincount(index, minlength=max(1, len(edges) - 1)).astype(float)


def _psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    eps = 1e-4
    e = np.clip(np.asarray(expected, dtype=float), eps, None)
    a = np.clip(np.asarray(actual, dtype=float), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _ks(reference_quantiles: Sequence[float], n_ref: int, window: Any) -> tuple[float, float]:
    """Two-sample KS with the reference CDF interpolated from its stored quantiles."""
    kolmogorov = import_module("scipy.special").kolmogorov

    q = np.asarray(reference_quantiles, dtype=float)
    probs = np.linspace(0, 1, len(q))
    points = np.sort(np.concatenate([window, q]))
    ref_cdf = np.interp(points, q, probs, left=0.0, right=1.0)
    win_cdf = np.searchsorted(np.sort(window), points, side="right") / window.size
    statistic = float(np.max(np.abs(ref_cdf - win_cdf)))
    n_eff = window.size * n_ref / (window.size + n_ref)
    p_value = float(kolmogorov(math.sqrt(n_eff) * statistic)) if statistic > 0 else 1.0
    return statistic, min(1.0, max(0.0, p_value))


def drift(
    reference: Mapping[str, Any],
    schema: Sequence[Mapping[str, Any]],
    window: Sequence[Mapping[str, Any]],
    *,
    psi_threshold: float = 0.2,
    p_threshold: float = 0.01,
) -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}
    for column in schema:
        name = column["name"]
        ref = reference.get("features", {}).get(name)
        if ref is None:
            continue
        if ref["kind"] == "numeric":
            values = _numeric_values(window, column)
            if values.size == 0:
                continue
            edges = np.asarray(ref["bin_edges"], dtype=float)
            counts = _histogram(values, edges)
            psi = _psi(ref["bin_fractions"], counts / counts.sum())
            ks, p_value = _ks(ref["quantiles"], int(ref["count"]), values)
            report[name] = {
                "kind": "numeric",
                "psi": round(psi, 6),
                "ks_statistic": round(ks, 6),
                "ks_p_value": p_value,
                "drift": psi > psi_threshold or p_value < p_threshold,
            }
        else:
            counter = Counter(MISSING if r.get(name) is None else str(r.get(name)) for r in window)
            total = sum(counter.values())
            categories = sorted(set(ref["frequencies"]) | set(counter))
            expected = [ref["frequencies"].get(c, 0.0) for c in categories]
            actual = [counter.get(c, 0) / total for c in categories]
            psi = _psi(expected, actual)
            report[name] = {
                "kind": "categorical",
                "psi": round(psi, 6),
                "ks_statistic": None,
                "ks_p_value": None,
                "drift": psi > psi_threshold,
            }
    return report
