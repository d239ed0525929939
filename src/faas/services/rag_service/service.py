"""The RAG service: documents in (chunked, embedded through the gateway, indexed), hybrid
search out, and answers generated through the gateway that cite their sources. This class only
builds the use cases (`collections`, `documents`, `search`, `answering`, `reindex`) and hands
each call to one of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from faas.backends.kv import KeyValueStore
from faas.backends.vectors import VectorIndex
from faas.integrations.events import EventPublisher
from faas.integrations.genai import NOOP_TRACER
from faas.services.gateway_service.client import GatewayClient
from faas.services.rag_service.answering import Answerer
from faas.services.rag_service.bulk import BulkDocuments
from faas.services.rag_service.chunking import Chunker
from faas.services.rag_service.collections import Collections
from faas.services.rag_service.documents import Documents
from faas.services.rag_service.embedding_space import EmbeddingSpaces
from faas.services.rag_service.embeddings import Embedder
from faas.services.rag_service.models import (
    CollectionCreate,
    CollectionView,
    DocumentBatch,
    DocumentBatchIndexed,
    DocumentCreate,
    DocumentIndexed,
    DocumentUpdate,
    DocumentView,
    QueryRequest,
    QueryResponse,
    ReindexRequest,
    SearchRequest,
    SearchResponse,
)
from faas.services.rag_service.query_cache import QueryCache
from faas.services.rag_service.reindex import JOB_KIND as REINDEX_JOB
from faas.services.rag_service.reindex import Reindexer
from faas.services.rag_service.search import Searcher
from faas.services.rag_service.search_index import SearchIndex
from faas.shared import tokens
from faas.shared.context import Identity
from faas.shared.contracts import Page
from faas.shared.cpu import CpuPool
from faas.shared.database import Database

if TYPE_CHECKING:
    from faas.jobs import JobQueue
    from faas.jobs.models import JobView
    from faas.kernel.clients import ServiceClients


class RagService:
    name = "rag"

    def __init__(
        self,
        *,
        db: Database,
        index: VectorIndex,
        kv: KeyValueStore,
        events: EventPublisher,
        clients: ServiceClients,
        embedding_model: str | None = None,
        chat_model: str | None = None,
        query_cache_ttl_s: float = 600.0,
        cpu: CpuPool | None = None,
        jobs: JobQueue | None = None,
        service_identity: Callable[[str, str | None], Identity] | None = None,
    ) -> None:
        self.index = index
        self.chat_model = chat_model
        self.gateway = GatewayClient(clients)
        self.cache = QueryCache(kv, query_cache_ttl_s)
        self.search_index = SearchIndex(index, self.cache)
        embedder = Embedder(self.gateway, embedding_model)
        spaces = EmbeddingSpaces(db)
        self.collections = Collections(db, self.search_index)
        self.documents = Documents(
            db=db,
            index=self.search_index,
            collections=self.collections,
            chunker=Chunker(cpu or CpuPool(), embedder),
            spaces=spaces,
            events=events,
        )
        self.bulk = BulkDocuments(self.documents)
        self.searcher = Searcher(
            db=db,
            index=self.search_index,
            collections=self.collections,
            embedder=embedder,
            spaces=spaces,
            tracer=clients.tracer or NOOP_TRACER,
        )
        self.answerer = Answerer(self)
        self.reindexer = Reindexer(
            db=db,
            index=self.search_index,
            cache=self.cache,
            collections=self.collections,
            embedder=embedder,
            jobs=jobs,
            service_identity=service_identity or (lambda t, u: Identity(tenant_id=t, user_id=u)),
        )
        if jobs is not None:
            jobs.registry.register(REINDEX_JOB, self.reindexer.run)

    async def start(self) -> None:
        await self.search_index.start()
        # Load the tokenizer now: building it holds the GIL for ~100 ms, which at the first
        # request stalled every other one.
        await asyncio.to_thread(tokens.encoding)

    async def stop(self) -> None:
        await self.search_index.close()

    async def readiness(self) -> dict[str, str | None]:
        return await self.search_index.readiness()

    async def create_collection(self, tenant: str, body: CollectionCreate) -> CollectionView:
        return await self.collections.create(tenant, body)

    async def list_collections(self, tenant: str) -> list[CollectionView]:
        return await self.collections.list_all(tenant)

    async def delete_collection(self, identity: Identity, name: str) -> int:
        return await self.collections.delete(identity.tenant_id, name)

    async def submit_reindex(self, identity: Identity, body: ReindexRequest) -> JobView:
        return await self.reindexer.submit(identity, body)

    async def create_document(self, identity: Identity, body: DocumentCreate) -> DocumentIndexed:
        return await self.documents.create(identity.tenant_id, body)

    async def create_documents(
        self, identity: Identity, body: DocumentBatch
    ) -> DocumentBatchIndexed:
        outcomes = await self.bulk.create_many(identity.tenant_id, body.documents)
        return DocumentBatchIndexed(documents=outcomes)

    async def update_document(
        self, identity: Identity, document_id: str, body: DocumentUpdate
    ) -> DocumentIndexed:
        return await self.documents.update(identity.tenant_id, document_id, body)

    async def delete_document(self, identity: Identity, document_id: str) -> None:
        await self.documents.delete(identity.tenant_id, document_id)

    async def get_document(self, tenant: str, document_id: str) -> DocumentView:
        return await self.documents.get(tenant, document_id)

    async def list_documents(
        self, tenant: str, collection: str | None, limit: int, offset: int
    ) -> Page[DocumentView]:
        return await self.documents.page(tenant, collection, limit, offset)

    async def search(self, identity: Identity, body: SearchRequest) -> SearchResponse:
        return await self.searcher.search(identity.tenant_id, body)

    async def answer(self, identity: Identity, body: QueryRequest) -> QueryResponse:
        return await self.answerer.answer(identity, body)

    async def stream_answer(self, identity: Identity, body: QueryRequest) -> AsyncIterator[bytes]:
        """The answer as server-sent events (see `Answerer.stream`)."""
        return await self.answerer.stream(identity, body)
