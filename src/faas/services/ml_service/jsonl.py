"""Rows as JSON-lines files in the data dir (dataset rows, batch predictions), written
atomically so a reader never sees half a file."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from faas.shared.exceptions import NotFound


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> str:
    """Write the rows; the sha256 of the file, which lineage records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = b"\n".join(orjson.dumps(r) for r in rows) + b"\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return hashlib.sha256(blob).hexdigest()


def read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound("the dataset's rows are missing from the data dir") from exc
    return [orjson.loads(line) for line in blob.splitlines() if line]
