"""The embedding space of a collection: the model its chunks were embedded with, and its
dimension. A query embedded by another model ranks noise (hash vectors next to MiniLM queries
scored 0.003 instead of 0.43), so mixing is refused with the way out: `faas rag reindex`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from faas.services.rag_service.tables import ChunkRow, CollectionRow, DocumentRow
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, NotFound

MODEL_ID_CHARS = 128  # rag_chunks.embedding_model


def model_id(model: str, deployment: str) -> str:
    """`provider:model` of the gateway deployment that embedded: what fixes the vector space
    (the model's routing name, e.g. embed-default, stays the same when its deployment changes;
    the host after `@` does not change the vectors)."""
    return (deployment.split("@", 1)[0] or model)[:MODEL_ID_CHARS]


def mismatch(
    collection: str, indexed: str, indexed_dims: int | None, model: str, dims: int
) -> Conflict:
    was = f"{indexed} ({indexed_dims} dimensions)" if indexed_dims else indexed
    return Conflict(
        f"collection {collection!r} was indexed with {was} but the gateway now embeds with "
        f"{model} ({dims} dimensions): run `faas rag reindex --collection {collection}` to "
        f"re-embed it with {model}, or set FAAS_RAG_EMBEDDING_MODEL to a model served by {indexed}",
        details={
            "collection": collection,
            "indexed_with": indexed,
            "indexed_dimensions": indexed_dims,
            "current_model": model,
            "current_dimensions": dims,
        },
    )


class EmbeddingSpaces:
    """Records each collection's space as documents come in, and refuses what would mix two."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
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

    async def check(
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
