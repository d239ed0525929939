"""How other services call RAG: search the caller's documents, and index one. Requests and
answers are RAG's own models; errors arrive as the shared exceptions with RAG's status and
code (an unknown collection stays a 404)."""

from __future__ import annotations

from faas.kernel.clients import ApiClient
from faas.services.rag_service.models import (
    DocumentCreate,
    DocumentIndexed,
    SearchRequest,
    SearchResponse,
)


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
