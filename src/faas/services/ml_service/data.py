"""Tabular data without pandas: parsing uploads (CSV, JSON records, JSON lines) into rows
within the dataset limits, and inferring a column schema (numeric, categorical, datetime, text)."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeGuard

import orjson

from faas.shared.exceptions import ValidationFailed

MAX_ROWS = 200_000
MAX_COLUMNS = 500
MAX_COLUMN_NAME = 128
# CSV integers stay integers, as in JSON: a 0/1 label must give the classes "0" and "1", not
# "0.0" and "1.0" (category values are compared as text). Beyond 2**53 a float is as exact.
INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_EXACT_INT = 2**53

Row = dict[str, Any]


def invalid(message: str, **details: Any) -> ValidationFailed:
    """A 422 whose details say which row, column or reason."""
    return ValidationFailed(message, details=details)


# -- parsing -----------------------------------------------------------------------------------


def parse_upload(raw: bytes, filename: str, content_type: str | None) -> tuple[list[Row], str]:
    """Rows and the detected format ("csv", "json" or "jsonl") of an uploaded file."""
    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    stripped = text.lstrip()
    lower = filename.lower()
    if not stripped:
        raise invalid("the dataset has no rows", reason="empty")
    if stripped.startswith("[") or lower.endswith(".json"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"the JSON is malformed: {exc}", reason="malformed") from exc
        if not isinstance(value, list):
            raise invalid("a JSON dataset must be a list of records", reason="malformed")
        return check_records(value), "json"
    if stripped.startswith("{") or lower.endswith((".jsonl", ".ndjson")):
        rows: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise invalid(f"line {number} is not JSON", reason="malformed") from exc
        return check_records(rows), "jsonl"
    return parse_csv(text), "csv"


def parse_csv(text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise invalid("the dataset has no rows", reason="empty") from None
    header = [h.strip() for h in header]
    _check_columns(header)
    rows: list[Row] = []
    for number, record in enumerate(reader, start=2):
        if not record:
            continue
        if len(record) != len(header):
            raise invalid(
                f"line {number} has {len(record)} fields, the header has {len(header)}",
                reason="ragged",
                line=number,
            )
        rows.append({h: _csv_value(v) for h, v in zip(header, record, strict=True)})
        if len(rows) > MAX_ROWS:
            raise invalid(f"a dataset holds at most {MAX_ROWS} rows", reason="too_many_rows")
    if not rows:
        raise invalid("the dataset has no rows", reason="empty")
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
        raise invalid("the dataset has no rows", reason="empty")
    if len(records) > MAX_ROWS:
        raise invalid(f"a dataset holds at most {MAX_ROWS} rows", reason="too_many_rows")
    first = records[0]
    if not isinstance(first, dict) or not first:
        raise invalid("row 0 is not a non-empty object", reason="malformed", row=0)
    columns = list(first)
    _check_columns(columns)
    keys = set(columns)
    rows: list[Row] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise invalid(f"row {index} is not an object", reason="malformed", row=index)
        if record.keys() != keys:
            missing = sorted(keys - record.keys())
            extra = sorted(record.keys() - keys)
            raise invalid(
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
                raise invalid(
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
        raise invalid(f"a dataset holds at most {MAX_COLUMNS} columns", reason="too_many_columns")
    if len(set(columns)) != len(columns):
        raise invalid("column names must be unique", reason="duplicate_columns")
    for name in columns:
        if not isinstance(name, str) or not name or len(name) > MAX_COLUMN_NAME:
            raise invalid(f"bad column name {name!r}", reason="bad_column_name")


# -- schema ------------------------------------------------------------------------------------


def parse_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 8 or not value[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def is_number(value: Any) -> TypeGuard[int | float]:
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
    if all(is_number(v) for v in values):
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
