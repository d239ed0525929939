"""Collections: named groups of a tenant's documents, searched together or apart."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from faas.services.rag_service.models import CollectionCreate, CollectionView
from faas.services.rag_service.search_index import SearchIndex
from faas.services.rag_service.tables import ChunkRow, CollectionRow, DocumentRow
from faas.shared.clock import utcnow
from faas.shared.context import new_id
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, NotFound


class Collections:
    def __init__(self, db: Database, index: SearchIndex) -> None:
        self.db = db
        self.index = index

    async def create(self, tenant: str, body: CollectionCreate) -> CollectionView:
        async with self.db.session() as session:
            repo = TenantRepository(session, CollectionRow, tenant)
            existing = await session.scalar(repo.select(CollectionRow.name == body.name))
            if existing is not None:
                raise Conflict(f"collection {body.name!r} already exists")
            row = repo.add(
                id=new_id(), name=body.name, description=body.description, created_at=utcnow()
            )
            return _collection_view(row, 0)

    async def list_all(self, tenant: str) -> list[CollectionView]:
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

    async def delete(self, tenant: str, name: str) -> int:
        """Remove the collection with its documents; the number of documents removed."""
        self.index.require()
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
        return len(documents)

    async def resolve(self, tenant: str, name: str, *, create: bool) -> str:
        """The id of the collection called `name`, created first when `create` allows."""
        for _ in range(2):
            try:
                async with self.db.session() as session:
                    repo = TenantRepository(session, CollectionRow, tenant)
                    row = await session.scalar(repo.select(CollectionRow.name == name))
                    if row is not None:
                        return str(row.id)
                    if not create:
                        raise NotFound(f"collection {name!r} not found")
                    row = repo.add(id=new_id(), name=name, description="", created_at=utcnow())
                    return row.id
            except IntegrityError:
                continue  # created concurrently by another request: read it
        raise Conflict(f"collection {name!r} is being created concurrently; retry")


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
