"""The vector index as RAG uses it: whether it works (and why not), and the writes, each of
which makes the tenant's cached answers stale."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faas.backends.vectors import IndexedChunk, VectorIndex
from faas.services.rag_service.query_cache import QueryCache
from faas.services.rag_service.tables import ChunkRow
from faas.shared.exceptions import DependencyUnavailable

log = logging.getLogger("faas.rag")


@dataclass(frozen=True)
class DocumentChunks:
    """One document's chunk rows, as the index stores them."""

    collection_id: str
    document_id: str
    metadata: dict[str, Any]
    chunks: Sequence[ChunkRow]


class SearchIndex:
    def __init__(self, vectors: VectorIndex, cache: QueryCache) -> None:
        self.vectors = vectors
        self.cache = cache
        self.unavailable: str | None = None

    async def start(self) -> None:
        """A vector store that cannot work (PostgreSQL without pgvector, unreachable) leaves
        RAG answering 503 with the reason while the rest of the platform serves; readiness
        tries again, so installing pgvector needs no restart."""
        try:
            await self.vectors.start()
        except DependencyUnavailable as exc:
            if self.unavailable != exc.message:
                log.warning("RAG search is unavailable: %s", exc.message)
            self.unavailable = exc.message
        else:
            if self.unavailable is not None:
                log.info("RAG search is available again (%s)", self.vectors.backend)
            self.unavailable = None

    async def close(self) -> None:
        await self.vectors.close()

    async def readiness(self) -> dict[str, str | None]:
        """The vector store's check: None when it works, else why not."""
        if self.unavailable is not None:
            await self.start()
        if self.unavailable is not None:
            return {"rag_vectors": self.unavailable}
        ok = await self.vectors.ping()
        return {"rag_vectors": None if ok else f"the {self.vectors.backend} vector store is down"}

    def require(self) -> None:
        if self.unavailable is not None:
            raise DependencyUnavailable(self.unavailable, details={"dependency": "vector_store"})

    async def write(
        self,
        tenant: str,
        collection_id: str,
        document_id: str,
        metadata: dict[str, Any],
        chunks: Sequence[ChunkRow],
    ) -> None:
        """Add (or overwrite) the document's chunks."""
        await self.write_many(
            tenant, [DocumentChunks(collection_id, document_id, metadata, chunks)]
        )

    async def write_many(self, tenant: str, documents: Sequence[DocumentChunks]) -> None:
        """Add (or overwrite) the chunks of many documents in one upsert."""
        await self.vectors.upsert(
            [
                IndexedChunk(
                    chunk_id=c.id,
                    tenant_id=tenant,
                    collection_id=d.collection_id,
                    document_id=d.document_id,
                    text=c.text,
                    vector=np.frombuffer(c.embedding, dtype=np.float32),
                    metadata=d.metadata,
                )
                for d in documents
                for c in d.chunks
            ]
        )
        await self.cache.invalidate(tenant)

    async def replace(
        self,
        tenant: str,
        collection_id: str,
        document_id: str,
        metadata: dict[str, Any],
        chunks: Sequence[ChunkRow],
    ) -> None:
        """The document's chunks are exactly `chunks` (old ones that are gone are dropped)."""
        await self.vectors.delete_document(tenant, document_id)
        await self.write(tenant, collection_id, document_id, metadata, chunks)

    async def delete_document(self, tenant: str, document_id: str) -> None:
        await self.vectors.delete_document(tenant, document_id)
        await self.cache.invalidate(tenant)

    async def delete_collection(self, tenant: str, collection_id: str) -> None:
        await self.vectors.delete_collection(tenant, collection_id)
        await self.cache.invalidate(tenant)
