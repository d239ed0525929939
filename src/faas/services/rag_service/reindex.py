"""`rag.reindex`: re-embed a tenant's collections with the model the gateway serves now, so
documents indexed before a model change (hash vectors, then MiniLM) are searchable again."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from faas.services.rag_service.collections import Collections
from faas.services.rag_service.embeddings import Embedder
from faas.services.rag_service.models import ReindexRequest
from faas.services.rag_service.query_cache import QueryCache
from faas.services.rag_service.search_index import SearchIndex
from faas.services.rag_service.tables import ChunkRow, CollectionRow, DocumentRow
from faas.shared.context import Identity, RequestContext, new_id, reset_context, set_context
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import DependencyUnavailable, NotFound

if TYPE_CHECKING:
    from faas.jobs import JobContext, JobQueue
    from faas.jobs.models import JobView

JOB_KIND = "rag.reindex"


class Reindexer:
    def __init__(
        self,
        *,
        db: Database,
        index: SearchIndex,
        cache: QueryCache,
        collections: Collections,
        embedder: Embedder,
        jobs: JobQueue | None,
        service_identity: Callable[[str, str | None], Identity],
    ) -> None:
        self.db = db
        self.index = index
        self.cache = cache
        self.collections = collections
        self.embedder = embedder
        self.jobs = jobs
        # Who the job is, towards the gateway: a short-lived service token.
        self.service_identity = service_identity

    async def submit(self, identity: Identity, body: ReindexRequest) -> JobView:
        """A `rag.reindex` job re-embedding the collection (or all) with the current model."""
        self.index.require()
        if self.jobs is None:
            raise DependencyUnavailable("this RAG service runs without a job queue")
        if body.collection:
            await self.collections.resolve(identity.tenant_id, body.collection, create=False)
        payload = {"collection": body.collection} if body.collection else {}
        return await self.jobs.submit(identity, JOB_KIND, payload)

    async def _collections(self, tenant: str, name: str | None) -> list[tuple[str, str]]:
        async with self.db.session() as session:
            repo = TenantRepository(session, CollectionRow, tenant)
            query = repo.select(CollectionRow.name == name) if name else repo.select()
            rows = (await session.scalars(query.order_by(CollectionRow.name))).all()
            if name and not rows:
                raise NotFound(f"collection {name!r} not found")
            return [(row.id, row.name) for row in rows]

    async def _documents(self, tenant: str, collection_id: str) -> list[DocumentRow]:
        async with self.db.session() as session:
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
        async with self.db.session() as session:
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
        matrix, model = await self.embedder.embed([c.text for c in chunks])
        for chunk_row, vector in zip(chunks, matrix, strict=True):
            chunk_row.embedding, chunk_row.embedding_model = vector.tobytes(), model
        async with self.db.session() as session:
            for chunk_row in chunks:
                await session.execute(
                    update(ChunkRow)
                    .where(ChunkRow.id == chunk_row.id)
                    .values(embedding=chunk_row.embedding, embedding_model=model)
                )
        await self.index.write(tenant, document.collection_id, document.id, document.meta, chunks)
        return model, int(matrix.shape[1]), len(chunks)

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        identity = self.service_identity(ctx.tenant_id, ctx.user_id)
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
        self.index.require()
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
            async with self.db.session() as session:
                row = await TenantRepository(session, CollectionRow, tenant).get(collection_id)
                if row is not None and space is not None:
                    row.embedding_model, row.embedding_dimensions = space
            totals["collections"] += 1
        await self.cache.invalidate(tenant)
        return {**totals, "embedding_model": model or None}
