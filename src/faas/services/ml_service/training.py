"""Training: a scikit-learn Pipeline (imputation, scaling, one-hot encoding) around the
requested estimator, fitted and scored with the metrics of each task; and prediction with a
fitted pipeline. CPU work: callers run it in a worker thread."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import numpy as np

from faas.services.ml_service.algorithms import DEFAULT_LAGS, build_estimator
from faas.services.ml_service.features import feature_columns, to_matrix
from faas.services.ml_service.profiles import profile


@dataclass
class Trained:
    pipeline: Any
    metrics: dict[str, Any]
    input_schema: list[dict[str, Any]]
    output: dict[str, Any]
    profile: dict[str, Any]
    params: dict[str, Any]


def build_pipeline(schema: Sequence[Mapping[str, Any]], estimator: Any) -> Any:
    _compose = import_module("sklearn.compose")
    ColumnTransformer = _compose.ColumnTransformer
    _impute = import_module("sklearn.impute")
    SimpleImputer = _impute.SimpleImputer
    _pipeline = import_module("sklearn.pipeline")
    Pipeline = _pipeline.Pipeline
    _preprocessing = import_module("sklearn.preprocessing")
    OneHotEncoder = _preprocessing.OneHotEncoder
    StandardScaler = _preprocessing.StandardScaler

    numeric, categorical = feature_columns(schema)
    transformers: list[tuple[str, Any, list[int]]] = []
    if numeric:
        numeric_steps = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )
        transformers.append(("numeric", numeric_steps, numeric))
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("categorical", encoder, categorical))
    return Pipeline([("prepare", ColumnTransformer(transformers)), ("model", estimator)])


def train(
    rows: Sequence[Mapping[str, Any]],
    dataset_schema: Sequence[Mapping[str, Any]],
    *,
    task: str,
    algorithm: str,
    hyperparameters: Mapping[str, Any],
    target: str | None,
    features: Sequence[str] | None,
    validation_split: float,
    cv_folds: int | None,
) -> Trained:
    """Fit and evaluate; ValueError for a request the data cannot satisfy."""
    columns = {c["name"]: c for c in dataset_schema}
    params = dict(hyperparameters)
    supervised = task in ("classification", "regression", "forecasting")
    if supervised:
        if not target:
            raise ValueError(f"a {task} model needs a target column")
        if target not in columns:
            raise ValueError(f"unknown target column {target!r}")
    elif target is not None and target not in columns:
        raise ValueError(f"unknown target column {target!r}")
    if task == "forecasting":
        return _train_forecast(rows, target or "", algorithm, params, validation_split)
    schema = _input_schema(columns, target, features)
    if supervised:
        rows = [r for r in rows if r.get(target or "") is not None]
        if len(rows) < 10:
            raise ValueError("at least 10 rows with a target value are needed")
    X = to_matrix(rows, schema)
    estimator = build_estimator(task, algorithm, params)
    pipeline = build_pipeline(schema, estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "classification":
            y = np.array([str(r[target or ""]) for r in rows], dtype=object)
            metrics = _supervised(pipeline, X, y, True, validation_split, cv_folds)
            output: dict[str, Any] = {
                "name": "predict",
                "datatype": "BYTES",
                "classes": [str(c) for c in pipeline.classes_],
            }
        elif task == "regression":
            if columns[target or ""]["kind"] != "numeric":
                raise ValueError(f"the regression target {target!r} must be numeric")
            y = np.array([float(r[target or ""]) for r in rows], dtype=float)
            metrics = _supervised(pipeline, X, y, False, validation_split, cv_folds)
            output = {"name": "predict", "datatype": "FP64"}
        elif task == "clustering":
            metrics = _cluster(pipeline, X)
            output = {"name": "predict", "datatype": "INT64"}
        else:
            pipeline.fit(X)
            flags = pipeline.predict(X)
            metrics = {"anomaly_rate": float(np.mean(flags == -1)), "rows": len(rows)}
            output = {"name": "predict", "datatype": "BOOL", "anomaly_label": -1}
    return Trained(pipeline, metrics, schema, output, profile(rows, schema), params)


def _input_schema(
    columns: Mapping[str, Mapping[str, Any]], target: str | None, features: Sequence[str] | None
) -> list[dict[str, Any]]:
    """The model's input columns: those asked for, else every non-text column but the target.
    A text column named explicitly is one-hot encoded as a category."""
    if features:
        unknown = [f for f in features if f not in columns]
        if unknown:
            raise ValueError(f"unknown feature column {unknown[0]!r}")
        names = [f for f in features if f != target]
    else:
        names = [c for c, s in columns.items() if c != target and s["kind"] != "text"]
    if not names:
        raise ValueError("no feature columns to train on")
    schema = [{"name": n, "kind": columns[n]["kind"]} for n in names]
    for column in schema:
        if column["kind"] == "text":
            column["kind"] = "categorical"
    return schema


def _supervised(
    pipeline: Any, X: Any, y: Any, classify: bool, split: float, cv_folds: int | None
) -> dict[str, Any]:
    _base = import_module("sklearn.base")
    clone = _base.clone
    _model_selection = import_module("sklearn.model_selection")
    KFold = _model_selection.KFold
    StratifiedKFold = _model_selection.StratifiedKFold
    train_test_split = _model_selection.train_test_split

    if classify and len(set(y.tolist())) < 2:
        raise ValueError("the target has a single class")
    metrics: dict[str, Any]
    if cv_folds:
        splitter = (
            StratifiedKFold(cv_folds, shuffle=True, random_state=0)
            if classify
            else KFold(cv_folds, shuffle=True, random_state=0)
        )
        folds = []
        for train_idx, test_idx in splitter.split(X, y):
            model = clone(pipeline).fit(X[train_idx], y[train_idx])
            folds.append(_score(model, X[test_idx], y[test_idx], classify))
        metrics = {
            k: float(np.mean([f[k] for f in folds if f.get(k) is not None]))
            for k in folds[0]
            if all(f.get(k) is not None for f in folds)
        }
        metrics["cv_folds"] = cv_folds
        pipeline.fit(X, y)
    else:
        stratify = y if classify and min(np.unique(y, return_counts=True)[1]) >= 2 else None
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=split, random_state=0, stratify=stratify
        )
        pipeline.fit(X_train, y_train)
        metrics = _score(pipeline, X_test, y_test, classify)
        metrics["validation_rows"] = len(y_test)
    metrics["training_rows"] = len(y)
    return metrics


def _score(model: Any, X: Any, y: Any, classify: bool) -> dict[str, Any]:
    m = import_module("sklearn.metrics")

    predicted = model.predict(X)
    if not classify:
        return {
            "rmse": float(math.sqrt(m.mean_squared_error(y, predicted))),
            "mae": float(m.mean_absolute_error(y, predicted)),
            "r2": float(m.r2_score(y, predicted)),
        }
    classes = list(model.classes_)
    binary = len(classes) == 2
    scores: dict[str, Any] = {
        "accuracy": float(m.accuracy_score(y, predicted)),
        "f1": float(
            m.f1_score(
                y,
                predicted,
                average="binary" if binary else "macro",
                pos_label=classes[1] if binary else 1,
            )
        ),
        "roc_auc": None,
    }
    if hasattr(model, "predict_proba") and len(set(y.tolist())) == len(classes):
        proba = model.predict_proba(X)
        try:
            scores["roc_auc"] = float(
                m.roc_auc_score(y, proba[:, 1], labels=classes)
                if binary
                else m.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
            )
        except ValueError:
            scores["roc_auc"] = None
    return scores


def _cluster(pipeline: Any, X: Any) -> dict[str, Any]:
    _metrics = import_module("sklearn.metrics")
    silhouette_score = _metrics.silhouette_score

    labels = pipeline.fit_predict(X)
    transformed = pipeline[:-1].transform(X)
    silhouette = None
    if 1 < len(set(labels.tolist())) < len(labels):
        silhouette = float(
            silhouette_score(
                transformed, labels, sample_size=min(len(labels), 5000), random_state=0
            )
        )
    return {
        "silhouette": silhouette,
        "clusters": len(set(labels.tolist())),
        "inertia": float(pipeline[-1].inertia_),
        "rows": len(labels),
    }


def _train_forecast(
    rows: Sequence[Mapping[str, Any]],
    target: str,
    algorithm: str,
    params: dict[str, Any],
    split: float,
) -> Trained:
    """Lag features: the model predicts y[t] from y[t-1..t-lags], rows in dataset order."""
    lags = int(params.pop("lags", DEFAULT_LAGS))
    series = [r.get(target) for r in rows]
    if any(v is None or isinstance(v, bool) or not isinstance(v, int | float) for v in series):
        raise ValueError(f"the forecasting target {target!r} must be numeric with no gaps")
    values = [float(v) for v in series]  # type: ignore[arg-type]
    if len(values) < lags + 10:
        raise ValueError(f"forecasting with {lags} lags needs at least {lags + 10} rows")
    schema = [{"name": f"lag_{k}", "kind": "numeric"} for k in range(1, lags + 1)]
    frames = [
        {f"lag_{k}": values[t - k] for k in range(1, lags + 1)} for t in range(lags, len(values))
    ]
    X = to_matrix(frames, schema)
    y = np.array(values[lags:], dtype=float)
    cut = max(1, min(len(y) - 1, round(len(y) * (1 - split))))
    pipeline = build_pipeline(schema, build_estimator("regression", algorithm, params))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(X[:cut], y[:cut])
        metrics = _score(pipeline, X[cut:], y[cut:], False)
        pipeline.fit(X, y)
    metrics.update(training_rows=len(y), validation_rows=len(y) - cut)
    output = {"name": "predict", "datatype": "FP64", "lags": lags}
    return Trained(
        pipeline, metrics, schema, output, profile(frames, schema), {**params, "lags": lags}
    )


def predict(
    pipeline: Any, rows: Sequence[Mapping[str, Any]], schema: Any, output: Any
) -> list[Any]:
    X = to_matrix(rows, schema)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = pipeline.predict(X)
    if output.get("datatype") == "BOOL":
        return [bool(v == -1) for v in raw.tolist()]
    if output.get("datatype") == "INT64":
        return [int(v) for v in raw.tolist()]
    if output.get("datatype") == "FP64":
        return [float(v) for v in raw.tolist()]
    return [str(v) for v in raw.tolist()]
