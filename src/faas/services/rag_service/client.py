"""How other services call RAG: search the caller's documents, and index one. Requests and
answers are RAG's own models; errors arrive as the shared exceptions with RAG's status and
code (an unknown collection stays a 404)."""

from __future__ import annotations

from urllib.parse import quote

from faas.kernel.clients import ApiClient
from faas.services.rag_service.models import (
    DocumentBatch,
    DocumentBatchIndexed,
    DocumentCreate,
    DocumentIndexed,
    DocumentView,
    QueryRequest,
    QueryResponse,
    SearchRequest,
    SearchResponse,
)
from faas.shared.contracts import Page


class RagClient(ApiClient):
    service = "rag"

    async def search(self, request: SearchRequest) -> SearchResponse:
        """The best-scoring chunks of the caller's tenant for a query (keyword, vector or
        hybrid), e.g. for an agent's `rag_search` tool."""
        return await self.model(
            SearchResponse,
            "POST",
            "/api/v1/rag/search",
            json=request.model_dump(mode="json"),
        )

    async def add_document(self, document: DocumentCreate) -> DocumentIndexed:
        """Chunk, embed and index a document (e.g. the text ingestion extracted from a file).
        Content already in the collection is not indexed again: the answer then says
        `duplicate` and names the existing document."""
        return await self.model(
            DocumentIndexed,
            "POST",
            "/api/v1/rag/documents",
            json=document.model_dump(mode="json"),
        )

    async def query(self, request: QueryRequest) -> QueryResponse:
        """A grounded answer with citations (not streamed), e.g. for the MCP `rag_query` tool."""
        body = request.model_dump(mode="json", exclude_unset=True) | {"stream": False}
        return await self.model(QueryResponse, "POST", "/api/v1/rag/query", json=body)

    async def list_documents(self, limit: int, offset: int) -> Page[DocumentView]:
        """A page of the caller's documents, newest first."""
        params = {"limit": limit, "offset": offset}
        return await self.model(Page[DocumentView], "GET", "/api/v1/rag/documents", params=params)

    async def get_document(self, document_id: str) -> DocumentView:
        """One document of the caller's tenant; `NotFound` otherwise."""
        path = f"/api/v1/rag/documents/{quote(document_id, safe='')}"
        return await self.model(DocumentView, "GET", path)

    async def add_documents(self, batch: DocumentBatch) -> DocumentBatchIndexed:
        """Index many documents in one call (bulk ingestion): one outcome per document, in
        order, each `indexed` (possibly as a duplicate) or with its `error`."""
        return await self.model(
            DocumentBatchIndexed,
            "POST",
            "/api/v1/rag/documents:batch",
            json=batch.model_dump(mode="json"),
        )
