"""Step 8, item 7: each collection records the embedding model and dimension it was indexed
with; after the gateway's embedding model changes, a query or a new document is refused with
both models and the fix named, and `rag.reindex` re-embeds the collection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme")
REFUNDS = "Refunds are paid within 14 days after the returned item arrives at our warehouse."
SHIPPING = "Standard shipping takes 3 to 5 business days; express arrives the next day."


def routing(tmp_path: Path, model: str, dims: int) -> Path:
    path = tmp_path / f"{model}.yaml"
    path.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n"
        f"      - provider: hash\n        model: {model}\n        dimensions: {dims}\n"
    )
    return path


@asynccontextmanager
async def serving(
    tmp_path: Path, make_settings: Callable[..., Settings], model: str, dims: int
) -> AsyncIterator[Platform]:
    settings = make_settings(gateway_models=routing(tmp_path, model, dims))
    async with platform(settings, ["gateway", "rag"]) as env:
        yield env


async def add(env: Platform, content: str, collection: str = "docs") -> Any:
    body = {"title": content[:20], "content": content, "collection": collection}
    return await env.client.post("/api/v1/rag/documents", json=body, headers=A)


async def search(env: Platform, **body: Any) -> Any:
    return await env.client.post(
        "/api/v1/rag/search", json={"query_text": "when are refunds paid", **body}, headers=A
    )


async def collection(env: Platform, name: str) -> dict[str, Any]:
    listed = (await env.client.get("/api/v1/rag/collections", headers=A)).json()["data"]
    return next(c for c in listed if c["name"] == name)


async def finished(env: Platform, job_id: str) -> dict[str, Any]:
    for _ in range(500):
        job = (await env.client.get(f"/api/v1/jobs/{job_id}", headers=A)).json()["data"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def test_a_collection_records_the_model_and_dimension_it_was_indexed_with(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    async with serving(tmp_path, make_settings, "hash-old", 384) as env:
        assert (await add(env, REFUNDS)).status_code == 201
        docs = await collection(env, "docs")
        assert docs["embedding_model"] == "hash:hash-old"
        assert docs["embedding_dimensions"] == 384


async def test_after_a_model_change_search_and_indexing_are_refused_naming_both_models(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    async with serving(tmp_path, make_settings, "hash-old", 384) as env:
        assert (await add(env, REFUNDS)).status_code == 201
    async with serving(tmp_path, make_settings, "hash-new", 256) as env:
        for response in (
            await search(env, collection="docs"),
            await search(env),  # every collection of the tenant
            await add(env, SHIPPING),
        ):
            assert response.status_code == 409, response.text
            message = response.json()["error"]["message"]
            assert "'docs' was indexed with hash:hash-old (384 dimensions)" in message
            assert "now embeds with hash:hash-new (256 dimensions)" in message
            assert "faas rag reindex --collection docs" in message
        # Keyword search needs no embedding, and a new collection takes the new model.
        keyword = await search(env, collection="docs", mode="keyword")
        assert keyword.status_code == 200 and keyword.json()["data"]["results"]
        assert (await add(env, SHIPPING, collection="fresh")).status_code == 201
        assert (await collection(env, "fresh"))["embedding_model"] == "hash:hash-new"


async def test_reindex_re_embeds_a_collection_with_the_current_model(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    async with serving(tmp_path, make_settings, "hash-old", 384) as env:
        assert (await add(env, REFUNDS)).status_code == 201
        assert (await add(env, SHIPPING)).status_code == 201
    async with serving(tmp_path, make_settings, "hash-new", 256) as env:
        accepted = await env.client.post(
            "/api/v1/rag/reindex", json={"collection": "docs"}, headers=A
        )
        assert accepted.status_code == 202, accepted.text
        job = await finished(env, accepted.json()["data"]["job_id"])
        assert job["status"] == "succeeded", job
        assert job["result"] == {
            "collections": 1,
            "documents": 2,
            "chunks": 2,
            "embedding_model": "hash:hash-new",
        }
        docs = await collection(env, "docs")
        assert (docs["embedding_model"], docs["embedding_dimensions"]) == ("hash:hash-new", 256)
        found = await search(env, collection="docs", mode="vector", top_k=2)
        assert found.status_code == 200, found.text
        assert found.json()["data"]["results"][0]["text"] == REFUNDS
        assert (await add(env, "Store credit is issued instantly.")).status_code == 201


async def test_reindex_of_an_unknown_collection_is_404(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    async with serving(tmp_path, make_settings, "hash-old", 384) as env:
        response = await env.client.post(
            "/api/v1/rag/reindex", json={"collection": "nope"}, headers=A
        )
        assert response.status_code == 404


async def test_readyz_names_the_chat_and_embedding_models(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    async with serving(tmp_path, make_settings, "hash-old", 384) as env:
        ready = (await env.client.get("/readyz")).json()
        assert ready["models"] == {
            "chat": "chat-default (mock:default)",
            "embedding": "embed-default (hash:hash-old)",
        }
        assert ready["checks"]["rag_vectors"] == "ok"


async def test_a_query_embedding_beyond_float32_is_a_422_naming_the_field(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    async with serving(tmp_path, make_settings, "hash-old", 384) as env:
        response = await env.client.post(
            "/api/v1/rag/search",
            json={"mode": "vector", "query_embedding": [3.4028235677973366e38]},
            headers=A,
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["field"] == "query_embedding"
