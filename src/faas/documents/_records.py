"""CSV and JSON records to text: one `key: value` line or block per record, so that a
retrieved chunk carries the column names its values belong to."""

from __future__ import annotations

import csv
import io
import json
from itertools import zip_longest
from typing import Any

from faas.documents._model import ParseLimits, UnreadableDocument

_SNIFF_CHARS = 64 * 1024
_TITLE_KEYS = ("title", "name")


def csv_to_text(text: str, limits: ParseLimits) -> tuple[str, dict[str, Any]]:
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    lines: list[str] = []
    try:
        header = next(reader, [])
        names = [" ".join(h.split()) or f"column_{i + 1}" for i, h in enumerate(header)]
        for number, row in enumerate(reader, start=1):
            if number > limits.max_csv_rows:
                raise UnreadableDocument(
                    f"CSV has more than {limits.max_csv_rows} rows",
                    reason="too_large",
                    details={"max_csv_rows": limits.max_csv_rows},
                )
            fields = []
            for i, (name, value) in enumerate(zip_longest(names, row, fillvalue="")):
                cleaned = " ".join(value.split())
                if cleaned:
                    fields.append(f"{name or f'column_{i + 1}'}: {cleaned}")
            if fields:
                lines.append("; ".join(fields))
    except csv.Error as exc:
        raise UnreadableDocument(
            f"CSV is malformed at line {reader.line_num}: {exc}",
            reason="corrupt",
            details={"line": reader.line_num},
        ) from exc
    delimiter = getattr(dialect, "delimiter", ",")
    return "\n".join(lines), {"columns": names, "rows": len(lines), "delimiter": delimiter}


def json_to_text(text: str, limits: ParseLimits) -> tuple[str, str | None, dict[str, Any]]:
    too_deep = UnreadableDocument(
        f"JSON is nested deeper than {limits.max_json_depth} levels",
        reason="too_large",
        details={"max_json_depth": limits.max_json_depth},
    )
    try:
        value: Any = json.loads(text)
        lines_format = False
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:
        value, lines_format = _json_lines(text, exc), True
    records: list[Any]
    preamble: dict[str, Any] = {}
    title: str | None = None
    if isinstance(value, list):
        records = value
    elif isinstance(value, dict):
        key = next(
            (k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)),
            None,
        )
        records = value[key] if key is not None else [value]
        preamble = {k: v for k, v in value.items() if k != key} if key is not None else {}
        found = next((value[k] for k in _TITLE_KEYS if isinstance(value.get(k), str)), None)
        title = (" ".join(found.split()) or None) if found else None
    else:
        records = [value]
    blocks = [_flatten(preamble, limits.max_json_depth, too_deep)] if preamble else []
    blocks.extend(_flatten(record, limits.max_json_depth, too_deep) for record in records)
    metadata = {"records": len(records), "json_lines": lines_format}
    return "\n\n".join(block for block in blocks if block), title, metadata


def _json_lines(text: str, error: ValueError) -> list[Any]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) < 2:
        raise UnreadableDocument(
            f"JSON is malformed: {error}", reason="corrupt", details={"error": str(error)}
        ) from error
    records = []
    for number, line in lines:
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError) as exc:
            raise UnreadableDocument(
                f"JSON is malformed at line {number}: {exc}",
                reason="corrupt",
                details={"line": number},
            ) from exc
    return records


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(str(value).split())


def _flatten(record: Any, max_depth: int, too_deep: UnreadableDocument) -> str:
    """`a.b: value` lines, depth-first in key order, without recursion."""
    lines: list[str] = []
    stack: list[tuple[str, Any, int]] = [("", record, 0)]
    while stack:
        prefix, value, depth = stack.pop()
        if depth > max_depth:
            raise too_deep
        if isinstance(value, dict):
            items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
        elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            items = [(f"{prefix}.{i}" if prefix else str(i), v) for i, v in enumerate(value)]
        elif isinstance(value, list):
            if value:
                lines.append(f"{prefix}: {', '.join(_scalar(v) for v in value)}")
            continue
        else:
            text = _scalar(value)
            if text:
                lines.append(f"{prefix}: {text}" if prefix else text)
            continue
        stack.extend((key, child, depth + 1) for key, child in reversed(items))
    return "\n".join(lines)
