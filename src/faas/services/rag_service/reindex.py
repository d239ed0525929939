"""`rag.reindex`: re-embed a tenant's collections with the model the gateway serves now, so
documents indexed before a model change (hash vectors, then MiniLM) are searchable again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from faas.services.rag_service.tables import ChunkRow, CollectionRow, DocumentRow
from faas.shared.context import RequestContext, new_id, reset_context, set_context
from faas.shared.database import TenantRepository
from faas.shared.exceptions import NotFound

if TYPE_CHECKING:
    from faas.jobs import JobContext
    from faas.services.rag_service.service import RagService

JOB_KIND = "rag.reindex"


class Reindexer:
    def __init__(self, rag: RagService) -> None:
        self.rag = rag

    async def _collections(self, tenant: str, name: str | None) -> list[tuple[str, str]]:
        async with self.rag.db.session() as session:
            repo = TenantRepository(session, CollectionRow, tenant)
            query = repo.select(CollectionRow.name == name) if name else repo.select()
            rows = (await session.scalars(query.order_by(CollectionRow.name))).all()
            if name and not rows:
                raise NotFound(f"collection {name!r} not found")
            return [(row.id, row.name) for row in rows]

    async def _documents(self, tenant: str, collection_id: str) -> list[DocumentRow]:
        async with self.rag.db.session() as session:
            rows = (
                await session.scalars(
                    TenantRepository(session, DocumentRow, tenant)
                    .select(DocumentRow.collection_id == collection_id)
                    .order_by(DocumentRow.created_at, DocumentRow.id)
                )
            ).all()
            for row in rows:
                session.expunge(row)
            return list(rows)

    async def _reembed(self, tenant: str, document: DocumentRow) -> tuple[str, int, int]:
        async with self.rag.db.session() as session:
            chunks = (
                await session.scalars(
                    select(ChunkRow)
                    .where(ChunkRow.tenant_id == tenant, ChunkRow.document_id == document.id)
                    .order_by(ChunkRow.ordinal)
                )
            ).all()
            for chunk_row in chunks:
                session.expunge(chunk_row)
        if not chunks:
            return "", 0, 0
        matrix, model = await self.rag.embed([c.text for c in chunks])
        for chunk_row, vector in zip(chunks, matrix, strict=True):
            chunk_row.embedding, chunk_row.embedding_model = vector.tobytes(), model
        async with self.rag.db.session() as session:
            for chunk_row in chunks:
                await session.execute(
                    update(ChunkRow)
                    .where(ChunkRow.id == chunk_row.id)
                    .values(embedding=chunk_row.embedding, embedding_model=model)
                )
        await self.rag.index_chunks(
            tenant, document.collection_id, document.id, document.meta, chunks
        )
        return model, int(matrix.shape[1]), len(chunks)

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        identity = self.rag.service_identity(ctx.tenant_id, ctx.user_id)
        token = set_context(
            RequestContext(correlation_id=ctx.job_id, request_id=new_id(), identity=identity)
        )
        try:
            return await self._run(ctx)
        finally:
            reset_context(token)

    async def _run(self, ctx: JobContext) -> dict[str, Any]:
        tenant = ctx.tenant_id
        name = ctx.payload.get("collection")
        self.rag.require_index()
        collections = await self._collections(tenant, str(name) if name else None)
        totals = {"collections": 0, "documents": 0, "chunks": 0}
        model = ""
        for position, (collection_id, collection) in enumerate(collections):
            await ctx.progress(position / len(collections), f"re-embedding {collection}")
            space: tuple[str, int] | None = None
            for document in await self._documents(tenant, collection_id):
                model, dims, chunks = await self._reembed(tenant, document)
                if chunks:
                    space = (model, dims)
                totals["documents"] += 1
                totals["chunks"] += chunks
            async with self.rag.db.session() as session:
                row = await TenantRepository(session, CollectionRow, tenant).get(collection_id)
                if row is not None and space is not None:
                    row.embedding_model, row.embedding_dimensions = space
            totals["collections"] += 1
        await self.rag.bump_generation(tenant)
        return {**totals, "embedding_model": model or None}
