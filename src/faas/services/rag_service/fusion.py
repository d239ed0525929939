"""Hybrid search's fusion: the keyword and vector lists combined into one ranking.

Each list's scores are standardised (z-scores within the list, so BM25, `ts_rank` and cosine
become comparable) and combined as `(1 - w) * keyword + w * vector`, where `w`, the vector
weight, depends on the query and the embedding space:

- a query that carries an identifier (a token with a digit or an underscore: `NW-4412`,
  `5.15.1`, `nwk_test_`) leans on the keyword list, because embeddings blur codes that differ
  in one character;
- a natural-language query leans on the vector list, because words in a paraphrase rarely
  match the answer's;
- feature-hashing embeddings (`hash:*`) are lexical themselves: their vector list adds little
  to the keyword list and gets a small weight for every query.

Why not reciprocal rank fusion with equal weights (the fusion before): it let a weak list push
the answer down, so hybrid fell below vector-only on paraphrases with MiniLM and below
keyword-only everywhere with hashing. The weights were chosen on the tuning half of
bench/data/rag_eval and checked on its held-out half (docs/benchmarks.md, `bench/rag_quality.py`).
A caller may set the weight per request (`vector_weight` in the search body).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from faas.backends.vectors import Hit

VECTOR_WEIGHT_TEXT = 0.7
VECTOR_WEIGHT_IDENTIFIER = 0.15
VECTOR_WEIGHT_LEXICAL = 0.05
LEXICAL_SPACES = ("hash:",)
# The standard score of a hit missing from one list: below nearly everything that list holds.
ABSENT_SCORE = -2.0
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


def standard_scores(hits: Sequence[Hit]) -> dict[str, float]:
    """Each hit's z-score within its list; all 0.0 when the scores do not vary."""
    if not hits:
        return {}
    mean = sum(h.score for h in hits) / len(hits)
    spread = math.sqrt(sum((h.score - mean) ** 2 for h in hits) / len(hits))
    if spread == 0 or not math.isfinite(spread):
        return {h.chunk_id: 0.0 for h in hits}
    return {h.chunk_id: (h.score - mean) / spread for h in hits}


def fuse(vector_hits: Sequence[Hit], keyword_hits: Sequence[Hit], weight: float) -> list[Hit]:
    """Both lists as one, best first, each hit scored by its fused score. A tie goes to the hit
    ranked higher in either list."""
    keyword = standard_scores(keyword_hits)
    vector = standard_scores(vector_hits)
    best_rank: dict[str, int] = {}
    by_id: dict[str, Hit] = {}
    for hits in (keyword_hits, vector_hits):
        for rank, hit in enumerate(hits):
            by_id.setdefault(hit.chunk_id, hit)
            best_rank[hit.chunk_id] = min(rank, best_rank.get(hit.chunk_id, rank))
    fused = {
        chunk_id: (1 - weight) * keyword.get(chunk_id, ABSENT_SCORE)
        + weight * vector.get(chunk_id, ABSENT_SCORE)
        for chunk_id in by_id
    }
    order = sorted(fused, key=lambda chunk_id: (-fused[chunk_id], best_rank[chunk_id]))
    return [_rescored(by_id[chunk_id], fused[chunk_id]) for chunk_id in order]


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(hit.chunk_id, hit.document_id, hit.collection_id, score, hit.text, hit.metadata)
