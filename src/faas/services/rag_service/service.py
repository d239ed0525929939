"""RAG use cases: documents in (chunk, embed through the gateway, index), hybrid retrieval out,
and answers generated through the gateway that cite their sources."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import APIRouter
from sqlalchemy import delete, func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from faas.backends.kv import KeyValueStore
from faas.backends.vectors import Hit, IndexedChunk, VectorIndex

# At import, not at first use: importing the parsers (docx, lxml, pypdf) takes ~0.5 s, which
# on the first document held the event loop.
from faas.documents import PageSpan, ParsedDocument, chunk, text_hash
from faas.integrations.events import EventPublisher
from faas.services.gateway_service.providers import tokens
from faas.services.rag_service.embedding_space import mismatch, model_id
from faas.services.rag_service.models import (
    CollectionCreate,
    CollectionView,
    DocumentCreate,
    DocumentIndexed,
    DocumentUpdate,
    DocumentView,
    PageSpanIn,
    ReindexRequest,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from faas.services.rag_service.reindex import JOB_KIND as REINDEX_JOB
from faas.services.rag_service.reindex import Reindexer
from faas.services.rag_service.retrieval import mmr, reciprocal_rank_fusion
from faas.services.rag_service.tables import ChunkRow, CollectionRow, DocumentRow
from faas.shared.context import Identity, new_id
from faas.shared.contracts import Page
from faas.shared.cpu import CpuPool
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, DependencyUnavailable, NotFound, ValidationFailed
from faas.shared.http_client import raise_for_error

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from faas.jobs import JobQueue
    from faas.jobs.models import JobView
    from faas.runtime import ServiceClients

log = logging.getLogger("faas.rag")
EMBED_BATCH = 256
# The gateway takes at most 300,000 tokens per embeddings request; a token is at least one
# UTF-8 byte, so batches of at most this many bytes always fit.
EMBED_BATCH_BYTES = 300_000
FUSION_DEPTH = 10


def _embed_batches(texts: Sequence[str]) -> list[list[str]]:
    batches: list[list[str]] = [[]]
    size = 0
    for text in texts:
        length = len(text.encode())
        if batches[-1] and (len(batches[-1]) >= EMBED_BATCH or size + length > EMBED_BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(text)
        size += length
    return [b for b in batches if b]


def _now() -> datetime:
    return datetime.now(UTC)


CHUNK_INSERT_BATCH = 500


async def _insert_chunks(session: AsyncSession, chunks: Sequence[ChunkRow]) -> None:
    """Chunk rows in batches of plain values. The ORM's unit of work over a big document's
    thousands of rows ran for hundreds of milliseconds on the event loop in one go; each batch
    now awaits the database, so other requests are served in between."""
    keys = [attr.key for attr in inspect(ChunkRow).column_attrs]
    for start in range(0, len(chunks), CHUNK_INSERT_BATCH):
        batch = chunks[start : start + CHUNK_INSERT_BATCH]
        await session.execute(insert(ChunkRow), [{k: getattr(c, k) for k in keys} for c in batch])


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: np.ndarray = (vectors / norms).astype(np.float32)
    return unit


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
        self.db = db
        self.cpu = cpu or CpuPool()
        self.index = index
        self.kv = kv
        self.events = events
        self.clients = clients
        self.embedding_model = embedding_model
        self.chat_model = chat_model
        self.query_cache_ttl_s = query_cache_ttl_s
        self.unavailable: str | None = None
        self.jobs = jobs
        # Who background work (reindex) is, towards the gateway: a short-lived service token.
        self.service_identity = service_identity or (lambda t, u: Identity(tenant_id=t, user_id=u))
        if jobs is not None:
            jobs.registry.register(REINDEX_JOB, Reindexer(self).run)

    def router(self) -> APIRouter:
        from faas.services.rag_service.routes import build_router

        return build_router(self)

    async def start(self) -> None:
        await self._start_index()
        # Load the tokenizer now: building it holds the GIL for ~100 ms, which at the first
        # request stalled every other one.
        await asyncio.to_thread(tokens.encoding)

    async def stop(self) -> None:
        await self.index.close()

    async def _start_index(self) -> None:
        """A vector store that cannot work (PostgreSQL without pgvector, unreachable) leaves
        RAG answering 503 with the reason while the rest of the platform serves; readiness
        tries again, so installing pgvector needs no restart."""
        try:
            await self.index.start()
        except DependencyUnavailable as exc:
            if self.unavailable != exc.message:
                log.warning("RAG search is unavailable: %s", exc.message)
            self.unavailable = exc.message
        else:
            if self.unavailable is not None:
                log.info("RAG search is available again (%s)", self.index.backend)
            self.unavailable = None

    async def readiness(self) -> dict[str, str | None]:
        """The vector store's check: None when it works, else why not."""
        if self.unavailable is not None:
            await self._start_index()
        if self.unavailable is not None:
            return {"rag_vectors": self.unavailable}
        ok = await self.index.ping()
        return {"rag_vectors": None if ok else f"the {self.index.backend} vector store is down"}

    def require_index(self) -> None:
        if self.unavailable is not None:
            raise DependencyUnavailable(self.unavailable, details={"dependency": "vector_store"})

    # -- collections -----------------------------------------------------------------------

    async def create_collection(self, tenant: str, body: CollectionCreate) -> CollectionView:
        async with self.db.session() as session:
            repo = TenantRepository(session, CollectionRow, tenant)
            existing = await session.scalar(repo.select(CollectionRow.name == body.name))
            if existing is not None:
                raise Conflict(f"collection {body.name!r} already exists")
            row = repo.add(
                id=new_id(), name=body.name, description=body.description, created_at=_now()
            )
            return _collection_view(row, 0)

    async def list_collections(self, tenant: str) -> list[CollectionView]:
        async with self.db.session() as session:
            counts = (
                select(DocumentRow.collection_id, func.count().label("n"))
                .where(DocumentRow.tenant_id == tenant)
                .group_by(DocumentRow.collection_id)
                .subquery()
            )
            rows = await session.execute(
                select(CollectionRow, counts.c.n)
                .outerjoin(counts, counts.c.collection_id == CollectionRow.id)
                .where(CollectionRow.tenant_id == tenant)
                .order_by(CollectionRow.name)
            )
            return [_collection_view(row, n or 0) for row, n in rows.all()]

    async def delete_collection(self, identity: Identity, name: str) -> int:
        tenant = identity.tenant_id
        self.require_index()
        async with self.db.session() as session:
            repo = TenantRepository(session, CollectionRow, tenant)
            row = await session.scalar(repo.select(CollectionRow.name == name))
            if row is None:
                raise NotFound(f"collection {name!r} not found")
            documents = (
                await session.scalars(
                    select(DocumentRow.id).where(
                        DocumentRow.tenant_id == tenant, DocumentRow.collection_id == row.id
                    )
                )
            ).all()
            await session.execute(delete(ChunkRow).where(ChunkRow.document_id.in_(documents)))
            await session.execute(delete(DocumentRow).where(DocumentRow.collection_id == row.id))
            await session.delete(row)
            collection_id = row.id
        await self.index.delete_collection(tenant, collection_id)
        await self.bump_generation(tenant)
        return len(documents)

    async def _collection_id(self, tenant: str, name: str, *, create: bool) -> str:
        for _ in range(2):
            try:
                async with self.db.session() as session:
                    repo = TenantRepository(session, CollectionRow, tenant)
                    row = await session.scalar(repo.select(CollectionRow.name == name))
                    if row is not None:
                        return str(row.id)
                    if not create:
                        raise NotFound(f"collection {name!r} not found")
                    row = repo.add(id=new_id(), name=name, description="", created_at=_now())
                    return row.id
            except IntegrityError:
                continue  # created concurrently by another request: read it
        raise Conflict(f"collection {name!r} is being created concurrently; retry")

    async def submit_reindex(self, identity: Identity, body: ReindexRequest) -> JobView:
        """A `rag.reindex` job re-embedding the collection (or all) with the current model."""
        self.require_index()
        if self.jobs is None:
            raise DependencyUnavailable("this RAG service runs without a job queue")
        if body.collection:
            await self._collection_id(identity.tenant_id, body.collection, create=False)
        payload = {"collection": body.collection} if body.collection else {}
        return await self.jobs.submit(identity, REINDEX_JOB, payload)

    # -- documents -------------------------------------------------------------------------

    async def create_document(self, identity: Identity, body: DocumentCreate) -> DocumentIndexed:
        """Rows are written as `indexing` and marked `indexed` once the search index has them,
        so a retry after a failed index write repairs the document instead of calling it a
        duplicate; identical content sent twice at once ends as one document."""
        tenant = identity.tenant_id
        self.require_index()
        collection_id = await self._collection_id(tenant, body.collection, create=True)
        digest = content_hash(body.content)
        existing = await self._by_hash(tenant, collection_id, digest)
        if existing is not None:
            return await self._duplicate(tenant, existing)
        document_id = new_id()
        chunks, embedded = await self._prepare_chunks(
            tenant, document_id, body.content, body.pages, body.chunk_size, body.chunk_overlap, {}
        )
        await self._claim_space(tenant, collection_id, document_id, chunks)
        now = _now()
        try:
            async with self.db.session() as session:
                TenantRepository(session, DocumentRow, tenant).add(
                    id=document_id,
                    collection_id=collection_id,
                    title=body.title,
                    source=body.source,
                    content_hash=digest,
                    meta=body.metadata,
                    version=1,
                    status="indexing",
                    chunk_count=len(chunks),
                    token_count=sum(c.token_count for c in chunks),
                    created_at=now,
                    updated_at=now,
                )
                await session.flush()
                await _insert_chunks(session, chunks)
        except IntegrityError:
            # The same content was indexed concurrently: one document, the other one's id.
            existing = await self._by_hash(tenant, collection_id, digest)
            if existing is None:
                raise
            return await self._duplicate(tenant, existing)
        await self.index_chunks(tenant, collection_id, document_id, body.metadata, chunks)
        await self._mark_indexed(tenant, document_id)
        await self._indexed_event(tenant, document_id, collection_id, len(chunks), 1)
        return DocumentIndexed(
            document_id=document_id,
            collection_id=collection_id,
            chunks=len(chunks),
            version=1,
            chunks_embedded=embedded,
        )

    async def _by_hash(self, tenant: str, collection_id: str, digest: str) -> DocumentRow | None:
        async with self.db.session() as session:
            row: DocumentRow | None = await session.scalar(
                TenantRepository(session, DocumentRow, tenant).select(
                    DocumentRow.collection_id == collection_id, DocumentRow.content_hash == digest
                )
            )
            if row is not None:
                session.expunge(row)
            return row

    async def _duplicate(self, tenant: str, existing: DocumentRow) -> DocumentIndexed:
        if existing.status != "indexed":
            # An earlier attempt stored the rows but did not finish indexing: finish it now.
            async with self.db.session() as session:
                chunks = (
                    await session.scalars(
                        select(ChunkRow).where(ChunkRow.document_id == existing.id)
                    )
                ).all()
                for chunk_row in chunks:
                    session.expunge(chunk_row)
            await self.index.delete_document(tenant, existing.id)
            await self.index_chunks(
                tenant, existing.collection_id, existing.id, existing.meta, chunks
            )
            await self._mark_indexed(tenant, existing.id)
        return DocumentIndexed(
            document_id=existing.id,
            collection_id=existing.collection_id,
            chunks=existing.chunk_count,
            version=existing.version,
            duplicate=True,
            chunks_embedded=0,
        )

    async def _mark_indexed(self, tenant: str, document_id: str) -> None:
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is not None:
                row.status = "indexed"

    async def update_document(
        self, identity: Identity, document_id: str, body: DocumentUpdate
    ) -> DocumentIndexed:
        """New content is re-chunked, and only chunks whose text changed are embedded again;
        without new content only the title, source or metadata change."""
        tenant = identity.tenant_id
        self.require_index()
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is None:
                raise NotFound(f"document {document_id} not found")
            old = (
                await session.scalars(select(ChunkRow).where(ChunkRow.document_id == document_id))
            ).all()
            reusable = {c.text_hash: (c.embedding, c.embedding_model) for c in old}
            for chunk_row in old:
                session.expunge(chunk_row)
            metadata = body.metadata if body.metadata is not None else dict(row.meta)
            collection_id = row.collection_id
            version = row.version + 1
        embedded = 0
        chunks: Sequence[ChunkRow] = old
        if body.content is not None:
            chunks, embedded = await self._prepare_chunks(
                tenant,
                document_id,
                body.content,
                body.pages,
                body.chunk_size,
                body.chunk_overlap,
                reusable,
            )
        await self._claim_space(tenant, collection_id, document_id, chunks)
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is None:
                raise NotFound(f"document {document_id} not found")
            if body.content is not None:
                row.content_hash = content_hash(body.content)
                await session.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id))
                await _insert_chunks(session, chunks)
            if body.title is not None:
                row.title = body.title
            if body.source is not None:
                row.source = body.source
            row.meta, row.version, row.updated_at = metadata, version, _now()
            row.chunk_count = len(chunks)
            row.token_count = sum(c.token_count for c in chunks)
        await self.index.delete_document(tenant, document_id)
        await self.index_chunks(tenant, collection_id, document_id, metadata, chunks)
        await self._indexed_event(tenant, document_id, collection_id, len(chunks), version)
        return DocumentIndexed(
            document_id=document_id,
            collection_id=collection_id,
            chunks=len(chunks),
            version=version,
            chunks_embedded=embedded,
        )

    async def delete_document(self, identity: Identity, document_id: str) -> None:
        tenant = identity.tenant_id
        self.require_index()
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is None:
                raise NotFound(f"document {document_id} not found")
            await session.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id))
            await session.delete(row)
        await self.index.delete_document(tenant, document_id)
        await self.bump_generation(tenant)
        await self.events.publish("rag", "document_deleted", tenant, {"document_id": document_id})

    async def get_document(self, tenant: str, document_id: str) -> DocumentView:
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is None:
                raise NotFound(f"document {document_id} not found")
            return _document_view(row)

    async def list_documents(
        self, tenant: str, collection: str | None, limit: int, offset: int
    ) -> Page[DocumentView]:
        where = []
        if collection is not None:
            where.append(
                DocumentRow.collection_id
                == await self._collection_id(tenant, collection, create=False)
            )
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, DocumentRow, tenant).page(
                *where, order_by=DocumentRow.created_at.desc(), limit=limit, offset=offset
            )
            items = [_document_view(r) for r in rows]
        return Page[DocumentView](items=items, total=total, limit=limit, offset=offset)

    async def _prepare_chunks(
        self,
        tenant: str,
        document_id: str,
        content: str,
        pages: list[PageSpanIn] | None,
        chunk_size: int,
        chunk_overlap: int,
        reusable: dict[str, tuple[bytes, str]],
    ) -> tuple[list[ChunkRow], int]:
        pieces = await self.cpu.run(
            len(content), _chunk_by_page, content, pages or [], chunk_size, chunk_overlap
        )
        if not pieces:
            raise ValidationFailed("the document has no text to index")
        hashes = [text_hash(p.text) for p in pieces]
        missing = [i for i, h in enumerate(hashes) if h not in reusable]
        vectors: dict[int, tuple[bytes, str]] = {}
        if missing:
            matrix, model = await self.embed([pieces[i].text for i in missing])
            # Reused vectors of another model would leave the document in two spaces.
            stale = [i for i, h in enumerate(hashes) if h in reusable and reusable[h][1] != model]
            if stale:
                more, _ = await self.embed([pieces[i].text for i in stale])
                matrix = np.vstack([matrix, more])
            for position, i in enumerate([*missing, *stale]):
                vectors[i] = (matrix[position].tobytes(), model)
        rows = []
        for i, piece in enumerate(pieces):
            if i and i % CHUNK_INSERT_BATCH == 0:
                await asyncio.sleep(0)  # thousands of ORM objects: let other requests run
            embedding, model = vectors.get(i) or reusable[hashes[i]]
            rows.append(
                ChunkRow(
                    id=new_id(),
                    tenant_id=tenant,
                    document_id=document_id,
                    ordinal=piece.ordinal,
                    text=piece.text,
                    text_hash=hashes[i],
                    token_count=piece.token_count,
                    meta=dict(piece.metadata),
                    embedding=embedding,
                    embedding_model=model,
                )
            )
        return rows, len(vectors)

    async def _claim_space(
        self, tenant: str, collection_id: str, document_id: str, chunks: Sequence[ChunkRow]
    ) -> None:
        """Chunks join a collection only in its embedding space; an empty collection (or one
        whose other documents are all gone) takes the space of what comes in."""
        spaces = sorted({(c.embedding_model, len(c.embedding) // 4) for c in chunks})
        if not spaces:
            return
        async with self.db.session() as session:
            row = await TenantRepository(session, CollectionRow, tenant).get(collection_id)
            if row is None:
                raise NotFound(f"collection {collection_id} not found")
            recorded = (row.embedding_model, row.embedding_dimensions)
            if row.embedding_model is not None and spaces != [recorded]:
                others = await session.scalar(
                    select(func.count()).where(
                        DocumentRow.tenant_id == tenant,
                        DocumentRow.collection_id == collection_id,
                        DocumentRow.id != document_id,
                    )
                )
                if others:
                    model, dims = next(s for s in spaces if s != recorded)
                    raise mismatch(row.name, row.embedding_model, recorded[1], model, dims)
            row.embedding_model, row.embedding_dimensions = spaces[-1]

    async def _check_space(
        self, tenant: str, collection_ids: list[str] | None, model: str, dims: int
    ) -> None:
        """A query embedded by `model` may only meet collections embedded by it."""
        async with self.db.session() as session:
            query = TenantRepository(session, CollectionRow, tenant).select(
                CollectionRow.embedding_model.is_not(None),
                CollectionRow.embedding_model != model,
            )
            if collection_ids is not None:
                query = query.where(CollectionRow.id.in_(collection_ids))
            stale = (await session.scalars(query.order_by(CollectionRow.name))).all()
            for row in stale:
                has_documents = await session.scalar(
                    select(func.count()).where(
                        DocumentRow.tenant_id == tenant, DocumentRow.collection_id == row.id
                    )
                )
                if has_documents:
                    assert row.embedding_model is not None
                    raise mismatch(
                        row.name, row.embedding_model, row.embedding_dimensions, model, dims
                    )

    async def index_chunks(
        self,
        tenant: str,
        collection_id: str,
        document_id: str,
        metadata: dict[str, Any],
        chunks: Sequence[ChunkRow],
    ) -> None:
        await self.index.upsert(
            [
                IndexedChunk(
                    chunk_id=c.id,
                    tenant_id=tenant,
                    collection_id=collection_id,
                    document_id=document_id,
                    text=c.text,
                    vector=np.frombuffer(c.embedding, dtype=np.float32),
                    metadata=metadata,
                )
                for c in chunks
            ]
        )
        await self.bump_generation(tenant)

    async def _indexed_event(
        self, tenant: str, document_id: str, collection_id: str, chunks: int, version: int
    ) -> None:
        await self.events.publish(
            "rag",
            "document_indexed",
            tenant,
            {
                "document_id": document_id,
                "collection_id": collection_id,
                "chunks": chunks,
                "version": version,
            },
        )

    # -- retrieval -------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, str]:
        """Unit vectors for `texts` through the gateway's embeddings API, in batches."""
        gateway = self.clients.get("gateway")
        parts: list[np.ndarray] = []
        model = ""
        for batch in _embed_batches(texts):
            body: dict[str, Any] = {"texts": batch}
            if self.embedding_model:
                body["model"] = self.embedding_model
            response = await gateway.post("/api/v1/gateway/embeddings", json=body)
            raise_for_error(response, "gateway")
            data = response.json()["data"]
            model = model_id(data)
            parts.append(np.asarray(data["vectors"], dtype=np.float32))
        return _unit(np.vstack(parts)), model

    async def search(self, identity: Identity, body: SearchRequest) -> SearchResponse:
        tenant = identity.tenant_id
        self.require_index()
        collection_ids = (
            [await self._collection_id(tenant, body.collection, create=False)]
            if body.collection
            else None
        )
        # Hybrid fuses only each list's head: deeper lists let documents that are middling in
        # both outrank ones that are strong in one (measured: nDCG@10 0.75 at 4x top_k, 0.80
        # at max(top_k, 10); bench/rag_quality.py). MMR needs candidates to choose from.
        depth = body.top_k * 4 if body.mmr else max(body.top_k, FUSION_DEPTH)
        vector: np.ndarray | None = None
        vector_hits: list[Hit] = []
        keyword_hits: list[Hit] = []
        if body.mode in ("vector", "hybrid"):
            if body.query_embedding is not None:
                raw = np.asarray([body.query_embedding], dtype=np.float64)
                # float32 overflows to inf above ~3.4e38, and inf has no direction.
                if not np.isfinite(raw).all() or np.abs(raw).max() > np.finfo(np.float32).max:
                    raise ValidationFailed(
                        "query_embedding must hold finite numbers within float32 range",
                        details={"field": "query_embedding"},
                    )
                vector = _unit(raw.astype(np.float32))[0]
            else:
                assert body.query_text is not None
                matrix, model = await self.embed([body.query_text])
                vector = matrix[0]
                await self._check_space(tenant, collection_ids, model, len(vector))
            vector_hits = await self.index.search_vector(
                tenant, vector, depth, collection_ids=collection_ids, filters=body.filters
            )
            if body.threshold is not None:
                vector_hits = [h for h in vector_hits if h.score >= body.threshold]
        if body.mode in ("keyword", "hybrid"):
            assert body.query_text is not None
            keyword_hits = await self.index.search_keyword(
                tenant, body.query_text, depth, collection_ids=collection_ids, filters=body.filters
            )
        if body.mode == "hybrid":
            by_id = {h.chunk_id: h for h in [*keyword_hits, *vector_hits]}
            fused = reciprocal_rank_fusion(
                [[h.chunk_id for h in vector_hits], [h.chunk_id for h in keyword_hits]]
            )
            hits = [_rescored(by_id[r.chunk_id], r.score) for r in fused]
        else:
            hits = vector_hits or keyword_hits
        if body.mmr and vector is not None and hits:
            hits = await self._diversify(hits, vector, body.top_k, body.mmr_lambda)
        return SearchResponse(mode=body.mode, results=await self._views(tenant, hits[: body.top_k]))

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

    # -- query cache -----------------------------------------------------------------------

    async def bump_generation(self, tenant: str) -> None:
        await self.kv.incr(f"faas-meta:{tenant}:rag:generation")

    async def cache_key(self, tenant: str, payload: dict[str, Any]) -> str:
        generation = await self.kv.get(f"faas-meta:{tenant}:rag:generation") or b"0"
        digest = hashlib.sha256(
            orjson.dumps([generation.decode(), payload], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        return f"faas:{tenant}:rag-query:{digest}"


def _chunk_by_page(
    content: str, pages: list[PageSpanIn], chunk_size: int, chunk_overlap: int
) -> list[Any]:
    """Chunks that never straddle a page, so every citation can name its page; without page
    spans, the document is chunked as a whole."""
    from dataclasses import replace

    spans = [(p.page, p.start, min(p.end, len(content))) for p in pages if p.end > p.start]
    if not spans:
        spans = [(0, 0, len(content))]
    pieces: list[Any] = []
    for page, start, end in spans:
        text = content[start:end]
        if not text.strip():
            continue
        page_spans = [PageSpan(page, 0, len(text))] if page else []
        doc = ParsedDocument(text=text, format="text", title=None, pages=page_spans, metadata={})
        for piece in chunk(doc, chunk_size=chunk_size, chunk_overlap=chunk_overlap):
            metadata = dict(piece.metadata)
            metadata["start"] = piece.start + start
            metadata["end"] = piece.end + start
            pieces.append(
                replace(
                    piece,
                    ordinal=len(pieces),
                    start=piece.start + start,
                    end=piece.end + start,
                    metadata=metadata,
                )
            )
    return pieces


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(hit.chunk_id, hit.document_id, hit.collection_id, score, hit.text, hit.metadata)


def _collection_view(row: CollectionRow, documents: int) -> CollectionView:
    return CollectionView(
        id=row.id,
        name=row.name,
        description=row.description,
        documents=documents,
        created_at=row.created_at,
        embedding_model=row.embedding_model,
        embedding_dimensions=row.embedding_dimensions,
    )


def _document_view(row: DocumentRow) -> DocumentView:
    return DocumentView(
        id=row.id,
        title=row.title,
        source=row.source,
        collection_id=row.collection_id,
        metadata=row.meta,
        version=row.version,
        status=row.status,
        chunk_count=row.chunk_count,
        token_count=row.token_count,
        content_hash=row.content_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
