"""The bulk ingestion path, on SQLite and on PostgreSQL (pgvector): `POST /api/v1/rag/
documents:batch` embeds a batch's chunks together and stores it in one transaction, a document
that cannot be indexed does not lose the others, and `ingestion.process_files` jobs index many
files with coalesced writes, for the job's tenant only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event

from faas.integrations.bus.base import Message
from faas.services.gateway_service.models import UsageEvent
from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.pgvector import fresh_database, pgvector_server
from tests.unit.test_documents import make_pdf

pytestmark = pytest.mark.integration

A = auth("acme")
B = auth("globex")
BATCH = "/api/v1/rag/documents:batch"
UPLOAD = "/api/v1/ingestion/upload"
ROUTING = (
    "models:\n"
    "  - name: chat-default\n    deployments:\n      - provider: mock\n"
    "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
)


def text(n: int, words: int = 400) -> str:
    return " ".join(f"topic{n} word{i % 50} sentence{i // 12}." for i in range(words))


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with pgvector_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., Settings]
) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(ROUTING)
    options: dict[str, Any] = {"gateway_models": routing, "job_retry_base_s": 0.01}
    if request.param == "sqlite":
        async with platform(make_settings(**options), ["gateway", "rag", "ingestion"]) as env:
            yield env
        return
    server = request.getfixturevalue("pg_server")
    async with fresh_database(server, "faas_bulk") as url:
        settings = make_settings(database_url=url, **options)
        async with platform(settings, ["gateway", "rag", "ingestion"]) as env:
            yield env


@contextmanager
def counted(env: Platform) -> Iterator[dict[str, int]]:
    """Transactions and job-record writes on the platform database while the block runs."""
    counts = {"tx": 0, "job_writes": 0}
    engine = env.runtime.db.engine.sync_engine

    def begin(conn: Any) -> None:
        counts["tx"] += 1

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if sql.lstrip().upper().startswith(("UPDATE JOBS", 'UPDATE "JOBS"', "INSERT INTO JOBS")):
            counts["job_writes"] += 1

    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", statement)
    try:
        yield counts
    finally:
        event.remove(engine, "begin", begin)
        event.remove(engine, "before_cursor_execute", statement)


async def embedding_calls(env: Platform) -> list[Message]:
    seen: list[Message] = []

    async def collect(message: Message) -> None:
        usage = UsageEvent.model_validate(orjson.loads(message.data)["data"])
        if usage.operation == "embeddings":
            seen.append(message)

    await env.runtime.bus.subscribe("gateway.usage.>", collect)
    return seen


async def settle(seen: list[Any], at_least: int) -> None:
    for _ in range(200):
        if len(seen) >= at_least:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


async def post_batch(env: Platform, docs: list[dict[str, Any]], headers: dict[str, str] = A) -> Any:
    response = await env.client.post(BATCH, json={"documents": docs}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]["documents"]


async def test_a_batch_is_one_embedding_call_and_a_fixed_number_of_transactions(
    env: Platform,
) -> None:
    calls = await embedding_calls(env)
    small = [{"title": f"s{i}", "content": text(i), "collection": "small"} for i in range(2)]
    with counted(env) as few:
        await post_batch(env, small)
    await settle(calls, 1)
    assert len(calls) == 1
    calls.clear()
    many = [
        {"title": f"m{i}", "content": text(100 + i, 150), "collection": "many"} for i in range(30)
    ]
    with counted(env) as lots:
        outcomes = await post_batch(env, many)
    await settle(calls, 1)
    chunks = sum(o["indexed"]["chunks"] for o in outcomes)
    # Every chunk of 30 documents embedded together (under the gateway's per-call limits of
    # 256 texts and 300,000 bytes): one gateway call.
    assert chunks > 30 and len(calls) == 1
    # 15 times the documents, no more transactions: one store for the whole batch (the
    # first call also reads the tenant's gateway limits, cached afterwards).
    assert lots["tx"] <= few["tx"] <= 8, (few, lots)
    listed = await env.client.get("/api/v1/rag/documents?collection=many&limit=100", headers=A)
    documents = listed.json()["data"]["items"]
    assert len(documents) == 30 and {d["status"] for d in documents} == {"indexed"}


async def test_one_document_that_cannot_be_indexed_does_not_lose_the_others(
    env: Platform,
) -> None:
    first = await post_batch(env, [{"title": "old", "content": text(1)}])
    docs = [
        {"title": "new", "content": text(2)},
        {"title": "blank", "content": "   \n  "},
        {"title": "again", "content": text(1)},  # indexed by the earlier call
        {"title": "twice", "content": text(2)},  # the same as the first of this batch
    ]
    new, blank, again, twice = await post_batch(env, docs)
    assert new["indexed"]["chunks"] >= 1 and not new["indexed"]["duplicate"]
    assert blank["indexed"] is None
    assert blank["error"]["status"] == 422 and blank["error"]["code"] == "validation_failed"
    assert again["indexed"]["duplicate"]
    assert again["indexed"]["document_id"] == first[0]["indexed"]["document_id"]
    assert twice["indexed"]["duplicate"]
    assert twice["indexed"]["document_id"] == new["indexed"]["document_id"]
    hits = await env.client.post(
        "/api/v1/rag/search", json={"query_text": "topic2", "mode": "keyword"}, headers=A
    )
    found = {h["document_id"] for h in hits.json()["data"]["results"]}
    assert found == {new["indexed"]["document_id"]}


async def test_batches_are_tenant_scoped(env: Platform) -> None:
    (mine,) = await post_batch(env, [{"title": "a", "content": text(7)}], A)
    (theirs,) = await post_batch(env, [{"title": "a", "content": text(7)}], B)
    # The same content in another tenant is that tenant's own document, not a duplicate.
    assert not theirs["indexed"]["duplicate"]
    assert theirs["indexed"]["document_id"] != mine["indexed"]["document_id"]
    listed = await env.client.get("/api/v1/rag/documents", headers=B)
    assert [d["id"] for d in listed.json()["data"]["items"]] == [theirs["indexed"]["document_id"]]


async def test_batch_size_is_bounded(env: Platform) -> None:
    for docs in ([], [{"title": "t", "content": "x"}] * 257):
        response = await env.client.post(BATCH, json={"documents": docs}, headers=A)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "validation_failed"


async def wait_job(env: Platform, job_id: str, headers: dict[str, str] = A) -> dict[str, Any]:
    for _ in range(3000):
        job = (await env.client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()["data"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


async def test_an_upload_of_many_files_is_one_job_with_coalesced_writes(env: Platform) -> None:
    files = [
        ("files", (f"f{i}.md", f"# F{i}\n\n{text(i)}".encode(), "text/markdown")) for i in range(8)
    ]
    files.append(
        ("files", ("scan.pdf", make_pdf([["x"]], image_only=True), "application/pdf"))
    )  # no text
    with counted(env) as counts:
        response = await env.client.post(UPLOAD, files=files, headers=A)
        assert response.status_code == 202, response.text
        accepted = response.json()["data"]["files"]
        assert len({a["job_id"] for a in accepted}) == 1
        job = await wait_job(env, accepted[0]["job_id"])
    assert job["kind"] == "ingestion.process_files" and job["status"] == "succeeded", job
    results = {r["file_id"]: r for r in job["result"]["files"]}
    assert [results[a["file_id"]]["status"] for a in accepted] == ["indexed"] * 8 + ["failed"]
    # Job-record writes for 9 files: the submit, the claim, 2 progress writes, the finish.
    assert counts["job_writes"] <= 6, counts
    for item in accepted:
        row = await env.client.get(f"/api/v1/ingestion/files/{item['file_id']}", headers=A)
        view = row.json()["data"]
        if item["filename"] == "scan.pdf":
            assert view["status"] == "failed" and view["error"], view
        else:
            assert view["status"] == "indexed" and view["chunks"] >= 1, view
            assert view["document_id"] == results[item["file_id"]]["document_id"]


async def test_callers_submit_process_files_over_jobs_batch_for_their_own_files_only(
    env: Platform,
) -> None:
    files = [("files", (f"g{i}.txt", text(40 + i).encode(), "text/plain")) for i in range(3)]
    response = await env.client.post(UPLOAD, files=files, data={"auto_ingest": "false"}, headers=A)
    accepted = response.json()["data"]["files"]
    first = await wait_job(env, accepted[0]["job_id"])
    assert {r["status"] for r in first["result"]["files"]} == {"extracted"}
    ids = [a["file_id"] for a in accepted]
    # Another tenant naming these files finds none of them, and they stay as they were.
    body = {
        "jobs": [
            {"kind": "ingestion.process_files", "payload": {"file_ids": ids, "auto_ingest": True}}
        ]
    }
    theirs = await env.client.post("/api/v1/jobs:batch", json=body, headers=B)
    assert theirs.status_code == 202, theirs.text
    failed = await wait_job(env, theirs.json()["data"]["jobs"][0]["job_id"], B)
    assert failed["status"] == "failed" and "not found" in failed["error"], failed
    view = (await env.client.get(f"/api/v1/ingestion/files/{ids[0]}", headers=A)).json()
    assert view["data"]["status"] == "extracted"
    mine = await env.client.post("/api/v1/jobs:batch", json=body, headers=A)
    job = await wait_job(env, mine.json()["data"]["jobs"][0]["job_id"])
    assert job["status"] == "succeeded", job
    assert [r["status"] for r in job["result"]["files"]] == ["indexed"] * 3
    bad = {"jobs": [{"kind": "ingestion.process_files", "payload": {"file_ids": []}}]}
    refused = await env.client.post("/api/v1/jobs:batch", json=bad, headers=A)
    assert refused.status_code == 422, refused.text
