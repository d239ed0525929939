"""Keyword search on PostgreSQL: rank only the chunks that match the most query words.

`ts_rank` reads every matching row, and words common in a corpus match a large share of it
(three of the benchmark's words: 29k of 100k chunks, 37 of its 47 ms). So chunks are ordered
first by how many distinct query words (lexemes) they hold, then by `ts_rank`, and the GIN index
finds the chunks of the highest such level directly, as a disjunction of conjunctions; a lower
level is read only while fewer than k chunks are found. The top k in that order is exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from faas.backends.vectors.base import Hit
from faas.backends.vectors.pg_rows import COLUMNS, filters_sql, hit

# A level needing more conjunctions than this (many query words) is not worth a GIN probe of
# its own: the search goes straight to the plain OR, which reads every match as before.
MAX_CONJUNCTIONS = 64

_LEXEMES = (
    "SELECT coalesce(array_agg(DISTINCT l ORDER BY l), '{}') "
    "FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS l"
)


def _quoted(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def levels(lexemes: Sequence[str]) -> list[str]:
    """The tsquery of each level, from "every lexeme" down to the plain OR of them, skipping
    the levels whose disjunction would exceed MAX_CONJUNCTIONS."""
    quoted = [_quoted(x) for x in lexemes]
    queries = []
    for level in range(len(quoted), 1, -1):
        if math.comb(len(quoted), level) > MAX_CONJUNCTIONS:
            break
        clauses = itertools.combinations(quoted, level)
        queries.append(" | ".join("(" + " & ".join(c) + ")" for c in clauses))
    queries.append(" | ".join(quoted))
    return queries


async def search_keyword(
    conn: asyncpg.Connection,
    tables: Sequence[str],
    tenant_id: str,
    words: Sequence[str],
    k: int,
    collection_ids: Sequence[str] | None,
    filters: Mapping[str, Any] | None,
) -> list[Hit]:
    """The k best chunks over `tables`, scored as matched lexemes + ts_rank (which is < 1, so
    the score orders by level first)."""
    lexemes: list[str] = await conn.fetchval(_LEXEMES, " ".join(words))
    if not lexemes:
        return []
    queries = levels(lexemes)
    params: list[Any] = [tenant_id, "", lexemes, queries[-1]]
    where = filters_sql(params, collection_ids, filters)
    params.append(k)
    hits: list[Hit] = []
    for query in queries:
        params[1] = query
        hits = []
        for name in tables:
            sql = (
                f"SELECT {COLUMNS}, (length(tsv) - length(ts_delete(tsv, $3::text[])))"
                " + ts_rank(tsv, $4::tsquery, 1) AS score "
                f"FROM {name} WHERE tenant_id = $1 AND tsv @@ $2::tsquery{where} "
                f"ORDER BY score DESC, chunk_id LIMIT ${len(params)}"
            )
            hits.extend(hit(r, float(r["score"])) for r in await conn.fetch(sql, *params))
        if len(hits) >= k:
            break
    hits.sort(key=lambda h: (-h.score, h.chunk_id))
    return hits[:k]
