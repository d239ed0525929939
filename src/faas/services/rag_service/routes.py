"""HTTP routes of the RAG service: one router per sub-domain, each handler one use-case call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Query
from starlette.responses import Response, StreamingResponse

from faas.jobs.models import JobView
from faas.services.rag_service.models import (
    NAME_PATTERN,
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
from faas.shared.api import PageDep, caller, respond
from faas.shared.contracts import Page, ServiceResponse

if TYPE_CHECKING:
    from faas.services.rag_service.service import RagService

PREFIX = "/api/v1/rag"
CollectionName = Annotated[str, Path(pattern=NAME_PATTERN)]
CollectionQuery = Annotated[str | None, Query(pattern=NAME_PATTERN)]
DocumentId = Annotated[str, Path(min_length=1, max_length=64)]


def collection_routes(service: RagService) -> APIRouter:
    router = APIRouter()

    @router.post("/collections", status_code=201, response_model=ServiceResponse[CollectionView])
    async def create_collection(body: CollectionCreate) -> Response:
        view = await service.create_collection(caller().tenant_id, body)
        return respond(view, status_code=201)

    @router.get("/collections", response_model=ServiceResponse[list[CollectionView]])
    async def list_collections() -> Response:
        views = await service.list_collections(caller().tenant_id)
        return respond([v.model_dump(mode="json") for v in views])

    @router.delete("/collections/{name}", response_model=ServiceResponse[dict[str, int]])
    async def delete_collection(name: CollectionName) -> Response:
        removed = await service.delete_collection(caller(), name)
        return respond({"documents_removed": removed})

    @router.post("/reindex", status_code=202, response_model=ServiceResponse[JobView])
    async def reindex(body: ReindexRequest) -> Response:
        """Re-embed a collection (or every one) with the gateway's current embedding model, as
        a job: follow it at `/api/v1/jobs/{id}`. Needed after the embedding model changed."""
        job = await service.submit_reindex(caller(), body)
        return respond(job, status_code=202)

    return router


def document_routes(service: RagService) -> APIRouter:
    router = APIRouter()

    @router.post("/documents", status_code=201, response_model=ServiceResponse[DocumentIndexed])
    async def create_document(body: DocumentCreate) -> Response:
        """Chunk, embed and index a document. Identical content already in the collection is
        not indexed again: the answer is 200 with `duplicate: true` and the existing id."""
        result = await service.create_document(caller(), body)
        return respond(result, status_code=200 if result.duplicate else 201)

    @router.post("/documents:batch", response_model=ServiceResponse[DocumentBatchIndexed])
    async def create_documents(body: DocumentBatch) -> Response:
        """Index up to 256 documents in one call (bulk ingestion): their chunks embedded
        together and stored in one transaction. One outcome per document, in order: a
        document that cannot be indexed has its `error` and the others are indexed."""
        return respond(await service.create_documents(caller(), body))

    @router.get("/documents", response_model=ServiceResponse[Page[DocumentView]])
    async def list_documents(page: PageDep, collection: CollectionQuery = None) -> Response:
        tenant = caller().tenant_id
        return respond(await service.list_documents(tenant, collection, page.limit, page.offset))

    @router.get("/documents/{document_id}", response_model=ServiceResponse[DocumentView])
    async def get_document(document_id: DocumentId) -> Response:
        return respond(await service.get_document(caller().tenant_id, document_id))

    @router.put("/documents/{document_id}", response_model=ServiceResponse[DocumentIndexed])
    async def update_document(document_id: DocumentId, body: DocumentUpdate) -> Response:
        return respond(await service.update_document(caller(), document_id, body))

    @router.delete("/documents/{document_id}", status_code=204)
    async def delete_document(document_id: DocumentId) -> Response:
        await service.delete_document(caller(), document_id)
        return Response(status_code=204)

    return router


def retrieval_routes(service: RagService) -> APIRouter:
    router = APIRouter()

    @router.post("/search", response_model=ServiceResponse[SearchResponse])
    async def search(body: SearchRequest) -> Response:
        return respond(await service.search(caller(), body))

    @router.post("/query", response_model=ServiceResponse[QueryResponse])
    async def query(body: QueryRequest) -> Response:
        """A grounded answer with citations; with `stream: true`, server-sent events."""
        if body.stream:
            events = await service.stream_answer(caller(), body)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        return respond(await service.answer(caller(), body))

    return router


def build_router(service: RagService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["rag"])
    for part in (collection_routes, document_routes, retrieval_routes):
        router.include_router(part(service))
    return router
