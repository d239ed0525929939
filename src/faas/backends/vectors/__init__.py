"""Search index of RAG chunks: `build_vector_index(settings)` picks pgvector or SQLite.

FAAS_VECTOR_URL chooses the store on its own: a postgresql:// URL → pgvector there; `sqlite` →
the SQLite file `<data_dir>/vectors.db`; `sqlite:///path/to/file.db` → that SQLite file. Unset:
a PostgreSQL main database → pgvector in it; else `<data_dir>/vectors.db`.
"""

from __future__ import annotations

from pathlib import Path

from faas.backends.vectors.base import Hit, IndexedChunk, VectorIndex
from faas.backends.vectors.sqlite import SqliteVectorIndex
from faas.shared.config import ConfigError, Settings

__all__ = [
    "Hit",
    "IndexedChunk",
    "SqliteVectorIndex",
    "VectorIndex",
    "build_vector_index",
    "vector_store_problem",
    "vector_url",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")
_SQLITE_SCHEME = "sqlite:///"


def vector_url(settings: Settings) -> str:
    """Where RAG vectors live, as a URL: `postgresql://…` or `sqlite:///<file>`."""
    configured = (settings.vector_url or "").strip()
    if configured == "sqlite":
        return f"{_SQLITE_SCHEME}{settings.data_dir / 'vectors.db'}"
    if configured.startswith(_SQLITE_SCHEME) and len(configured) > len(_SQLITE_SCHEME):
        return configured
    if configured.startswith(_POSTGRES_SCHEMES):
        return configured
    if configured:
        raise ConfigError(
            f"FAAS_VECTOR_URL={configured!r} is not a vector store: use a postgresql:// URL "
            "(with pgvector), 'sqlite' (the data dir's vectors.db) or sqlite:///path/to/file.db"
        )
    database_url = settings.effective_database_url
    if database_url.startswith(_POSTGRES_SCHEMES):
        return database_url
    return f"{_SQLITE_SCHEME}{settings.data_dir / 'vectors.db'}"


def build_vector_index(settings: Settings) -> VectorIndex:
    url = vector_url(settings)
    if url.startswith(_SQLITE_SCHEME):
        return SqliteVectorIndex(Path(url[len(_SQLITE_SCHEME) :]))
    from faas.backends.vectors.pgvector import PgVectorIndex

    return PgVectorIndex(url)


async def vector_store_problem(settings: Settings) -> str | None:
    """None when RAG's vector store can work; else one line saying why and what to do.

    Read-only: it never creates the extension (the RAG service does, at start, when it may).
    """
    url = vector_url(settings)
    if url.startswith(_SQLITE_SCHEME):
        return None
    from faas.backends.vectors.pgvector import pgvector_problem

    return await pgvector_problem(url)
