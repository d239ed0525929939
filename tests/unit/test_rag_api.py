"""The RAG service through the real app, with the gateway in-process (mock chat, hash
embeddings): documents, retrieval modes, answers with citations, streaming, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from faas.integrations.bus import Message
from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme")
B = auth("globex")

DOCS = {
    "refunds": (
        "Refund policy",
        "Refunds are paid within 14 days after the returned item "
        "arrives at our warehouse. Store credit is issued instantly.",
    ),
    "shipping": (
        "Shipping times",
        "Standard shipping takes 3 to 5 business days. Express "
        "shipping arrives the next business day when ordered before noon.",
    ),
    "security": (
        "Password rules",
        "Passwords must have at least 12 characters and are rotated "
        "every 90 days. Two-factor authentication is required for admins.",
    ),
}


@pytest.fixture
async def env(tmp_path: Any, make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
    )
    async with platform(make_settings(gateway_models=routing), ["gateway", "rag"]) as env:
        yield env


async def add(env: Platform, key: str, headers: dict[str, str] = A, **extra: Any) -> dict[str, Any]:
    title, content = DOCS[key]
    body = {"title": title, "content": content, "metadata": {"topic": key}, **extra}
    response = await env.client.post("/api/v1/rag/documents", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    return dict(response.json()["data"])


async def search(env: Platform, headers: dict[str, str] = A, **body: Any) -> list[dict[str, Any]]:
    response = await env.client.post("/api/v1/rag/search", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["results"])


async def test_create_read_list_and_deduplicate(env: Platform) -> None:
    created = await add(env, "refunds")
    assert created["chunks"] >= 1 and created["version"] == 1 and not created["duplicate"]
    again = await add(env, "refunds")
    assert again["duplicate"] is True and again["document_id"] == created["document_id"]
    doc = await env.client.get(f"/api/v1/rag/documents/{created['document_id']}", headers=A)
    assert doc.json()["data"]["title"] == "Refund policy"
    listed = (await env.client.get("/api/v1/rag/documents", headers=A)).json()["data"]
    assert listed["total"] == 1


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
async def test_each_search_mode_finds_the_relevant_document(env: Platform, mode: str) -> None:
    ids = {key: (await add(env, key))["document_id"] for key in DOCS}
    hits = await search(env, query_text="how many days until refunds are paid", mode=mode, top_k=3)
    assert hits[0]["document_id"] == ids["refunds"]
    assert hits[0]["title"] == "Refund policy"
    assert hits[0]["metadata"]["topic"] == "refunds"


async def test_filters_threshold_and_collections(env: Platform) -> None:
    await add(env, "refunds")
    await add(env, "shipping", collection="logistics")
    only = await search(env, query_text="days", mode="keyword", filters={"topic": "shipping"})
    assert {h["metadata"]["topic"] for h in only} == {"shipping"}
    scoped = await search(env, query_text="days", mode="hybrid", collection="logistics")
    assert {h["metadata"]["topic"] for h in scoped} == {"shipping"}
    none = await search(env, query_text="refunds", mode="vector", threshold=0.999)
    assert none == []
    missing = await env.client.post(
        "/api/v1/rag/search", json={"query_text": "x", "collection": "nope"}, headers=A
    )
    assert missing.status_code == 404


async def test_mmr_returns_diverse_results(env: Platform) -> None:
    for key in DOCS:
        await add(env, key)
    hits = await search(env, query_text="days", mode="vector", top_k=3, mmr=True)
    assert len({h["chunk_id"] for h in hits}) == len(hits) == 3


async def test_update_reembeds_only_changed_chunks(env: Platform) -> None:
    paragraphs = [
        f"Paragraph {i}: " + " ".join(f"word{i}x{j}" for j in range(60)) for i in range(4)
    ]
    body = {
        "title": "Long",
        "content": "\n\n".join(paragraphs),
        "chunk_size": 80,
        "chunk_overlap": 0,
    }
    created = (await env.client.post("/api/v1/rag/documents", json=body, headers=A)).json()["data"]
    assert created["chunks"] >= 4 and created["chunks_embedded"] == created["chunks"]
    paragraphs[2] = "Paragraph 2 was rewritten entirely with brand new words about llamas."
    update = {"content": "\n\n".join(paragraphs), "chunk_size": 80, "chunk_overlap": 0}
    response = await env.client.put(
        f"/api/v1/rag/documents/{created['document_id']}", json=update, headers=A
    )
    updated = response.json()["data"]
    assert updated["version"] == 2
    assert 1 <= updated["chunks_embedded"] < updated["chunks"]
    hits = await search(env, query_text="llamas", mode="keyword")
    assert hits and "llamas" in hits[0]["text"]


async def test_delete_removes_chunks_from_search(env: Platform) -> None:
    created = await add(env, "security")
    assert await search(env, query_text="passwords", mode="keyword")
    response = await env.client.delete(f"/api/v1/rag/documents/{created['document_id']}", headers=A)
    assert response.status_code == 204
    assert await search(env, query_text="passwords", mode="keyword") == []
    gone = await env.client.get(f"/api/v1/rag/documents/{created['document_id']}", headers=A)
    assert gone.status_code == 404


async def test_tenant_b_never_sees_tenant_a(env: Platform) -> None:
    created = await add(env, "security")
    doc_id = created["document_id"]
    for mode in ("keyword", "vector", "hybrid"):
        assert await search(env, B, query_text="passwords rotated", mode=mode) == []
    assert (await env.client.get(f"/api/v1/rag/documents/{doc_id}", headers=B)).status_code == 404
    assert (
        await env.client.delete(f"/api/v1/rag/documents/{doc_id}", headers=B)
    ).status_code == 404
    update = await env.client.put(f"/api/v1/rag/documents/{doc_id}", json={"title": "x"}, headers=B)
    assert update.status_code == 404
    listed = (await env.client.get("/api/v1/rag/documents", headers=B)).json()["data"]
    assert listed["total"] == 0
    answer = (
        await env.client.post("/api/v1/rag/query", json={"query": "password rules"}, headers=B)
    ).json()["data"]
    assert answer["citations"] == [] and answer["confidence"] == 0.0
    # The same content as another tenant's is a new document for this tenant.
    theirs = await add(env, "security", headers=B)
    assert theirs["duplicate"] is False and theirs["document_id"] != doc_id


async def test_query_answers_with_citations_to_the_right_document(env: Platform) -> None:
    ids = {key: (await add(env, key))["document_id"] for key in DOCS}
    response = await env.client.post(
        "/api/v1/rag/query",
        json={"query": "When are refunds paid?", "top_k": 2, "enable_grounding_check": True},
        headers=A,
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["answer"].startswith("[mock]")
    assert data["citations"][0]["n"] == 1
    assert data["citations"][0]["document_id"] == ids["refunds"]
    assert data["sources"][0]["title"] == "Refund policy"
    assert data["usage"]["total_tokens"] > 0
    assert isinstance(data["grounding"], list)
    assert 0.0 <= data["confidence"] <= 1.0


async def test_query_is_cached_until_the_tenant_documents_change(env: Platform) -> None:
    await add(env, "refunds")
    body = {"query": "refund timing"}
    first = (await env.client.post("/api/v1/rag/query", json=body, headers=A)).json()["data"]
    second = (await env.client.post("/api/v1/rag/query", json=body, headers=A)).json()["data"]
    assert first["cached"] is False and second["cached"] is True
    await add(env, "shipping")
    third = (await env.client.post("/api/v1/rag/query", json=body, headers=A)).json()["data"]
    assert third["cached"] is False


async def test_query_streams_citations_deltas_and_done(env: Platform) -> None:
    await add(env, "shipping")
    events: list[dict[str, Any]] = []
    lines: list[str] = []
    async with env.client.stream(
        "POST", "/api/v1/rag/query", json={"query": "express shipping", "stream": True}, headers=A
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                lines.append(line)
                if line != "data: [DONE]":
                    events.append(orjson.loads(line[6:]))
    assert lines[-1] == "data: [DONE]"
    kinds = [e["type"] for e in events]
    assert kinds[0] == "citations" and kinds[-1] == "done"
    assert "delta" in kinds
    done = events[-1]
    assert done["answer"] == "".join(e["content"] for e in events if e["type"] == "delta")
    assert done["citations"][0]["title"] == "Shipping times"


async def test_collections_lifecycle(env: Platform) -> None:
    created = await env.client.post("/api/v1/rag/collections", json={"name": "hr"}, headers=A)
    assert created.status_code == 201
    dup = await env.client.post("/api/v1/rag/collections", json={"name": "hr"}, headers=A)
    assert dup.status_code == 409
    await add(env, "security", collection="hr")
    listed = (await env.client.get("/api/v1/rag/collections", headers=A)).json()["data"]
    assert {c["name"]: c["documents"] for c in listed} == {"hr": 1}
    removed = await env.client.delete("/api/v1/rag/collections/hr", headers=A)
    assert removed.json()["data"]["documents_removed"] == 1
    assert await search(env, query_text="passwords", mode="keyword") == []


async def test_indexed_and_deleted_events(env: Platform) -> None:
    seen: list[Message] = []

    async def collect(message: Message) -> None:
        seen.append(message)

    await env.runtime.bus.subscribe("rag.>", collect)
    created = await add(env, "refunds")
    await env.client.delete(f"/api/v1/rag/documents/{created['document_id']}", headers=A)
    for _ in range(100):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.01)
    assert [m.subject for m in seen] == ["rag.document_indexed.acme", "rag.document_deleted.acme"]


async def test_invalid_requests_are_422(env: Platform) -> None:
    bad = [
        ("/api/v1/rag/documents", {"title": "", "content": "x"}),
        (
            "/api/v1/rag/documents",
            {"title": "t", "content": "x", "chunk_size": 50, "chunk_overlap": 60},
        ),
        ("/api/v1/rag/search", {"top_k": 3}),
        ("/api/v1/rag/search", {"query_embedding": [0.1, 0.2], "mode": "hybrid"}),
        ("/api/v1/rag/query", {"query": ""}),
    ]
    for path, body in bad:
        response = await env.client.post(path, json=body, headers=A)
        assert response.status_code == 422, (path, body, response.text)
