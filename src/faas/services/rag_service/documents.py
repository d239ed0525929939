"""Documents: added (chunked, embedded, stored, indexed), updated, read and deleted. Rows are
the record; the search index is written after them and repaired from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from faas.integrations.events import EventPublisher
from faas.services.rag_service.chunking import Chunker, content_hash, insert_chunks
from faas.services.rag_service.collections import Collections
from faas.services.rag_service.embedding_space import EmbeddingSpaces
from faas.services.rag_service.models import (
    DocumentCreate,
    DocumentDeletedEvent,
    DocumentIndexed,
    DocumentIndexedEvent,
    DocumentUpdate,
    DocumentView,
)
from faas.services.rag_service.search_index import SearchIndex
from faas.services.rag_service.tables import ChunkRow, DocumentRow
from faas.shared.clock import utcnow
from faas.shared.context import new_id
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound


@dataclass(frozen=True)
class NewDocument:
    """A document about to be stored: its id, collection, content hash and chunk rows."""

    document_id: str
    collection_id: str
    digest: str
    body: DocumentCreate
    chunks: Sequence[ChunkRow]


class Documents:
    def __init__(
        self,
        *,
        db: Database,
        index: SearchIndex,
        collections: Collections,
        chunker: Chunker,
        spaces: EmbeddingSpaces,
        events: EventPublisher,
    ) -> None:
        self.db = db
        self.index = index
        self.collections = collections
        self.chunker = chunker
        self.spaces = spaces
        self.events = events

    async def create(self, tenant: str, body: DocumentCreate) -> DocumentIndexed:
        """Rows are written as `indexing` and marked `indexed` once the search index has them,
        so a retry after a failed index write repairs the document instead of calling it a
        duplicate; identical content sent twice at once ends as one document."""
        self.index.require()
        collection_id = await self.collections.resolve(tenant, body.collection, create=True)
        digest = content_hash(body.content)
        existing = await self.by_hash(tenant, collection_id, digest)
        if existing is not None:
            return await self.as_duplicate(tenant, existing)
        document_id = new_id()
        chunks, embedded = await self.chunker.rows(
            tenant, document_id, body.content, body.pages, body.chunk_size, body.chunk_overlap, {}
        )
        await self.spaces.claim(tenant, collection_id, document_id, chunks)
        try:
            new = NewDocument(document_id, collection_id, digest, body, chunks)
            await self.store_rows(tenant, [new])
        except IntegrityError:
            # The same content was indexed concurrently: one document, the other one's id.
            existing = await self.by_hash(tenant, collection_id, digest)
            if existing is None:
                raise
            return await self.as_duplicate(tenant, existing)
        await self.index.write(tenant, collection_id, document_id, body.metadata, chunks)
        await self.mark_indexed(tenant, document_id)
        await self.indexed_event(tenant, document_id, collection_id, len(chunks), 1)
        return DocumentIndexed(
            document_id=document_id,
            collection_id=collection_id,
            chunks=len(chunks),
            version=1,
            chunks_embedded=embedded,
        )

    async def store_rows(self, tenant: str, documents: Sequence[NewDocument]) -> None:
        """The documents' rows (as `indexing`) and their chunks, in one transaction: a batch
        is stored whole or not at all."""
        now = utcnow()
        values = [
            {
                "id": d.document_id,
                "tenant_id": tenant,
                "collection_id": d.collection_id,
                "title": d.body.title,
                "source": d.body.source,
                "content_hash": d.digest,
                "meta": d.body.metadata,
                "version": 1,
                "status": "indexing",
                "chunk_count": len(d.chunks),
                "token_count": sum(c.token_count for c in d.chunks),
                "created_at": now,
                "updated_at": now,
            }
            for d in documents
        ]
        async with self.db.session() as session:
            await session.execute(insert(DocumentRow), values)
            await insert_chunks(session, [c for d in documents for c in d.chunks])

    async def by_hash(self, tenant: str, collection_id: str, digest: str) -> DocumentRow | None:
        async with self.db.session() as session:
            row: DocumentRow | None = await session.scalar(
                TenantRepository(session, DocumentRow, tenant).select(
                    DocumentRow.collection_id == collection_id, DocumentRow.content_hash == digest
                )
            )
            if row is not None:
                session.expunge(row)
            return row

    async def as_duplicate(self, tenant: str, existing: DocumentRow) -> DocumentIndexed:
        if existing.status != "indexed":
            # An earlier attempt stored the rows but did not finish indexing: finish it now.
            async with self.db.session() as session:
                chunks = await _detached_chunks(session, existing.id)
            await self.index.replace(
                tenant, existing.collection_id, existing.id, existing.meta, chunks
            )
            await self.mark_indexed(tenant, existing.id)
        return DocumentIndexed(
            document_id=existing.id,
            collection_id=existing.collection_id,
            chunks=existing.chunk_count,
            version=existing.version,
            duplicate=True,
            chunks_embedded=0,
        )

    async def mark_indexed(self, tenant: str, *document_ids: str) -> None:
        """One UPDATE for every document named (a batch's documents together)."""
        async with self.db.session() as session:
            await session.execute(
                update(DocumentRow)
                .where(DocumentRow.tenant_id == tenant, DocumentRow.id.in_(document_ids))
                .values(status="indexed")
            )

    async def update(self, tenant: str, document_id: str, body: DocumentUpdate) -> DocumentIndexed:
        """New content is re-chunked, and only chunks whose text changed are embedded again;
        without new content only the title, source or metadata change."""
        self.index.require()
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is None:
                raise NotFound(f"document {document_id} not found")
            metadata = body.metadata if body.metadata is not None else dict(row.meta)
            collection_id, version = row.collection_id, row.version + 1
            chunks = await _detached_chunks(session, document_id)
        embedded = 0
        if body.content is not None:
            reusable = {c.text_hash: (c.embedding, c.embedding_model) for c in chunks}
            chunks, embedded = await self.chunker.rows(
                tenant,
                document_id,
                body.content,
                body.pages,
                body.chunk_size,
                body.chunk_overlap,
                reusable,
            )
        await self.spaces.claim(tenant, collection_id, document_id, chunks)
        await self._rewrite(tenant, document_id, body, chunks, metadata, version)
        await self.index.replace(tenant, collection_id, document_id, metadata, chunks)
        await self.indexed_event(tenant, document_id, collection_id, len(chunks), version)
        return DocumentIndexed(
            document_id=document_id,
            collection_id=collection_id,
            chunks=len(chunks),
            version=version,
            chunks_embedded=embedded,
        )

    async def _rewrite(
        self,
        tenant: str,
        document_id: str,
        body: DocumentUpdate,
        chunks: Sequence[ChunkRow],
        metadata: dict[str, Any],
        version: int,
    ) -> None:
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is None:
                raise NotFound(f"document {document_id} not found")
            if body.content is not None:
                row.content_hash = content_hash(body.content)
                await session.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id))
                await insert_chunks(session, chunks)
            if body.title is not None:
                row.title = body.title
            if body.source is not None:
                row.source = body.source
            row.meta, row.version, row.updated_at = metadata, version, utcnow()
            row.chunk_count = len(chunks)
            row.token_count = sum(c.token_count for c in chunks)

    async def delete(self, tenant: str, document_id: str) -> None:
        self.index.require()
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is None:
                raise NotFound(f"document {document_id} not found")
            await session.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id))
            await session.delete(row)
        await self.index.delete_document(tenant, document_id)
        deleted = DocumentDeletedEvent(document_id=document_id)
        await self.events.publish("rag", "document_deleted", tenant, deleted.model_dump())

    async def get(self, tenant: str, document_id: str) -> DocumentView:
        async with self.db.session() as session:
            row = await TenantRepository(session, DocumentRow, tenant).get(document_id)
            if row is None:
                raise NotFound(f"document {document_id} not found")
            return _document_view(row)

    async def page(
        self, tenant: str, collection: str | None, limit: int, offset: int
    ) -> Page[DocumentView]:
        where = []
        if collection is not None:
            collection_id = await self.collections.resolve(tenant, collection, create=False)
            where.append(DocumentRow.collection_id == collection_id)
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, DocumentRow, tenant).page(
                *where, order_by=DocumentRow.created_at.desc(), limit=limit, offset=offset
            )
            items = [_document_view(r) for r in rows]
        return Page[DocumentView](items=items, total=total, limit=limit, offset=offset)

    async def indexed_event(
        self, tenant: str, document_id: str, collection_id: str, chunks: int, version: int
    ) -> None:
        indexed = DocumentIndexedEvent(
            document_id=document_id, collection_id=collection_id, chunks=chunks, version=version
        )
        await self.events.publish("rag", "document_indexed", tenant, indexed.model_dump())


async def _detached_chunks(session: AsyncSession, document_id: str) -> Sequence[ChunkRow]:
    """The document's chunk rows, usable after the session closes."""
    chunks = (
        await session.scalars(select(ChunkRow).where(ChunkRow.document_id == document_id))
    ).all()
    for chunk_row in chunks:
        session.expunge(chunk_row)
    return chunks


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
