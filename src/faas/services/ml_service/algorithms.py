"""What a training request may ask for: the algorithms of each task, their allow-listed
hyperparameters (types and ranges), and the scikit-learn estimator each one builds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib import import_module
from typing import Any

from faas.shared.exceptions import ValidationFailed

ALGORITHMS: dict[str, tuple[str, ...]] = {
    "classification": ("logistic_regression", "random_forest", "gradient_boosting"),
    "regression": ("linear", "ridge", "random_forest", "gradient_boosting"),
    "clustering": ("kmeans",),
    "anomaly_detection": ("isolation_forest",),
    "forecasting": ("linear", "gradient_boosting"),
}

# name → (type, low, high); None bounds are open. `bool` and `int` are exact types.
Spec = tuple[type, float | None, float | None]
SEED: Spec = (int, 0, 2**31 - 1)
HYPERPARAMETERS: dict[str, dict[str, Spec]] = {
    "logistic_regression": {"C": (float, 1e-6, 1e6), "max_iter": (int, 10, 10_000)},
    "random_forest": {
        "n_estimators": (int, 1, 500),
        "max_depth": (int, 1, 64),
        "min_samples_leaf": (int, 1, 10_000),
        "random_state": SEED,
    },
    "gradient_boosting": {
        "n_estimators": (int, 1, 1000),
        "learning_rate": (float, 1e-4, 1.0),
        "max_depth": (int, 1, 32),
        "random_state": SEED,
    },
    "linear": {"fit_intercept": (bool, None, None)},
    "ridge": {"alpha": (float, 0.0, 1e6)},
    "kmeans": {"n_clusters": (int, 2, 100), "n_init": (int, 1, 50), "random_state": SEED},
    "isolation_forest": {
        "n_estimators": (int, 1, 1000),
        "contamination": (float, 1e-4, 0.5),
        "random_state": SEED,
    },
}
FORECAST_KEYS: dict[str, Spec] = {"lags": (int, 1, 64)}
DEFAULT_LAGS = 3


def validate_request(
    task: str, algorithm: str, hyperparameters: Mapping[str, Any]
) -> dict[str, Any]:
    if algorithm not in ALGORITHMS[task]:
        raise ValidationFailed(
            f"algorithm {algorithm!r} is not available for {task}",
            details={"field": "algorithm", "allowed": list(ALGORITHMS[task])},
        )
    allowed = dict(HYPERPARAMETERS[algorithm])
    if task == "forecasting":
        allowed.update(FORECAST_KEYS)
    clean: dict[str, Any] = {}
    for key, raw in hyperparameters.items():
        value: Any = raw
        spec = allowed.get(key)
        if spec is None:
            raise ValidationFailed(
                f"unknown hyperparameter {key!r} for {algorithm}",
                details={"hyperparameter": key, "allowed": sorted(allowed)},
            )
        kind, low, high = spec
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        matches = type(value) is kind
        if not matches or (kind is float and not math.isfinite(value)):
            raise ValidationFailed(
                f"hyperparameter {key!r} must be {kind.__name__}",
                details={"hyperparameter": key, "expected": kind.__name__},
            )
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValidationFailed(
                f"hyperparameter {key!r} must be between {low} and {high}",
                details={"hyperparameter": key, "min": low, "max": high},
            )
        clean[key] = value
    return clean


def build_estimator(task: str, algorithm: str, params: Mapping[str, Any]) -> Any:
    _clusters = import_module("sklearn.cluster")
    KMeans = _clusters.KMeans
    _ensemble = import_module("sklearn.ensemble")
    GradientBoostingClassifier = _ensemble.GradientBoostingClassifier
    GradientBoostingRegressor = _ensemble.GradientBoostingRegressor
    IsolationForest = _ensemble.IsolationForest
    RandomForestClassifier = _ensemble.RandomForestClassifier
    RandomForestRegressor = _ensemble.RandomForestRegressor
    _linear_model = import_module("sklearn.linear_model")
    LinearRegression = _linear_model.LinearRegression
    LogisticRegression = _linear_model.LogisticRegression
    Ridge = _linear_model.Ridge

    classify = task == "classification"
    seeded = {"random_state": 0, **params}
    if algorithm == "logistic_regression":
        return LogisticRegression(**{"max_iter": 1000, **params})
    if algorithm == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(**{"n_estimators": 100, **seeded})
    if algorithm == "gradient_boosting":
        cls2 = GradientBoostingClassifier if classify else GradientBoostingRegressor
        return cls2(**seeded)
    if algorithm == "linear":
        return LinearRegression(**params)
    if algorithm == "ridge":
        return Ridge(**params)
    if algorithm == "kmeans":
        return KMeans(**{"n_clusters": 3, "n_init": 10, **seeded})
    if algorithm == "isolation_forest":
        return IsolationForest(**{"n_estimators": 100, **seeded})
    raise ValueError(algorithm)  # pragma: no cover - validated before
