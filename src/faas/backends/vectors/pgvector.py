"""PostgreSQL + pgvector search index over asyncpg.

An HNSW index needs a fixed dimension, so there is one table per dimension (`faas_vectors_d384`),
created on first use: `vector(D)` with HNSW (cosine), a generated english `tsvector` with GIN,
jsonb metadata with GIN, and btree indexes for the tenant-scoped deletes.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson

from faas.backends.vectors import pg_keyword
from faas.backends.vectors.base import FloatArray, Hit, IndexedChunk, normalised, query_terms
from faas.backends.vectors.pg_rows import COLUMNS, TABLE_PREFIX, filters_sql, hit, table
from faas.shared.config import ConfigError
from faas.shared.exceptions import DependencyUnavailable

_HNSW_MAX_DIM = 2000  # pgvector's limit for HNSW on `vector`; larger ones are searched exactly
_EF_SEARCH = 40  # HNSW candidate list; searches for more than this many hits widen it
# Keyword search probes the GIN index, and every probe also reads the index's whole pending
# list of rows inserted since its last merge: at the default 4 MB (about 6k chunks) that was
# 5-8 ms a search. 256 kB keeps the batching that makes inserts cheap.
_GIN_PENDING = "gin_pending_list_limit = 256"
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('faas_vectors_schema'))"


def _encode(value: Any) -> bytes:
    # pgvector's binary format: uint16 dimensions, uint16 unused, float4 values, big-endian.
    array = np.asarray(value, dtype=">f4").reshape(-1)
    return struct.pack(">HH", array.size, 0) + array.tobytes()


def _decode(data: bytes) -> npt.NDArray[np.float32]:
    (dim,) = struct.unpack_from(">H", data)
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


def asyncpg_dsn(url: str) -> str:
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    if scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ConfigError(f"FAAS_VECTOR_URL must be a postgresql:// URL, not {scheme or url!r}")
    return f"postgresql://{rest}"


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _missing_extension(url: str) -> str:
    return (
        f"PostgreSQL at {redacted(url)} has no pgvector extension, so RAG search is off: "
        "install pgvector (the PGDG apt repository's postgresql-NN-pgvector, or the "
        "pgvector/pgvector image), or set FAAS_VECTOR_URL=sqlite to keep vectors in SQLite"
    )


async def pgvector_problem(url: str) -> str | None:
    """None when the database has pgvector or lets this user create it; else why not.

    Read-only, for `faas doctor`: the extension is only looked up, never created.
    """
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {redacted(url)} is unreachable: {exc}"
    try:
        installed = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        if installed:
            return None
        available = await conn.fetchval(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        )
        if not available:
            return _missing_extension(url)
        may_create = await conn.fetchval(
            "SELECT rolsuper OR has_database_privilege(current_database(), 'CREATE') "
            "FROM pg_roles WHERE rolname = current_user"
        )
        if not may_create:
            return (
                f"PostgreSQL at {redacted(url)} has pgvector installed but not enabled, and this "
                "user may not enable it: run CREATE EXTENSION vector as a superuser"
            )
        return None
    finally:
        await conn.close()


def _ddl(dim: int) -> list[str]:
    t = table(dim)
    statements = [
        f"""CREATE TABLE IF NOT EXISTS {t} (
            tenant_id text NOT NULL,
            chunk_id text NOT NULL,
            collection_id text NOT NULL,
            document_id text NOT NULL,
            text text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}',
            embedding vector({int(dim)}) NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED,
            PRIMARY KEY (tenant_id, chunk_id))""",
        f"CREATE INDEX IF NOT EXISTS {t}_tsv ON {t} USING gin (tsv) WITH ({_GIN_PENDING})",
        # Tables created before the setting get it once (ALTER takes a lock and ownership).
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = '{t}_tsv'::regclass
                           AND reloptions @> ARRAY['{_GIN_PENDING.replace(" ", "")}'])
            THEN ALTER INDEX {t}_tsv SET ({_GIN_PENDING}); END IF; END $$""",
        f"CREATE INDEX IF NOT EXISTS {t}_meta ON {t} USING gin (metadata jsonb_path_ops)",
        f"CREATE INDEX IF NOT EXISTS {t}_collection ON {t} (tenant_id, collection_id)",
        f"CREATE INDEX IF NOT EXISTS {t}_document ON {t} (tenant_id, document_id)",
    ]
    if dim <= _HNSW_MAX_DIM:
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {t}_hnsw ON {t} USING hnsw (embedding vector_cosine_ops)"
        )
    return statements


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PgVectorIndex:
    backend = "pgvector"

    def __init__(self, url: str, *, max_scan_tuples: int = 20_000, pool_size: int = 10) -> None:
        self.url = url
        self._dsn = asyncpg_dsn(url)
        self.max_scan_tuples = max_scan_tuples
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._schema = "public"
        self._iterative = True
        self._dims: set[int] = set()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PgVectorIndex.start() was not awaited")
        return self._pool

    async def start(self) -> None:
        if self._pool is not None:
            return
        try:
            conn = await asyncpg.connect(self._dsn)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DependencyUnavailable(
                f"PostgreSQL at {redacted(self.url)} is unreachable: {exc}"
            ) from exc
        try:
            await self._ensure_extension(conn)
        finally:
            await conn.close()
        # Session settings, not SET LOCAL per search: a transaction and a set_config cost three
        # round trips, as much as the HNSW walk itself at 100k chunks. The pool's RESET ALL on
        # release returns to these. Iterative scan keeps walking the graph until k rows pass
        # the filters.
        settings = {"hnsw.ef_search": str(_EF_SEARCH)}
        if self._iterative:
            settings["hnsw.iterative_scan"] = "relaxed_order"
            settings["hnsw.max_scan_tuples"] = str(self.max_scan_tuples)
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=self.pool_size,
            init=self._init_connection,
            server_settings=settings,
        )

    async def _ensure_extension(self, conn: asyncpg.Connection) -> None:
        # Not installed, or no right to create it: the check below decides.
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        row = await conn.fetchrow(
            "SELECT e.extversion, n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        )
        if row is None:
            raise DependencyUnavailable(_missing_extension(self.url))
        self._schema = row["nspname"]
        version = tuple(int(p) for p in row["extversion"].split(".")[:2] if p.isdigit())
        self._iterative = version >= (0, 8)

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        await conn.set_type_codec(
            "vector", schema=self._schema, encoder=_encode, decoder=_decode, format="binary"
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        try:
            async with self.pool.acquire(timeout=5) as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
        except Exception:
            return False

    async def _tables(self, conn: asyncpg.Connection) -> list[int]:
        # Read from the catalog every time: another process may have added a dimension.
        names = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = current_schema()::regnamespace AND relname ~ $1",
            f"^{TABLE_PREFIX}[0-9]+$",
        )
        self._dims = {int(r["relname"][len(TABLE_PREFIX) :]) for r in names}
        return sorted(self._dims)

    async def _ensure_table(self, conn: asyncpg.Connection, dim: int) -> None:
        if dim in self._dims:
            return
        async with conn.transaction():
            await conn.execute(_SCHEMA_LOCK)  # concurrent CREATE ... IF NOT EXISTS can collide
            for statement in _ddl(dim):
                await conn.execute(statement)
        self._dims.add(dim)

    async def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        groups: dict[int, list[tuple[Any, ...]]] = {}
        for c in chunks:
            vector = normalised(c.vector)
            meta = orjson.dumps(c.metadata).decode()
            text = c.text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
            row = (c.tenant_id, c.chunk_id, c.collection_id, c.document_id, text, meta, vector)
            groups.setdefault(vector.size, []).append(row)
        if not groups:
            return
        async with self.pool.acquire() as conn:
            for dim in groups:
                await self._ensure_table(conn, dim)
            async with conn.transaction():
                for dim, rows in groups.items():
                    rows.sort(key=lambda r: (r[0], r[1]))  # one lock order across writers
                    await conn.executemany(
                        f"INSERT INTO {table(dim)} AS t (tenant_id, chunk_id, collection_id, "
                        "document_id, text, metadata, embedding) "
                        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) "
                        "ON CONFLICT (tenant_id, chunk_id) DO UPDATE SET "
                        "collection_id = EXCLUDED.collection_id, "
                        "document_id = EXCLUDED.document_id, text = EXCLUDED.text, "
                        "metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding",
                        rows,
                    )
                    # A chunk re-embedded at another dimension must leave its old table.
                    for other in await self._tables(conn):
                        if other != dim:
                            await conn.execute(
                                f"DELETE FROM {table(other)} WHERE (tenant_id, chunk_id) IN "
                                "(SELECT * FROM unnest($1::text[], $2::text[]))",
                                [r[0] for r in rows],
                                [r[1] for r in rows],
                            )

    async def _delete(self, tenant_id: str, where: str, value: Any) -> int:
        removed = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for dim in await self._tables(conn):
                status = await conn.execute(
                    f"DELETE FROM {table(dim)} WHERE tenant_id = $1 AND {where}", tenant_id, value
                )
                removed += _count(status)
        return removed

    async def delete_chunks(self, tenant_id: str, chunk_ids: Sequence[str]) -> int:
        if not chunk_ids:
            return 0
        return await self._delete(tenant_id, "chunk_id = ANY($2::text[])", list(chunk_ids))

    async def delete_document(self, tenant_id: str, document_id: str) -> int:
        return await self._delete(tenant_id, "document_id = $2", document_id)

    async def delete_collection(self, tenant_id: str, collection_id: str) -> int:
        return await self._delete(tenant_id, "collection_id = $2", collection_id)

    async def count(self, tenant_id: str) -> int:
        total = 0
        async with self.pool.acquire() as conn:
            for dim in await self._tables(conn):
                sql = f"SELECT count(*) FROM {table(dim)} WHERE tenant_id = $1"
                total += int(await conn.fetchval(sql, tenant_id))
        return total

    async def search_vector(
        self,
        tenant_id: str,
        vector: FloatArray,
        k: int,
        *,
        collection_ids: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        query = normalised(vector)
        if k <= 0 or (collection_ids is not None and not collection_ids):
            return []
        params: list[Any] = [query, tenant_id]
        where = filters_sql(params, collection_ids, filters)
        params.append(k)
        sql = (
            f"SELECT {COLUMNS}, embedding <=> $1 AS distance FROM {table(query.size)} "
            f"WHERE tenant_id = $2{where} ORDER BY embedding <=> $1 LIMIT ${len(params)}"
        )
        async with self.pool.acquire() as conn:
            if query.size not in self._dims and query.size not in await self._tables(conn):
                return []
            if k <= _EF_SEARCH:  # the pool's session settings serve: one round trip
                rows = await conn.fetch(sql, *params)
            else:
                async with conn.transaction():
                    ef_search = str(min(k, 1000))
                    await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)", ef_search)
                    rows = await conn.fetch(sql, *params)
            if len(rows) < k:
                # The scan hit its tuple budget (or the tenant has < k matches): rank the
                # filtered rows exactly, as SQLite does.
                async with conn.transaction():
                    await conn.execute("SET LOCAL enable_indexscan = off")
                    rows = await conn.fetch(sql, *params)
        # relaxed_order may return rows slightly out of order.
        ordered = sorted(rows, key=lambda r: float(r["distance"]))
        return [hit(r, 1.0 - float(r["distance"])) for r in ordered]

    async def search_keyword(
        self,
        tenant_id: str,
        query: str,
        k: int,
        *,
        collection_ids: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        terms = query_terms(query)
        if k <= 0 or not terms or (collection_ids is not None and not collection_ids):
            return []
        async with self.pool.acquire() as conn:
            tables = [table(dim) for dim in await self._tables(conn)]
            return await pg_keyword.search_keyword(
                conn, tables, tenant_id, terms, k, collection_ids, filters
            )
