"""Rows as the matrix a pipeline expects, and prediction inputs checked against a model's
input schema."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from faas.services.ml_service.data import invalid, is_number, parse_datetime

DATETIME_PARTS = ("year", "month", "day", "dayofweek", "hour")
MISSING = "__missing__"


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
                matrix[i, j] = float(value) if is_number(value) else math.nan
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
        raise invalid("send at least one row", reason="empty")
    checked = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise invalid(f"row {index} is not an object", reason="malformed", row=index)
        clean: dict[str, Any] = {}
        for column in schema:
            name = column["name"]
            if name not in row:
                raise invalid(
                    f"column {name!r} is missing", column=name, reason="missing", row=index
                )
            value = row[name]
            kind = column["kind"]
            ok = (
                value is None
                or (kind == "numeric" and is_number(value))
                or (kind == "datetime" and parse_datetime(value) is not None)
                or (kind in ("categorical", "text") and isinstance(value, str | int | bool))
            )
            if not ok:
                raise invalid(
                    f"column {name!r} must be {kind}, got {type(value).__name__}",
                    column=name,
                    reason="wrong_type",
                    expected=kind,
                    row=index,
                )
            clean[name] = value
        checked.append(clean)
    return checked
