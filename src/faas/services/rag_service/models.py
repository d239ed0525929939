"""Wire models of the RAG service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
MAX_CONTENT_CHARS = 20_000_000
# `true` for the gateway's `rerank-default`, or a rerank model's name.
RerankChoice = bool | Annotated[str, Field(pattern=r"^[A-Za-z0-9._:/-]{1,128}$")]


class CollectionCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "handbook", "description": "The team handbook"}]}
    )

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field("", max_length=2000)


class ReindexRequest(BaseModel):
    """Re-embed a collection (or, without one, every collection of the tenant) with the
    embedding model the gateway serves now."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"collection": "handbook"}]})

    collection: str | None = Field(None, pattern=NAME_PATTERN)


class CollectionView(BaseModel):
    id: str
    name: str
    description: str
    documents: int
    created_at: datetime
    embedding_model: str | None = None
    """The gateway deployment (`provider:model`) its chunks were embedded with."""
    embedding_dimensions: int | None = None


class PageSpanIn(BaseModel):
    page: int = Field(ge=1)
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class DocumentCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Semantic caching",
                    "content": (
                        "A semantic cache returns a stored answer when a new question means"
                        " the same as one answered before, which saves a model call."
                    ),
                    "metadata": {"team": "platform"},
                }
            ]
        }
    )

    title: str = Field(min_length=1, max_length=512)
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    source: str | None = Field(None, max_length=4096)
    metadata: dict[str, Any] = Field(default_factory=dict)
    collection: str = Field("default", pattern=NAME_PATTERN)
    chunk_size: int = Field(400, ge=32, le=4000, description="tokens per chunk")
    chunk_overlap: int = Field(60, ge=0, le=1000)
    pages: list[PageSpanIn] | None = Field(
        None, description="page spans of `content`, for page-level citations"
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> DocumentCreate:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class DocumentUpdate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"metadata": {"team": "search"}}]})

    title: str | None = Field(None, min_length=1, max_length=512)
    content: str | None = Field(None, min_length=1, max_length=MAX_CONTENT_CHARS)
    source: str | None = None
    metadata: dict[str, Any] | None = None
    chunk_size: int = Field(400, ge=32, le=4000)
    chunk_overlap: int = Field(60, ge=0, le=1000)
    pages: list[PageSpanIn] | None = None


class DocumentIndexed(BaseModel):
    document_id: str
    collection_id: str
    chunks: int
    version: int
    duplicate: bool = False
    chunks_embedded: int = Field(description="chunks whose text was new and had to be embedded")


MAX_BATCH_DOCUMENTS = 256


class DocumentBatch(BaseModel):
    """Many documents indexed in one call: their chunks embedded together (one gateway call
    per batch of chunks) and stored in one transaction."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "documents": [
                        {"title": "One", "content": "The first document."},
                        {"title": "Two", "content": "The second document.", "collection": "b"},
                    ]
                }
            ]
        }
    )

    documents: list[DocumentCreate] = Field(min_length=1, max_length=MAX_BATCH_DOCUMENTS)


class DocumentFailure(BaseModel):
    """Why one document of a batch was not indexed (the others were)."""

    status: int
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class DocumentOutcome(BaseModel):
    """The document at `index` of the batch: `indexed`, or `error`."""

    index: int
    indexed: DocumentIndexed | None = None
    error: DocumentFailure | None = None


class DocumentBatchIndexed(BaseModel):
    documents: list[DocumentOutcome]


class DocumentView(BaseModel):
    id: str
    title: str
    source: str | None
    collection_id: str
    metadata: dict[str, Any]
    version: int
    status: str
    chunk_count: int
    token_count: int
    content_hash: str
    created_at: datetime
    updated_at: datetime


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"query_text": "what does a semantic cache return?", "top_k": 3, "mode": "hybrid"}
            ]
        }
    )

    query_text: str | None = Field(None, min_length=1, max_length=8000)
    query_embedding: list[float] | None = Field(None, min_length=1, max_length=8192)
    top_k: int = Field(5, ge=1, le=100)
    mode: Literal["vector", "keyword", "hybrid"] = "hybrid"
    threshold: float | None = Field(None, ge=-1, le=1, description="minimum vector score")
    filters: dict[str, Any] | None = None
    collection: str | None = Field(None, pattern=NAME_PATTERN)
    mmr: bool = False
    mmr_lambda: float = Field(0.7, ge=0, le=1)
    vector_weight: float | None = Field(
        None,
        ge=0,
        le=1,
        description="hybrid only: the vector list's share of the fused score (0 = keyword "
        "only, 1 = vector only); by default chosen per query (rag_service/fusion.py)",
    )
    rerank: RerankChoice = Field(
        False,
        description="reorder the hits with a gateway rerank model: true for `rerank-default`, "
        "or a rerank model's name; scores are then the reranker's",
    )

    @model_validator(mode="after")
    def _query(self) -> SearchRequest:
        if self.query_text is None and self.query_embedding is None:
            raise ValueError("give query_text or query_embedding")
        if self.query_text is None and self.mode != "vector":
            raise ValueError("keyword and hybrid search need query_text")
        if self.query_text is None and self.rerank:
            raise ValueError("rerank needs query_text")
        return self


class SearchHit(BaseModel):
    chunk_id: str
    document_id: str
    collection_id: str
    title: str
    text: str
    score: float
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    mode: str
    results: list[SearchHit]


class QueryRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"query": "What does a semantic cache return?", "top_k": 3}]
        }
    )

    query: str = Field(min_length=1, max_length=8000)
    top_k: int = Field(5, ge=1, le=50)
    filters: dict[str, Any] | None = None
    collection: str | None = Field(None, pattern=NAME_PATTERN)
    model: str | None = None
    stream: bool = False
    enable_rewrite: bool = False
    enable_grounding_check: bool = False
    rerank: RerankChoice = Field(
        False, description="as in search: rerank the passages before answering"
    )
    max_tokens: int = Field(512, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0, le=2)


class Citation(BaseModel):
    n: int
    document_id: str
    chunk_id: str
    title: str
    snippet: str
    page: int | None = None
    score: float
    cited_in_answer: bool


class Source(BaseModel):
    document_id: str
    title: str
    source: str | None
    pages: list[int]


class SentenceSupport(BaseModel):
    sentence: str
    support: float
    supported: bool


class QueryResponse(BaseModel):
    answer: str
    query: str
    rewritten_query: str | None = None
    citations: list[Citation]
    sources: list[Source]
    confidence: float
    usage: dict[str, Any]
    grounding: list[SentenceSupport] | None = None
    unsupported_sentences: list[str] | None = None
    cached: bool = False


class DocumentIndexedEvent(BaseModel):
    """The body of `rag.document_indexed.{tenant}`: a document was indexed (created, or a new
    version of it)."""

    document_id: str
    collection_id: str
    chunks: int
    version: int


class DocumentDeletedEvent(BaseModel):
    """The body of `rag.document_deleted.{tenant}`."""

    document_id: str
