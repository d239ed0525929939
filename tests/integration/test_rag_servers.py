"""Ingestion and RAG against real servers: PostgreSQL 18 + pgvector (main database and search
index in one), Redis and NATS JetStream — in one process, and with a real `faas worker` that is
killed mid-job while a `faas up` process serves the API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from faas.backends.vectors.pgvector import asyncpg_dsn
from faas.integrations.bus import Message
from faas.integrations.bus.nats import NatsBus
from faas.services.gateway_service.providers import provider_available
from faas.shared.config import Settings
from faas.shared.exceptions import DependencyUnavailable
from tests.conftest import TEST_SECRET, auth, drop_streams
from tests.platform_app import Platform, platform
from tests.support.pgvector import fresh_database, pgvector_server
from tests.unit.test_documents import report_pdf

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["gateway", "rag", "ingestion"]
EMBEDDINGS = "minilm" if provider_available("minilm") else "hash"
NOTES = (
    b"# Launch notes\n\n"
    b"The launch code name is BLUEBIRD. The rocket lifts off from pad 39A at dawn.\n"
)


def write_routing(tmp_path: Path) -> Path:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n"
        f"      - provider: {EMBEDDINGS}\n"
    )
    return routing


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with pgvector_server() as url:
        yield url


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[str]:
    async with fresh_database(pg_server, "faas_rag") as url:
        yield url


@pytest.fixture
async def tenants(redis_url: str) -> AsyncIterator[list[str]]:
    """Fresh tenant ids; their Redis keys are deleted afterwards."""
    made: list[str] = []
    yield made
    client = Redis.from_url(redis_url)
    try:
        for tenant in made:
            for pattern in (f"faas:{tenant}:*", f"faas-meta:{tenant}:*"):
                keys = [k async for k in client.scan_iter(match=pattern)]
                if keys:
                    await client.delete(*keys)
    finally:
        await client.aclose()


async def poll(
    check: Callable[[], Any], what: str, timeout_s: float = 60, every_s: float = 0.05
) -> Any:
    """The first truthy result of `check()` (sync or async), or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"{what} within {timeout_s}s (last: {last!r})")


async def get_data(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def wait_file(
    client: httpx.AsyncClient,
    accepted: dict[str, Any],
    headers: dict[str, str],
    timeout_s: float = 60,
) -> dict[str, Any]:
    """The file once its job is over. The job, not the file, is waited for: a failed attempt
    marks the file `failed` while the job is still to be retried."""

    async def finished() -> bool:
        job = await get_data(client, accepted["location"], headers)
        return job["status"] in ("succeeded", "failed", "cancelled")

    await poll(finished, f"job of file {accepted['file_id']} finishing", timeout_s)
    file: dict[str, Any] = await get_data(
        client, f"/api/v1/ingestion/files/{accepted['file_id']}", headers
    )
    return file


async def search(
    client: httpx.AsyncClient, headers: dict[str, str], **body: Any
) -> list[dict[str, Any]]:
    response = await client.post("/api/v1/rag/search", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["results"])


async def index_rows(database: str, tenant: str) -> dict[str, int]:
    """Rows of the tenant in the main database's RAG tables and in the pgvector tables."""
    conn = await asyncpg.connect(asyncpg_dsn(database))
    try:
        counts = {
            "documents": await conn.fetchval(
                "SELECT count(*) FROM rag_documents WHERE tenant_id = $1", tenant
            ),
            "chunks": await conn.fetchval(
                "SELECT count(*) FROM rag_chunks WHERE tenant_id = $1", tenant
            ),
        }
        tables = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE c.relkind = 'r' AND c.relname LIKE 'faas\\_vectors\\_d%' "
            "AND a.attname = 'embedding' AND t.typname = 'vector'"
        )
        counts["vectors"] = 0
        for table in tables:
            counts["vectors"] += await conn.fetchval(
                f'SELECT count(*) FROM "{table["relname"]}" WHERE tenant_id = $1', tenant
            )
        return counts
    finally:
        await conn.close()


# -- 1. everything in one process on the real servers ----------------------------------------


async def test_ingestion_and_rag_on_pgvector_redis_and_nats(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    database: str,
    redis_url: str,
    nats_url: str,
    tenants: list[str],
) -> None:
    tenant, other = unique("rag-a-"), unique("rag-b-")
    tenants += [tenant, other]
    prefix = unique("t")
    settings = make_settings(
        database_url=database,
        redis_url=redis_url,
        nats_url=nats_url,
        nats_prefix=prefix,
        gateway_models=write_routing(tmp_path),
        job_retry_base_s=0.2,
    )
    listener = NatsBus(nats_url, prefix, name="rag-events-test")
    events: list[Message] = []

    async def collect(message: Message) -> None:
        events.append(message)

    await listener.start()
    try:
        await listener.subscribe(f"rag.document_indexed.{tenant}", collect)
        async with platform(settings, SERVICES) as env:
            try:
                await exercise_platform(env, database, tenant, other, events)
            finally:
                await drop_streams(env.runtime.bus)
    finally:
        await listener.close()


async def exercise_platform(
    env: Platform,
    database: str,
    tenant: str,
    other: str,
    events: list[Message],
) -> None:
    client = env.client
    a, b = auth(tenant), auth(other)
    assert env.runtime.backends == {"database": "postgres", "kv": "redis", "bus": "nats"}
    assert env.app.state.services["rag"].index.backend == "pgvector"

    files = [
        ("files", ("report.pdf", report_pdf(4), "application/pdf")),
        ("files", ("notes.md", NOTES, "text/markdown")),
    ]
    response = await client.post("/api/v1/ingestion/upload", files=files, headers=a)
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]["files"]
    assert [f["format"] for f in accepted] == ["pdf", "markdown"]
    pdf, notes = [await wait_file(client, f, a) for f in accepted]
    assert pdf["status"] == "indexed", pdf
    assert notes["status"] == "indexed", notes
    assert pdf["pages"] == 4 and pdf["chunks"] >= 1 and notes["chunks"] >= 1
    for item in accepted:
        job = await get_data(client, item["location"], a)
        # Not `attempts == 1`: the two jobs race to create the collection (see the tests of
        # concurrent documents below), and the loser's retry succeeds.
        assert job["status"] == "succeeded", job

    # Both the relational rows and the vectors are in the one PostgreSQL.
    rows = await index_rows(database, tenant)
    assert rows == {
        "documents": 2,
        "chunks": pdf["chunks"] + notes["chunks"],
        "vectors": pdf["chunks"] + notes["chunks"],
    }

    query = {"query": "Which section is anchored by MARKER-P3?", "top_k": 3}
    answer = await client.post("/api/v1/rag/query", json=query, headers=a)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    first = data["citations"][0]
    assert first["document_id"] == pdf["document_id"], data["citations"]
    assert first["page"] == 3, data["citations"]
    assert "MARKER-P3" in first["snippet"]
    assert data["sources"][0]["document_id"] == pdf["document_id"]
    assert 3 in data["sources"][0]["pages"]

    hybrid = await search(client, a, query_text="BLUEBIRD launch code name", mode="hybrid")
    assert hybrid[0]["document_id"] == notes["document_id"], hybrid
    assert hybrid[0]["metadata"]["filename"] == "notes.md"
    assert "BLUEBIRD" in hybrid[0]["text"]
    vector = await search(client, a, query_text="What is the launch code name?", mode="vector")
    assert vector[0]["document_id"] == notes["document_id"], vector
    assert {h["document_id"] for h in vector} <= {pdf["document_id"], notes["document_id"]}
    revenue = await search(client, a, query_text="revenue growth by region", mode="vector")
    assert revenue[0]["document_id"] == pdf["document_id"], revenue

    # Tenant B sees nothing of tenant A.
    for mode in ("keyword", "vector", "hybrid"):
        assert await search(client, b, query_text="BLUEBIRD launch code", mode=mode) == []
    assert (await get_data(client, "/api/v1/rag/documents", b))["total"] == 0
    assert (await get_data(client, "/api/v1/ingestion/files", b))["total"] == 0
    theirs = await client.get(f"/api/v1/ingestion/files/{notes['id']}", headers=b)
    assert theirs.status_code == 404
    doc = await client.get(f"/api/v1/rag/documents/{notes['document_id']}", headers=b)
    assert doc.status_code == 404
    blind = await client.post("/api/v1/rag/query", json={"query": "launch code"}, headers=b)
    assert blind.json()["data"]["citations"] == []
    # Below the API too: pgvector itself returns nothing of A to B (the API also re-checks).
    index = env.app.state.services["rag"].index
    assert await index.search_keyword(other, "BLUEBIRD launch", 10) == []
    assert await index.count(other) == 0

    # The indexed events went out on NATS, one per document.
    await poll(lambda: len(events) >= 2, "two rag.document_indexed events", 10)
    await asyncio.sleep(0.2)  # a duplicate would arrive about now
    assert [m.subject for m in events] == [f"rag.document_indexed.{tenant}"] * 2
    bodies = [orjson.loads(m.data) for m in events]
    assert {e["data"]["document_id"] for e in bodies} == {
        pdf["document_id"],
        notes["document_id"],
    }
    assert all(e["type"] == "rag.document_indexed" and e["tenant_id"] == tenant for e in bodies)
    assert {m.headers.get("X-Tenant-ID") for m in events} == {tenant}

    # A deleted document is gone from every search mode and from pgvector.
    removed = await client.delete(f"/api/v1/rag/documents/{notes['document_id']}", headers=a)
    assert removed.status_code == 204, removed.text
    assert await search(client, a, query_text="BLUEBIRD", mode="keyword") == []
    for mode in ("vector", "hybrid"):
        hits = await search(client, a, query_text="BLUEBIRD launch code name", mode=mode)
        assert hits and {h["document_id"] for h in hits} == {pdf["document_id"]}, hits
    gone = await client.get(f"/api/v1/rag/documents/{notes['document_id']}", headers=a)
    assert gone.status_code == 404
    assert await index_rows(database, tenant) == {
        "documents": 1,
        "chunks": pdf["chunks"],
        "vectors": pdf["chunks"],
    }


# -- 2. concurrent writers on PostgreSQL --------------------------------------------------


@pytest.fixture
async def pg_platform(
    tmp_path: Path, make_settings: Callable[..., Settings], database: str
) -> AsyncIterator[Platform]:
    settings = make_settings(database_url=database, gateway_models=write_routing(tmp_path))
    async with platform(settings, ["gateway", "rag"]) as env:
        yield env


async def post_documents(
    env: Platform, headers: dict[str, str], bodies: list[dict[str, Any]]
) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(env.client.post("/api/v1/rag/documents", json=b, headers=headers) for b in bodies)
        )
    )


async def test_concurrent_first_documents_share_the_new_collection(
    pg_platform: Platform,
) -> None:
    """Documents sent at once into a collection that does not exist yet (as the jobs of one
    upload do) all succeed, in one collection."""
    for _ in range(3):
        headers = auth(unique("race-"))
        bodies = [
            {
                "title": f"Doc {i}",
                "content": f"Document {i} is about topic {i}.",
                "collection": "new",
            }
            for i in range(3)
        ]
        responses = await post_documents(pg_platform, headers, bodies)
        assert [r.status_code for r in responses] == [201] * 3, [r.text for r in responses]
        collections = await get_data(pg_platform.client, "/api/v1/rag/collections", headers)
        assert [(c["name"], c["documents"]) for c in collections] == [("new", 3)]


async def test_concurrent_identical_documents_are_one_document(pg_platform: Platform) -> None:
    """The same content sent twice at once (a redelivered job while the first attempt's call is
    still running) is one document: one 201, one 200 duplicate, never a 500."""
    for _ in range(3):
        headers = auth(unique("race-"))
        created = await pg_platform.client.post(
            "/api/v1/rag/collections", json={"name": "docs"}, headers=headers
        )
        assert created.status_code == 201, created.text
        body = {"title": "Same", "content": "Identical text sent twice.", "collection": "docs"}
        responses = await post_documents(pg_platform, headers, [body, body])
        assert sorted(r.status_code for r in responses) == [200, 201], [r.text for r in responses]
        ids = {r.json()["data"]["document_id"] for r in responses}
        assert len(ids) == 1
        docs = await get_data(pg_platform.client, "/api/v1/rag/documents", headers)
        assert docs["total"] == 1


async def test_a_failed_index_write_is_repaired_when_the_document_is_sent_again(
    pg_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pgvector failing once after the rows are saved: the retry (a client's, or the ingestion
    job's) must leave the document searchable, not call the unindexed document a duplicate."""
    index = pg_platform.app.state.services["rag"].index
    real_upsert = index.upsert
    calls = 0

    async def flaky_upsert(chunks: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DependencyUnavailable("pgvector is unreachable")
        await real_upsert(chunks)

    monkeypatch.setattr(index, "upsert", flaky_upsert)
    headers = auth(unique("flaky-"))
    body = {"title": "Tides", "content": "High tide at Harwich is at 06:40 on Monday."}
    first = await pg_platform.client.post("/api/v1/rag/documents", json=body, headers=headers)
    assert first.status_code == 503, first.text
    again = await pg_platform.client.post("/api/v1/rag/documents", json=body, headers=headers)
    assert again.status_code in (200, 201), again.text
    document_id = again.json()["data"]["document_id"]
    hits = await search(pg_platform.client, headers, query_text="Harwich tide", mode="keyword")
    assert [h["document_id"] for h in hits] == [document_id], again.json()
    docs = await get_data(pg_platform.client, "/api/v1/rag/documents", headers)
    assert docs["total"] == 1


# -- 3. a real worker killed mid-job ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
    | {"content-length", "content-encoding", "proxy-authorization", "proxy-authenticate"}
)


class HoldFirstAnswer(ThreadingHTTPServer):
    """A reverse proxy in front of the API process, used as the worker's FAAS_RAG_URL.

    The first `POST /api/v1/rag/documents` is forwarded, so RAG indexes the file, but its
    answer is held back until `release` is set: the worker sits in stage `chunking`, the effect
    has happened and the job is not acked — a deterministic point to kill it. Everything
    else passes straight through."""

    daemon_threads = True
    HELD = ("POST", "/api/v1/rag/documents")

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.forwarded = threading.Event()
        self.release = threading.Event()
        self.first_status: int | None = None
        self.seen: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._held = False
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> HoldFirstAnswer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)

    def hold(self, method: str, path: str) -> bool:
        with self._lock:
            if (method, path) != self.HELD or self._held:
                return False
            self._held = True
            return True


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HoldFirstAnswer

    def _forward(self) -> None:
        proxy = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        with httpx.Client(base_url=proxy.upstream, timeout=60) as client:
            response = client.request(self.command, self.path, content=body, headers=headers)
        proxy.seen.append((self.command, self.path, response.status_code))
        if proxy.hold(self.command, self.path):
            proxy.first_status = response.status_code
            proxy.forwarded.set()
            proxy.release.wait(60)
            self.close_connection = True  # the caller is dead by now: no answer
            return
        with contextlib.suppress(OSError):
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, *args: Any) -> None:
        return None


class Proc:
    """A faas process whose stderr is drained in the background (kept for diagnostics)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "faas", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: deque[str] = deque(maxlen=200)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line.rstrip())

    @property
    def pid(self) -> int:
        return self.popen.pid

    def said(self, text: str) -> bool:
        if self.popen.poll() is not None and not any(text in line for line in self.lines):
            raise AssertionError(f"faas exited with {self.popen.returncode}: {self.tail()}")
        return any(text in line for line in list(self.lines))

    def tail(self) -> str:
        return "\n".join(list(self.lines)[-30:])

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._reader.join(timeout=5)


async def start_worker(env: dict[str, str]) -> Proc:
    worker = Proc(["worker", "--kinds", "ingestion.process_file"], env)
    try:
        await poll(lambda: worker.said("consuming ingestion.process_file"), "worker ready", 45)
    except BaseException:
        worker.stop()
        raise
    return worker


async def wait_ready(api: str, server: Proc) -> None:
    async def ready() -> bool:
        if server.popen.poll() is not None:
            raise AssertionError(f"faas up exited with {server.popen.returncode}: {server.tail()}")
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"{api}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await poll(ready, "faas up ready", 45, every_s=0.1)


async def test_a_killed_ingestion_worker_is_redelivered_and_indexes_the_file_once(
    tmp_path: Path, database: str, nats_url: str
) -> None:
    tenant = unique("crash-")
    headers = auth(tenant)
    prefix = unique("t")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    env |= {
        "FAAS_DATA_DIR": str(tmp_path / "data"),
        "FAAS_DATABASE_URL": database,
        "FAAS_NATS_URL": nats_url,
        "FAAS_NATS_PREFIX": prefix,
        "FAAS_JWT_SECRET": TEST_SECRET,
        "FAAS_SERVICES": ",".join(SERVICES),
        "FAAS_GATEWAY_MODELS": str(write_routing(tmp_path)),
        "FAAS_JOB_ACK_WAIT_S": "2",
        "FAAS_JOB_RETRY_BASE_S": "0.2",
        "FAAS_LOG_REQUESTS": "false",
    }
    workers: list[Proc] = []
    server = Proc(["up", "--port", str(port)], env | {"FAAS_RUN_WORKER": "false"})
    with HoldFirstAnswer(api) as proxy:
        try:
            await wait_ready(api, server)
            worker_env = env | {"FAAS_RAG_URL": proxy.url, "FAAS_GATEWAY_URL": api}
            workers.append(await start_worker(worker_env))
            async with httpx.AsyncClient(base_url=api, timeout=30) as client:
                await crash_and_recover(client, headers, proxy, workers, worker_env)
        finally:
            proxy.release.set()
            for proc in [*workers, server]:
                proc.stop()
            bus = NatsBus(nats_url, prefix, name="rag-crash-cleanup")
            await bus.start()
            try:
                await drop_streams(bus)
            finally:
                await bus.close()


async def crash_and_recover(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    proxy: HoldFirstAnswer,
    workers: list[Proc],
    worker_env: dict[str, str],
) -> None:
    text = "\n\n".join(
        f"Paragraph {i}: the depot ledger {i} lists crate FALCON-{i} for route R{i % 7}."
        for i in range(60)
    )
    files = [("files", ("ledger.txt", text.encode(), "text/plain"))]
    response = await client.post("/api/v1/ingestion/upload", files=files, headers=headers)
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]["files"][0]
    file_path = f"/api/v1/ingestion/files/{accepted['file_id']}"

    # The first worker sent the text to RAG, which indexed it; the answer is held back.
    await poll(proxy.forwarded.is_set, "the first worker calling RAG", 60)
    assert proxy.first_status == 201, proxy.seen
    midway = await get_data(client, file_path, headers)
    assert (midway["status"], midway["stage"]) == ("processing", "chunking"), midway
    first = workers[0]
    first.kill()

    job_path = accepted["location"]
    job = await get_data(client, job_path, headers)
    assert job["status"] == "running" and job["attempts"] == 1, job
    docs = await get_data(client, "/api/v1/rag/documents", headers)
    assert docs["total"] == 1, docs
    proxy.release.set()

    second = await start_worker(worker_env)
    workers.append(second)
    done = await wait_file(client, accepted, headers, timeout_s=60)
    assert done["status"] == "indexed", (done, second.tail())
    job = await get_data(client, job_path, headers)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2, job
    assert job["result"]["duplicate"] is True, job  # the redelivery found the first's document
    docs = await get_data(client, "/api/v1/rag/documents", headers)
    assert docs["total"] == 1, docs
    assert docs["items"][0]["id"] == done["document_id"]
    assert done["chunks"] == docs["items"][0]["chunk_count"] >= 1
    posts = [s for s in proxy.seen if s[:2] == HoldFirstAnswer.HELD]
    assert [status for *_, status in posts] == [201, 200], proxy.seen
    hits = await search(client, headers, query_text="FALCON-42 crate", mode="hybrid")
    assert hits and hits[0]["document_id"] == done["document_id"], hits
