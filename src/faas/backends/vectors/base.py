"""The search-index port for RAG chunks: cosine vector search and keyword search per tenant.

This index is separate from the relational documents/chunks tables: it holds only what search
needs (text, vector, filterable metadata) and can be rebuilt from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import orjson

FloatArray = npt.NDArray[np.floating[Any]]

# Bounds the work one user query can cause in the full-text engines.
MAX_QUERY_TERMS = 32

_TERM = re.compile(r"[^\W_]+")
# English function words, left out of a keyword search: PostgreSQL's `english` text search
# configuration leaves exactly these out of its lexemes (its english.stop list, the Snowball
# one; `tests/contract/test_vector_contract.py` holds the two equal), so both stores look for the
# same words. BM25 weighs them little, but OR-ed into SQLite's match they pulled in documents
# sharing nothing else with a question ("what is the ..."), and hybrid search's fusion had to
# outvote that filler. `s`, `t` and `don` are the pieces of "what's" and "don't".
_STOPWORD_TEXT = """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
her hers herself it its itself they them their theirs themselves what which who whom this that
these those am is are was were be been being have has had having do does did doing a an the
and but if or because as until while of at by for with about against between into through
during before after above below to from up down in out on off over under again further then
once here there when where why how all any both each few more most other some such no nor not
only own same so than too very s t can will just don should now
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    chunk_id: str
    tenant_id: str
    collection_id: str
    document_id: str
    text: str
    vector: FloatArray
    """float32, L2-normalised; any dimension (chunks of different dimensions coexist and a query
    only ever meets chunks of its own dimension)."""
    metadata: dict[str, Any]
    """JSON-able; filterable by equality of top-level keys with scalar values."""


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: str
    document_id: str
    collection_id: str
    score: float
    text: str
    metadata: dict[str, Any]


@runtime_checkable
class VectorIndex(Protocol):
    """Chunks are keyed by (tenant_id, chunk_id); no method ever reads across tenants.

    Filters: `collection_ids` keeps chunks of those collections (an empty list keeps none);
    `filters` keeps chunks whose metadata has every key with an equal value (`True` ≠ `1`).
    Filters are applied before ranking, so k hits come back whenever k chunks match.
    """

    backend: str

    async def start(self) -> None:
        """Connect and create the index's own schema if missing (idempotent)."""
        ...

    async def close(self) -> None: ...

    async def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Insert or replace by (tenant_id, chunk_id): text, vector and metadata."""
        ...

    async def delete_chunks(self, tenant_id: str, chunk_ids: Sequence[str]) -> int: ...

    async def delete_document(self, tenant_id: str, document_id: str) -> int: ...

    async def delete_collection(self, tenant_id: str, collection_id: str) -> int: ...

    async def search_vector(
        self,
        tenant_id: str,
        vector: FloatArray,
        k: int,
        *,
        collection_ids: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The k chunks of the vector's dimension most cosine-similar to it, highest first."""
        ...

    async def search_keyword(
        self,
        tenant_id: str,
        query: str,
        k: int,
        *,
        collection_ids: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """BM25-like relevance to any word of the user's text but English function words (never
        parsed as query syntax)."""
        ...

    async def count(self, tenant_id: str) -> int: ...

    async def ping(self) -> bool: ...


def query_terms(query: str) -> list[str]:
    """The distinct words of user text that a keyword search looks for: letters and digits
    only, so no engine syntax survives, and no English function word (STOPWORDS)."""
    seen: dict[str, None] = {}
    for term in _TERM.findall(query.lower()):
        if term in STOPWORDS:
            continue
        seen.setdefault(term, None)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return list(seen)


def normalised(vector: FloatArray) -> npt.NDArray[np.float32]:
    """A 1-D float32 unit vector (zero vectors stay zero); ValueError when not usable."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.size == 0:
        raise ValueError("a vector needs at least one dimension")
    norm = float(np.linalg.norm(array))
    if not math.isfinite(norm):
        raise ValueError("a vector must hold finite numbers")
    return array / norm if norm > 0 else array


def canonical(value: Any) -> str:
    """JSON text equal for equal JSON values: `true` ≠ `1`, `1.0` = `1`, object keys sorted."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)  # beyond 2**63 it stays a float: orjson has no larger integers
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def matches(metadata: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    return all(
        key in metadata and canonical(metadata[key]) == canonical(value)
        for key, value in filters.items()
    )
