"""Hybrid search runs its vector and keyword legs side by side, and a failing leg fails the
search with its own error (the other leg cancelled), never an ExceptionGroup."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from faas.backends.vectors import Hit
from faas.services.rag_service.models import SearchRequest
from faas.services.rag_service.search import Searcher
from faas.services.rag_service.search_index import SearchIndex
from faas.shared.exceptions import ValidationFailed


class Legs:
    """A vector index whose vector leg can only finish once the keyword leg has started."""

    backend = "fake"

    def __init__(self, *, vector_fails: bool = False) -> None:
        self.keyword_started = asyncio.Event()
        self.keyword_cancelled = False
        self.vector_fails = vector_fails

    async def search_vector(self, *args: Any, **kwargs: Any) -> list[Hit]:
        await asyncio.wait_for(self.keyword_started.wait(), timeout=5)
        if self.vector_fails:
            raise ValidationFailed("the vector leg failed")
        return []

    async def search_keyword(self, *args: Any, **kwargs: Any) -> list[Hit]:
        self.keyword_started.set()
        if self.vector_fails:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.keyword_cancelled = True
                raise
        return []


def searcher(legs: Legs) -> Searcher:
    unused = cast(Any, None)  # a query embedding, no collection and no hits need none of these
    index = SearchIndex(cast(Any, legs), cache=unused)
    return Searcher(db=unused, index=index, collections=unused, embedder=unused, spaces=unused)


HYBRID = SearchRequest(query_text="launch code", query_embedding=[1.0, 0.0], mode="hybrid")


async def test_hybrid_search_runs_both_legs_at_once() -> None:
    response = await searcher(Legs()).search("acme", HYBRID)
    assert response.results == []


async def test_a_failing_leg_fails_the_search_with_its_own_error() -> None:
    legs = Legs(vector_fails=True)
    with pytest.raises(ValidationFailed, match="the vector leg failed"):
        await searcher(legs).search("acme", HYBRID)
    assert legs.keyword_cancelled
