"""Search: vector, keyword or both fused by rank, optionally diversified by MMR, as hits that
carry their document's title and source."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue
from sqlalchemy import select

from faas.backends.vectors import Hit
from faas.integrations.genai import NOOP_TRACER, is_tracing, operation_span
from faas.services.rag_service.collections import Collections
from faas.services.rag_service.embedding_space import EmbeddingSpaces
from faas.services.rag_service.embeddings import Embedder, unit_vectors
from faas.services.rag_service.fusion import fuse, vector_weight
from faas.services.rag_service.models import SearchHit, SearchRequest, SearchResponse
from faas.services.rag_service.retrieval import mmr
from faas.services.rag_service.search_index import SearchIndex
from faas.services.rag_service.tables import ChunkRow, DocumentRow
from faas.shared.database import Database
from faas.shared.exceptions import ValidationFailed

FUSION_DEPTH = 40
# Candidates a rerank stage reorders (each one is scored by the reranker: cost grows with it).
RERANK_DEPTH = 20
A = TypeVar("A")
B = TypeVar("B")


def candidate_depth(body: SearchRequest) -> int:
    """How many hits each list is fetched with. MMR needs candidates to choose from (4x
    top_k), a rerank stage its candidates, and hybrid fuses each list at least 40 deep
    (fusion.py): a document's share from far down one list decides between documents the
    heads rank alike."""
    depth = body.top_k * 4 if body.mmr else body.top_k
    if body.mode == "hybrid":
        depth = max(depth, FUSION_DEPTH)
    if body.rerank:
        depth = max(depth, RERANK_DEPTH)
    return depth


class Searcher:
    def __init__(
        self,
        *,
        db: Database,
        index: SearchIndex,
        collections: Collections,
        embedder: Embedder,
        spaces: EmbeddingSpaces,
        tracer: Tracer = NOOP_TRACER,
    ) -> None:
        self.tracer = tracer
        self.db = db
        self.index = index
        self.collections = collections
        self.embedder = embedder
        self.spaces = spaces

    async def search(self, tenant: str, body: SearchRequest) -> SearchResponse:
        if not is_tracing(self.tracer):
            return await self._search(tenant, body)
        attributes: dict[str, AttributeValue] = {
            "faas.rag.k": body.top_k,
            "faas.rag.mode": body.mode,
            "faas.rag.rerank": bool(body.rerank),
            "faas.rag.mmr": body.mmr,
        }
        if body.collection:
            attributes["faas.rag.collection"] = body.collection
        with operation_span(self.tracer, "rag.search", attributes) as span:
            response = await self._search(tenant, body)
            span.set_attribute("faas.rag.hits", len(response.results))
            return response

    async def _search(self, tenant: str, body: SearchRequest) -> SearchResponse:
        self.index.require()
        collection_ids = (
            [await self.collections.resolve(tenant, body.collection, create=False)]
            if body.collection
            else None
        )
        depth = candidate_depth(body)
        vector: np.ndarray | None = None
        space: str | None = None
        vector_hits: list[Hit] = []
        keyword_hits: list[Hit] = []
        if body.mode == "hybrid":
            # The legs wait on different things (the embedder and the vector store, the
            # full-text engine): run them side by side, so a search costs the slower leg.
            (vector, space, vector_hits), keyword_hits = await _side_by_side(
                self._vector_leg(tenant, body, collection_ids, depth),
                self._keyword_leg(tenant, body, collection_ids, depth),
            )
        elif body.mode == "vector":
            vector, space, vector_hits = await self._vector_leg(tenant, body, collection_ids, depth)
        else:
            keyword_hits = await self._keyword_leg(tenant, body, collection_ids, depth)
        if body.mode == "hybrid":
            weight = body.vector_weight
            if weight is None:
                weight = vector_weight(body.query_text, space)
            hits = fuse(vector_hits, keyword_hits, weight)
        else:
            hits = vector_hits or keyword_hits
        if body.mmr and vector is not None and hits:
            hits = await self._diversify(hits, vector, body.top_k, body.mmr_lambda)
        if body.rerank and hits:
            # After MMR, which would otherwise undo the reranker's order: MMR picks, the
            # reranker orders what it picked.
            hits = await self._rerank(hits[: max(body.top_k, RERANK_DEPTH)], body)
        return SearchResponse(mode=body.mode, results=await self._views(tenant, hits[: body.top_k]))

    async def _vector_leg(
        self, tenant: str, body: SearchRequest, collection_ids: list[str] | None, depth: int
    ) -> tuple[np.ndarray, str | None, list[Hit]]:
        vector, space = await self._query_vector(tenant, body, collection_ids)
        hits = await self.index.vectors.search_vector(
            tenant, vector, depth, collection_ids=collection_ids, filters=body.filters
        )
        if body.threshold is not None:
            hits = [h for h in hits if h.score >= body.threshold]
        return vector, space, hits

    async def _keyword_leg(
        self, tenant: str, body: SearchRequest, collection_ids: list[str] | None, depth: int
    ) -> list[Hit]:
        assert body.query_text is not None
        return await self.index.vectors.search_keyword(
            tenant, body.query_text, depth, collection_ids=collection_ids, filters=body.filters
        )

    async def _query_vector(
        self, tenant: str, body: SearchRequest, collection_ids: list[str] | None
    ) -> tuple[np.ndarray, str | None]:
        """The query as a unit vector: the caller's own embedding (space unknown), or the query
        text embedded in the space of the collections searched, with that space."""
        if body.query_embedding is not None:
            raw = np.asarray([body.query_embedding], dtype=np.float64)
            # float32 overflows to inf above ~3.4e38, and inf has no direction.
            if not np.isfinite(raw).all() or np.abs(raw).max() > np.finfo(np.float32).max:
                raise ValidationFailed(
                    "query_embedding must hold finite numbers within float32 range",
                    details={"field": "query_embedding"},
                )
            vector: np.ndarray = unit_vectors(raw.astype(np.float32))[0]
            return vector, None
        assert body.query_text is not None
        matrix, model = await self.embedder.embed([body.query_text])
        vector = matrix[0]
        await self.spaces.check(tenant, collection_ids, model, len(vector))
        return vector, model

    async def _rerank(self, hits: list[Hit], body: SearchRequest) -> list[Hit]:
        """The hits in the gateway reranker's order, scored by it."""
        assert body.query_text is not None
        model = body.rerank if isinstance(body.rerank, str) else None
        ranking = await self.embedder.gateway.rerank(body.query_text, [h.text for h in hits], model)
        return [replace(hits[i], score=score) for i, score in ranking if 0 <= i < len(hits)]

    async def _diversify(
        self, hits: list[Hit], query: np.ndarray, k: int, lambda_: float
    ) -> list[Hit]:
        async with self.db.session() as session:
            rows = await session.execute(
                select(ChunkRow.id, ChunkRow.embedding).where(
                    ChunkRow.id.in_([h.chunk_id for h in hits])
                )
            )
            embeddings = {cid: np.frombuffer(blob, dtype=np.float32) for cid, blob in rows.all()}
        usable = [h for h in hits if h.chunk_id in embeddings]
        if not usable or len({len(v) for v in embeddings.values()} | {len(query)}) > 1:
            return hits[:k]
        matrix = np.vstack([embeddings[h.chunk_id] for h in usable])
        return [usable[i] for i in mmr(query, matrix, k, lambda_)]

    async def _views(self, tenant: str, hits: list[Hit]) -> list[SearchHit]:
        if not hits:
            return []
        async with self.db.session() as session:
            chunk_rows = await session.execute(
                select(ChunkRow.id, ChunkRow.meta, DocumentRow.title, DocumentRow.source)
                .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
                .where(ChunkRow.tenant_id == tenant, ChunkRow.id.in_([h.chunk_id for h in hits]))
            )
            extra = {cid: (meta, title, source) for cid, meta, title, source in chunk_rows.all()}
        views = []
        for hit in hits:
            if hit.chunk_id not in extra:  # deleted between search and lookup
                continue
            meta, title, source = extra[hit.chunk_id]
            views.append(
                SearchHit(
                    chunk_id=hit.chunk_id,
                    document_id=hit.document_id,
                    collection_id=hit.collection_id,
                    title=title,
                    text=hit.text,
                    score=round(hit.score, 6),
                    metadata={**hit.metadata, **meta, "source": source},
                )
            )
        return views


async def _side_by_side(
    first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]
) -> tuple[A, B]:
    """Both results; when either fails, the other is cancelled and that error is raised as
    it is (a `FaaSError` keeps its status), not wrapped in an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            a, b = group.create_task(first), group.create_task(second)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return a.result(), b.result()
