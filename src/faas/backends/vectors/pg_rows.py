"""SQL fragments shared by the PostgreSQL vector and keyword searches: the table of a
dimension, the pushed-down filters and the row → Hit mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from faas.backends.vectors.base import Hit

TABLE_PREFIX = "faas_vectors_d"
COLUMNS = "chunk_id, document_id, collection_id, text, metadata"


def table(dim: int) -> str:
    return f"{TABLE_PREFIX}{int(dim)}"


def filters_sql(
    params: list[Any], collection_ids: Sequence[str] | None, filters: Mapping[str, Any] | None
) -> str:
    """The WHERE conditions for the filters, appending their values to `params`."""
    sql = ""
    if collection_ids is not None:
        params.append(list(collection_ids))
        sql += f" AND collection_id = ANY(${len(params)}::text[])"
    if filters:
        params.append(orjson.dumps(dict(filters)).decode())
        sql += f" AND metadata @> ${len(params)}::jsonb"
    return sql


def hit(row: asyncpg.Record, score: float) -> Hit:
    meta = orjson.loads(row["metadata"])
    return Hit(row["chunk_id"], row["document_id"], row["collection_id"], score, row["text"], meta)
