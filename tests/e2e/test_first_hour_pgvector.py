"""Step 8, item 1 as a user meets it: the README's switch to PostgreSQL, on a server without
pgvector (the CI's), keeps the platform running; RAG says why it is off, and FAAS_VECTOR_URL
keeps vectors in SQLite while everything else uses PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from faas.backends.vectors.pgvector import asyncpg_dsn
from tests.conftest import DATABASE_URL, NATS_URL, need_server
from tests.e2e.test_faas_up import faas, faas_env, free_port, stop, wait_ready
from tests.support.faas_process import OFFLINE_MODELS
from tests.support.pgvector import with_database

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(DATABASE_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def plain_postgres() -> Iterator[str]:
    """A fresh database on the CI's PostgreSQL, which has no pgvector extension."""
    server = need_server("PostgreSQL", DATABASE_URL, 5432)
    name = f"faas_first_hour_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server, name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _env(base: Path, database_url: str, **extra: str) -> dict[str, str]:
    base.mkdir(parents=True, exist_ok=True)
    (base / "models.yaml").write_text(OFFLINE_MODELS)
    return (
        faas_env(base / "data")
        | {"FAAS_DATABASE_URL": database_url, "FAAS_GATEWAY_MODELS": str(base / "models.yaml")}
        | extra
    )


def _up(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faas", "up", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        assert stop(proc) == 0, log.read_text()


@pytest.fixture(scope="module")
def no_pgvector(
    plain_postgres: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str], Path]]:
    base = tmp_path_factory.mktemp("no-pgvector")
    env = _env(base, plain_postgres)
    for url in _up(env, base / "faas.log"):
        yield url, env, base / "faas.log"


@pytest.fixture(scope="module")
def sqlite_vectors(
    plain_postgres: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    base = tmp_path_factory.mktemp("sqlite-vectors")
    env = _env(base, plain_postgres, FAAS_VECTOR_URL="sqlite")
    for url in _up(env, base / "faas.log"):
        yield url, env


def _headers(env: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {faas('token', '--tenant', 'acme', env=env)}"}


def test_without_pgvector_faas_up_is_ready_with_rag_degraded_and_the_reason(
    no_pgvector: tuple[str, dict[str, str], Path],
) -> None:
    url, _, log = no_pgvector
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["rag_vectors"] == "down"
    assert "has no pgvector extension" in body["reasons"]["rag_vectors"]
    assert "FAAS_VECTOR_URL=sqlite" in body["reasons"]["rag_vectors"]
    assert body["backends"]["database"] == "postgres"
    assert body["models"]["embedding"] == "embed-default (hash:hash-384)"
    assert body["models"]["chat"] == "chat-default (mock:faas-mock)"
    printed = log.read_text()
    assert "Traceback" not in printed
    assert "models: chat chat-default (mock:faas-mock); embeddings embed-default" in printed


def test_without_pgvector_rag_answers_503_with_the_reason(
    no_pgvector: tuple[str, dict[str, str], Path],
) -> None:
    url, env, _ = no_pgvector
    with httpx.Client(base_url=url, timeout=10, headers=_headers(env)) as http:
        search = http.post("/api/v1/rag/search", json={"query_text": "refunds", "top_k": 3})
        indexed = http.post(
            "/api/v1/rag/documents",
            json={"collection": "docs", "title": "t", "content": "Refunds take five days."},
        )
        listed = http.get("/api/v1/rag/documents")
    for response in (search, indexed):
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "dependency_unavailable"
        assert "has no pgvector extension" in error["message"]
    assert listed.status_code == 200  # what needs no vectors still works


def test_without_pgvector_the_other_services_serve(
    no_pgvector: tuple[str, dict[str, str], Path],
) -> None:
    url, env, _ = no_pgvector
    with httpx.Client(base_url=url, timeout=10, headers=_headers(env)) as http:
        put = http.post("/api/v1/cache", json={"key": "greeting", "value": "hello"})
        assert put.status_code == 201, put.text
        assert http.get("/api/v1/cache/greeting").json()["data"]["value"] == "hello"
        chat = http.post(
            "/v1/chat/completions",
            json={"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200, chat.text
        prompt = http.post(
            "/api/v1/prompts/templates",
            json={"name": "greet", "content": "Hello {{ name }}!", "labels": ["production"]},
        )
        assert prompt.status_code == 201, prompt.text


def test_without_pgvector_faas_worker_starts_and_keeps_running(
    plain_postgres: str, tmp_path: Path
) -> None:
    nats = need_server("NATS", NATS_URL, 4222)
    env = _env(
        tmp_path,
        plain_postgres,
        FAAS_NATS_URL=nats,
        FAAS_NATS_PREFIX=f"firsthour{uuid.uuid4().hex[:8]}",
        FAAS_SERVICES="rag,ingestion",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faas", "worker"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while "consuming" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        printed = log.read_text()
        assert "consuming" in printed and proc.poll() is None, printed
        assert "Traceback" not in printed
        assert "RAG search is unavailable" in printed and "no pgvector extension" in printed
    finally:
        assert stop(proc) == 0, log.read_text()


def test_vector_url_sqlite_keeps_rag_working_next_to_postgresql(
    sqlite_vectors: tuple[str, dict[str, str]],
) -> None:
    url, env = sqlite_vectors
    ready = httpx.get(f"{url}/readyz", timeout=10).json()
    assert ready["status"] == "ready" and ready["checks"]["rag_vectors"] == "ok"
    assert ready["backends"]["database"] == "postgres"
    with httpx.Client(base_url=url, timeout=10, headers=_headers(env)) as http:
        indexed = http.post(
            "/api/v1/rag/documents",
            json={"collection": "docs", "title": "Refunds", "content": "Refunds take five days."},
        )
        assert indexed.status_code == 201, indexed.text
        found = http.post(
            "/api/v1/rag/search",
            json={"query_text": "how long do refunds take", "collection": "docs", "top_k": 3},
        )
        assert found.status_code == 200, found.text
        assert found.json()["data"]["results"][0]["title"] == "Refunds"
