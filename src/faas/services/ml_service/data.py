"""Tabular data without pandas: parsing uploads (CSV, JSON records, JSON lines), inferring a
column schema (numeric, categorical, datetime, text), validating prediction inputs against a
model's input schema and turning rows into the matrix the pipeline expects."""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeGuard

import numpy as np
import orjson

from faas.shared.exceptions import ValidationFailed

MAX_ROWS = 200_000
MAX_COLUMNS = 500
MAX_COLUMN_NAME = 128
KINDS = ("numeric", "categorical", "datetime", "text")
DATETIME_PARTS = ("year", "month", "day", "dayofweek", "hour")
MISSING = "__missing__"
# CSV integers stay integers, as in JSON: a 0/1 label must give the classes "0" and "1", not
# "0.0" and "1.0" (category values are compared as text). Beyond 2**53 a float is as exact.
INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_EXACT_INT = 2**53

Row = dict[str, Any]


def _fail(message: str, **details: Any) -> ValidationFailed:
    return ValidationFailed(message, details=details)


# -- parsing -----------------------------------------------------------------------------------


def parse_upload(raw: bytes, filename: str, content_type: str | None) -> tuple[list[Row], str]:
    """Rows and the detected format ("csv", "json" or "jsonl") of an uploaded file."""
    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    stripped = text.lstrip()
    lower = filename.lower()
    if not stripped:
        raise _fail("the dataset has no rows", reason="empty")
    if stripped.startswith("[") or lower.endswith(".json"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise _fail(f"the JSON is malformed: {exc}", reason="malformed") from exc
        if not isinstance(value, list):
            raise _fail("a JSON dataset must be a list of records", reason="malformed")
        return check_records(value), "json"
    if stripped.startswith("{") or lower.endswith((".jsonl", ".ndjson")):
        rows: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise _fail(f"line {number} is not JSON", reason="malformed") from exc
        return check_records(rows), "jsonl"
    return parse_csv(text), "csv"


def parse_csv(text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise _fail("the dataset has no rows", reason="empty") from None
    header = [h.strip() for h in header]
    _check_columns(header)
    rows: list[Row] = []
    for number, record in enumerate(reader, start=2):
        if not record:
            continue
        if len(record) != len(header):
            raise _fail(
                f"line {number} has {len(record)} fields, the header has {len(header)}",
                reason="ragged",
                line=number,
            )
        rows.append({h: _csv_value(v) for h, v in zip(header, record, strict=True)})
        if len(rows) > MAX_ROWS:
            raise _fail(f"a dataset holds at most {MAX_ROWS} rows", reason="too_many_rows")
    if not rows:
        raise _fail("the dataset has no rows", reason="empty")
    return rows


def _csv_value(raw: str) -> Any:
    value = raw.strip()
    if value == "" or value.lower() in ("na", "nan", "null", "none"):
        return None
    if INTEGER.fullmatch(value) and abs(int(value)) <= MAX_EXACT_INT:
        return int(value)
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else None


def check_records(records: Sequence[Any]) -> list[Row]:
    """JSON records: a non-empty list of objects that all have the same keys (null for a
    missing value), with scalar values, within the row and column limits."""
    if not records:
        raise _fail("the dataset has no rows", reason="empty")
    if len(records) > MAX_ROWS:
        raise _fail(f"a dataset holds at most {MAX_ROWS} rows", reason="too_many_rows")
    first = records[0]
    if not isinstance(first, dict) or not first:
        raise _fail("row 0 is not a non-empty object", reason="malformed", row=0)
    columns = list(first)
    _check_columns(columns)
    keys = set(columns)
    rows: list[Row] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise _fail(f"row {index} is not an object", reason="malformed", row=index)
        if record.keys() != keys:
            missing = sorted(keys - record.keys())
            extra = sorted(record.keys() - keys)
            raise _fail(
                f"row {index} has different columns from row 0",
                reason="ragged",
                row=index,
                missing=missing,
                extra=extra,
            )
        row: Row = {}
        for key in columns:
            value = record[key]
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            elif value is not None and not isinstance(value, str | int | float | bool):
                raise _fail(
                    f"row {index} column {key!r} is not a scalar",
                    reason="malformed",
                    row=index,
                    column=key,
                )
            row[key] = value
        rows.append(row)
    return rows


def _check_columns(columns: Sequence[str]) -> None:
    if len(columns) > MAX_COLUMNS:
        raise _fail(f"a dataset holds at most {MAX_COLUMNS} columns", reason="too_many_columns")
    if len(set(columns)) != len(columns):
        raise _fail("column names must be unique", reason="duplicate_columns")
    for name in columns:
        if not isinstance(name, str) or not name or len(name) > MAX_COLUMN_NAME:
            raise _fail(f"bad column name {name!r}", reason="bad_column_name")


# -- schema ------------------------------------------------------------------------------------


def parse_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 8 or not value[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def infer_schema(rows: Sequence[Row]) -> list[dict[str, Any]]:
    columns = list(rows[0])
    schema = []
    for name in columns:
        values = [r[name] for r in rows if r[name] is not None]
        kind = _infer_kind(values)
        entry: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "nullable": len(values) < len(rows),
            "missing": len(rows) - len(values),
        }
        if kind == "categorical":
            entry["cardinality"] = len({str(v) for v in values})
        schema.append(entry)
    return schema


def _infer_kind(values: Sequence[Any]) -> str:
    if not values:
        return "numeric"
    if all(_is_number(v) for v in values):
        return "numeric"
    if all(isinstance(v, str) for v in values) and all(
        parse_datetime(v) is not None for v in values[:200]
    ):
        return "datetime" if all(parse_datetime(v) is not None for v in values) else "categorical"
    strings = [str(v) for v in values]
    unique = len(set(strings))
    mean_length = sum(len(s) for s in strings) / len(strings)
    if mean_length > 30 and unique > 0.5 * len(strings):
        return "text"
    return "categorical"


# -- features ----------------------------------------------------------------------------------


def feature_columns(schema: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int]]:
    """Indices of numeric and categorical matrix columns for a model input schema (a datetime
    column expands into its numeric parts)."""
    numeric: list[int] = []
    categorical: list[int] = []
    index = 0
    for column in schema:
        if column["kind"] == "datetime":
            numeric.extend(range(index, index + len(DATETIME_PARTS)))
            index += len(DATETIME_PARTS)
        elif column["kind"] == "numeric":
            numeric.append(index)
            index += 1
        else:
            categorical.append(index)
            index += 1
    return numeric, categorical


def to_matrix(rows: Sequence[Mapping[str, Any]], schema: Sequence[Mapping[str, Any]]) -> Any:
    """An object matrix: floats (NaN when missing) for numeric parts, strings for categories."""
    width = sum(len(DATETIME_PARTS) if c["kind"] == "datetime" else 1 for c in schema)
    matrix = np.empty((len(rows), width), dtype=object)
    for i, row in enumerate(rows):
        j = 0
        for column in schema:
            value = row.get(column["name"])
            kind = column["kind"]
            if kind == "numeric":
                matrix[i, j] = float(value) if _is_number(value) else math.nan
                j += 1
            elif kind == "datetime":
                moment = parse_datetime(value)
                parts = (
                    (moment.year, moment.month, moment.day, moment.weekday(), moment.hour)
                    if moment
                    else (math.nan,) * len(DATETIME_PARTS)
                )
                for part in parts:
                    matrix[i, j] = float(part)
                    j += 1
            else:
                matrix[i, j] = MISSING if value is None else str(value)
                j += 1
    return matrix


def validate_inputs(
    rows: Sequence[Any], schema: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Prediction rows checked against the input schema: 422 naming the first bad column."""
    if not rows:
        raise _fail("send at least one row", reason="empty")
    checked = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _fail(f"row {index} is not an object", reason="malformed", row=index)
        clean: dict[str, Any] = {}
        for column in schema:
            name = column["name"]
            if name not in row:
                raise _fail(f"column {name!r} is missing", column=name, reason="missing", row=index)
            value = row[name]
            kind = column["kind"]
            ok = (
                value is None
                or (kind == "numeric" and _is_number(value))
                or (kind == "datetime" and parse_datetime(value) is not None)
                or (kind in ("categorical", "text") and isinstance(value, str | int | bool))
            )
            if not ok:
                raise _fail(
                    f"column {name!r} must be {kind}, got {type(value).__name__}",
                    column=name,
                    reason="wrong_type",
                    expected=kind,
                    row=index,
                )
            clean[name] = value
        checked.append(clean)
    return checked


# -- profiles and drift ------------------------------------------------------------------------

QUANTILES = 101
BINS = 10


def _numeric_values(rows: Sequence[Mapping[str, Any]], column: Mapping[str, Any]) -> Any:
    name = column["name"]
    if column["kind"] == "datetime":
        values = [parse_datetime(r.get(name)) for r in rows]
        return np.array([v.timestamp() for v in values if v is not None], dtype=float)
    return np.array([float(r[name]) for r in rows if _is_number(r.get(name))], dtype=float)


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
    from importlib import import_module

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
