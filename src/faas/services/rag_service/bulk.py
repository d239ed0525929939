"""Many documents indexed in one call: the bulk path of `POST /api/v1/rag/documents:batch`.

Per batch rather than per document: one collection lookup per collection name, one query for
the content already indexed, every new chunk embedded together (one gateway call per
EMBED_BATCH chunks), the rows stored in one transaction, one vector upsert and one UPDATE to
mark them indexed. A document that cannot be indexed (no text, or a collection in another
embedding space) is reported in its own outcome and the others are indexed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from faas.services.rag_service.chunking import content_hash
from faas.services.rag_service.documents import Documents, NewDocument
from faas.services.rag_service.models import (
    DocumentCreate,
    DocumentFailure,
    DocumentIndexed,
    DocumentOutcome,
)
from faas.services.rag_service.search_index import DocumentChunks
from faas.services.rag_service.tables import DocumentRow
from faas.shared.context import new_id
from faas.shared.exceptions import FaaSError, ValidationFailed


@dataclass
class _Pending:
    index: int
    body: DocumentCreate
    collection_id: str
    digest: str
    document_id: str


def failure(exc: FaaSError) -> DocumentFailure:
    return DocumentFailure(
        status=exc.status_code, code=exc.code, message=exc.message, details=exc.details
    )


class BulkDocuments:
    def __init__(self, documents: Documents) -> None:
        self.documents = documents

    async def create_many(
        self, tenant: str, bodies: Sequence[DocumentCreate]
    ) -> list[DocumentOutcome]:
        """One outcome per body, in order. A failure of the batch's shared steps (the
        gateway, the database, the vector store) fails the call: rows stored as `indexing`
        are then repaired by the retry, as for one document."""
        docs = self.documents
        docs.index.require()
        outcomes: dict[int, DocumentOutcome] = {}
        pending, repeats = await self._new(tenant, bodies, outcomes)
        chunked = await docs.chunker.rows_many(tenant, [(p.document_id, p.body) for p in pending])
        ready: dict[str, int] = {}
        batch: list[NewDocument] = []
        for item, chunks in zip(pending, chunked, strict=True):
            if not chunks:
                error = failure(ValidationFailed("the document has no text to index"))
                outcomes[item.index] = DocumentOutcome(index=item.index, error=error)
                continue
            ready[item.document_id] = item.index
            batch.append(
                NewDocument(item.document_id, item.collection_id, item.digest, item.body, chunks)
            )
        batch = await self._claim(tenant, batch, ready, outcomes)
        stored = await self._store(tenant, batch, ready, outcomes)
        if stored:
            await self._index(tenant, stored)
        for d in stored:
            index = ready[d.document_id]
            indexed = DocumentIndexed(
                document_id=d.document_id,
                collection_id=d.collection_id,
                chunks=len(d.chunks),
                version=1,
                chunks_embedded=len(d.chunks),
            )
            outcomes[index] = DocumentOutcome(index=index, indexed=indexed)
        for index, first in repeats.items():
            original = outcomes[first]
            again = original.indexed and original.indexed.model_copy(
                update={"duplicate": True, "chunks_embedded": 0}
            )
            outcomes[index] = DocumentOutcome(index=index, indexed=again, error=original.error)
        return [outcomes[i] for i in range(len(bodies))]

    async def _new(
        self, tenant: str, bodies: Sequence[DocumentCreate], outcomes: dict[int, DocumentOutcome]
    ) -> tuple[list[_Pending], dict[int, int]]:
        """The documents to index, and the repeats of one earlier in the batch (by position:
        the earlier one's). Documents already indexed get their duplicate outcome."""
        docs = self.documents
        collections: dict[str, str] = {}
        for name in dict.fromkeys(b.collection for b in bodies):
            collections[name] = await docs.collections.resolve(tenant, name, create=True)
        digests = [content_hash(b.content) for b in bodies]
        existing = await self._existing(tenant, set(collections.values()), set(digests))
        pending: list[_Pending] = []
        first: dict[tuple[str, str], int] = {}
        repeats: dict[int, int] = {}
        for i, (body, digest) in enumerate(zip(bodies, digests, strict=True)):
            key = (collections[body.collection], digest)
            if key in existing:
                indexed = await docs.as_duplicate(tenant, existing[key])
                outcomes[i] = DocumentOutcome(index=i, indexed=indexed)
            elif key in first:
                repeats[i] = first[key]
            else:
                first[key] = i
                pending.append(_Pending(i, body, key[0], digest, new_id()))
        return pending, repeats

    async def _existing(
        self, tenant: str, collection_ids: set[str], digests: set[str]
    ) -> dict[tuple[str, str], DocumentRow]:
        async with self.documents.db.session() as session:
            rows = (
                await session.scalars(
                    select(DocumentRow).where(
                        DocumentRow.tenant_id == tenant,
                        DocumentRow.collection_id.in_(collection_ids),
                        DocumentRow.content_hash.in_(digests),
                    )
                )
            ).all()
            for row in rows:
                session.expunge(row)
        return {(r.collection_id, r.content_hash): r for r in rows}

    async def _claim(
        self,
        tenant: str,
        batch: list[NewDocument],
        ready: dict[str, int],
        outcomes: dict[int, DocumentOutcome],
    ) -> list[NewDocument]:
        """The documents whose collection takes their embedding space; a collection in
        another space fails its documents (409) and no other."""
        by_collection: dict[str, list[NewDocument]] = {}
        for d in batch:
            by_collection.setdefault(d.collection_id, []).append(d)
        kept: list[NewDocument] = []
        for collection_id, group in by_collection.items():
            chunks = [c for d in group for c in d.chunks]
            try:
                await self.documents.spaces.claim(
                    tenant, collection_id, group[0].document_id, chunks
                )
            except FaaSError as exc:
                for d in group:
                    index = ready[d.document_id]
                    outcomes[index] = DocumentOutcome(index=index, error=failure(exc))
                continue
            kept += group
        return kept

    async def _store(
        self,
        tenant: str,
        batch: list[NewDocument],
        ready: dict[str, int],
        outcomes: dict[int, DocumentOutcome],
    ) -> list[NewDocument]:
        """The batch in one transaction; when content of it was indexed concurrently (the
        unique content hash refused the transaction), one document at a time, each
        duplicate naming the document that won."""
        docs = self.documents
        if not batch:
            return []
        try:
            await docs.store_rows(tenant, batch)
            return batch
        except IntegrityError:
            pass
        stored: list[NewDocument] = []
        for d in batch:
            try:
                await docs.store_rows(tenant, [d])
            except IntegrityError:
                existing = await docs.by_hash(tenant, d.collection_id, d.digest)
                if existing is None:
                    raise
                index = ready[d.document_id]
                indexed = await docs.as_duplicate(tenant, existing)
                outcomes[index] = DocumentOutcome(index=index, indexed=indexed)
            else:
                stored.append(d)
        return stored

    async def _index(self, tenant: str, stored: list[NewDocument]) -> None:
        docs = self.documents
        await docs.index.write_many(
            tenant,
            [
                DocumentChunks(d.collection_id, d.document_id, d.body.metadata, d.chunks)
                for d in stored
            ],
        )
        await docs.mark_indexed(tenant, *(d.document_id for d in stored))
        await asyncio.gather(
            *(
                docs.indexed_event(tenant, d.document_id, d.collection_id, len(d.chunks), 1)
                for d in stored
            )
        )
