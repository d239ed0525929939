"""Hybrid search's fusion: the keyword and vector lists combined into one ranking.

Weighted reciprocal rank fusion with a small constant: a hit scores `w / (k + rank)` from the
vector list plus `(1 - w) / (k + rank)` from the keyword list (ranks from 1, `k` = 1), where
`w`, the vector weight, depends on the query and the embedding space:

- a query that carries an identifier (a token with a digit or an underscore: `NW-4412`,
  `5.15.1`, `nwk_test_`) leans on the keyword list, because embeddings blur codes that differ
  in one character;
- a natural-language query leans on the vector list, because words in a paraphrase rarely
  match the answer's;
- feature-hashing embeddings (`hash:*`) are lexical themselves: their vector list adds little
  to the keyword list and gets a small weight for every query.

Each list is fetched at least 40 deep (search.py's FUSION_DEPTH) for the fused top k: a
document far down one list still adds its share there, which decides between documents the
heads rank alike. A list with weight 0 adds nothing, not even its hits (`vector_weight` 0 is
keyword search, 1 vector search). Ranks,
not scores: BM25, `ts_rank` and cosine need no common scale, and one list's outliers cannot
swamp the other.

Why these: on bench/data/rag_eval, the fusions before (reciprocal rank fusion with equal
weights and k = 60; then z-scores in a convex combination over 10-deep lists) each left hybrid
below the better single list on some query kind with MiniLM. Weighted RRF with k = 1 over
40-deep lists was chosen on the set's `tune` half, from a region of weights where it comes
within 0.010 of the better list on every check (not a single cell), and checked on its
held-out half and on queries written after the choice (docs/benchmarks.md,
`bench/rag_fusion_tune.py`, `bench/rag_quality.py`). A caller may set the weight per request
(`vector_weight` in the search body).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from faas.backends.vectors import Hit

VECTOR_WEIGHT_TEXT = 0.65
VECTOR_WEIGHT_IDENTIFIER = 0.2
VECTOR_WEIGHT_LEXICAL = 0.08
LEXICAL_SPACES = ("hash:",)
RRF_K = 1.0
_IDENTIFIER = re.compile(r"\b(?=[\w.\-]*[\d_])[\w.\-]{2,}")


def has_identifier(text: str) -> bool:
    """Whether `text` holds a code-like token: letters or dots joined to a digit or `_`."""
    return _IDENTIFIER.search(text) is not None


def vector_weight(query_text: str | None, space: str | None) -> float:
    """The vector list's weight for this query, in the embedding space searched (None when
    the caller gave its own query embedding)."""
    if space is not None and space.startswith(LEXICAL_SPACES):
        return VECTOR_WEIGHT_LEXICAL
    if query_text is not None and has_identifier(query_text):
        return VECTOR_WEIGHT_IDENTIFIER
    return VECTOR_WEIGHT_TEXT


def weighted_rrf(
    vector_hits: Sequence[Hit], keyword_hits: Sequence[Hit], weight: float, k: float
) -> list[Hit]:
    """Both lists as one, best first, each hit scored by `weight / (k + rank)` in the vector
    list plus `(1 - weight) / (k + rank)` in the keyword list (ranks from 1); a list with no
    share is left out. A tie keeps the order met: the vector list's hits, then the keyword
    list's others."""
    scores: dict[str, float] = {}
    by_id: dict[str, Hit] = {}
    for hits, share in ((vector_hits, weight), (keyword_hits, 1 - weight)):
        if share <= 0:
            continue
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + share / (k + rank)
            by_id.setdefault(hit.chunk_id, hit)
    order = sorted(scores, key=lambda chunk_id: -scores[chunk_id])
    return [_rescored(by_id[chunk_id], scores[chunk_id]) for chunk_id in order]


def fuse(vector_hits: Sequence[Hit], keyword_hits: Sequence[Hit], weight: float) -> list[Hit]:
    """Hybrid search's fusion: weighted RRF with the constant `RRF_K`."""
    return weighted_rrf(vector_hits, keyword_hits, weight, RRF_K)


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(hit.chunk_id, hit.document_id, hit.collection_id, score, hit.text, hit.metadata)
