"""Search index of RAG chunks: `build_vector_index(settings)` picks pgvector or SQLite.

FAAS_VECTOR_URL set → pgvector there; else a PostgreSQL main database → pgvector in it; else a
SQLite file `<data_dir>/vectors.db`.
"""

from __future__ import annotations

from faas.backends.vectors.base import Hit, IndexedChunk, VectorIndex
from faas.backends.vectors.sqlite import SqliteVectorIndex
from faas.shared.config import Settings

__all__ = ["Hit", "IndexedChunk", "SqliteVectorIndex", "VectorIndex", "build_vector_index"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")


def build_vector_index(settings: Settings) -> VectorIndex:
    vector_url = getattr(settings, "vector_url", None)
    database_url = settings.effective_database_url
    url = vector_url or (database_url if database_url.startswith(_POSTGRES_SCHEMES) else None)
    if url:
        from faas.backends.vectors.pgvector import PgVectorIndex

        return PgVectorIndex(url)
    return SqliteVectorIndex(settings.data_dir / "vectors.db")
