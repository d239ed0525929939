"""RAG's optional rerank stage (`rerank: true` or a rerank model's name on search and query),
through the real app with the gateway in-process and a Cohere-shaped reranker on a real HTTP
upstream (tests/support/mock_upstream.py scores by the share of query words a text holds)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.services.rag_service.search import RERANK_DEPTH
from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream

A = auth("acme")
TEXTS = [
    "Refunds are paid within 14 days after the returned item arrives at our warehouse.",
    "Standard shipping takes 3 to 5 business days; express arrives the next business day.",
    "Passwords must have at least 12 characters and are rotated every 90 days.",
    "Shipping refunds are paid when the item arrives damaged.",
]


@pytest.fixture
async def up() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def env(
    tmp_path: Any, make_settings: Callable[..., Settings], up: MockUpstream
) -> AsyncIterator[Platform]:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: hash\n"
        "  - name: rerank-default\n    kind: rerank\n    deployments:\n      - provider: cosine\n"
        "  - name: words\n    kind: rerank\n    deployments:\n      - provider: cohere\n"
        f"        model: mock-rerank\n        api_base: {up.url}\n"
    )
    async with platform(make_settings(gateway_models=routing), ["gateway", "rag"]) as env:
        for n, text in enumerate(TEXTS):
            body = {"title": f"doc {n}", "content": text, "metadata": {"n": n}}
            response = await env.client.post("/api/v1/rag/documents", json=body, headers=A)
            assert response.status_code in (200, 201), response.text
        yield env


async def search(env: Platform, **body: Any) -> Any:
    return await env.client.post("/api/v1/rag/search", json=body, headers=A)


async def test_search_with_a_named_reranker_takes_its_order_and_scores(
    env: Platform, up: MockUpstream
) -> None:
    query = "when are shipping refunds paid"
    response = await search(env, query_text=query, top_k=2, rerank="words")
    assert response.status_code == 200, response.text
    results = response.json()["data"]["results"]
    assert len(results) == 2
    sent = up.stats.last_body
    assert sent["query"] == query and sent["model"] == "mock-rerank"
    # Every candidate went to the reranker (more than top_k), and its scores came back.
    assert len(sent["documents"]) == len(TEXTS)
    words = set(query.split())
    expected = sorted(
        (len(words & set(t.lower().split())) / len(words) for t in sent["documents"]),
        reverse=True,
    )[:2]
    assert [r["score"] for r in results] == pytest.approx(expected)
    assert results[0]["metadata"]["n"] == 3


async def test_the_reranker_gets_the_fused_top_20_not_both_deep_lists(
    env: Platform, up: MockUpstream
) -> None:
    for n in range(4, 30):
        body = {"title": f"doc {n}", "content": f"Shipping note {n}: refunds and parcels."}
        response = await env.client.post("/api/v1/rag/documents", json=body, headers=A)
        assert response.status_code == 201, response.text
    response = await search(env, query_text="shipping refunds", top_k=2, rerank="words")
    assert response.status_code == 200, response.text
    # Hybrid fetches each list 40 deep; the reranker scores (and bills) only the fused head.
    assert len(up.stats.last_body["documents"]) == RERANK_DEPTH


async def test_search_with_rerank_true_uses_rerank_default(env: Platform) -> None:
    plain = await search(env, query_text="password rotation rules", top_k=3, mode="keyword")
    reranked = await search(
        env, query_text="password rotation rules", top_k=3, mode="keyword", rerank=True
    )
    assert plain.status_code == reranked.status_code == 200
    scores = [r["score"] for r in reranked.json()["data"]["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert reranked.json()["data"]["results"][0]["metadata"]["n"] == 2


async def test_query_passes_rerank_to_its_search(env: Platform, up: MockUpstream) -> None:
    body = {"query": "when are refunds paid", "top_k": 2, "rerank": "words"}
    response = await env.client.post("/api/v1/rag/query", json=body, headers=A)
    assert response.status_code == 200, response.text
    assert up.stats.paths["/v1/rerank"] == 1
    assert response.json()["data"]["citations"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"query_embedding": [0.1] * 384, "mode": "vector", "rerank": True}, 422),
        ({"query_text": "refunds", "rerank": "chat-default"}, 422),
        ({"query_text": "refunds", "rerank": "no-such-model"}, 404),
        ({"query_text": "refunds", "rerank": "bad name!"}, 422),
    ],
)
async def test_a_rerank_the_gateway_cannot_do_is_4xx(
    env: Platform, body: dict[str, Any], status: int
) -> None:
    response = await search(env, **body)
    assert response.status_code == status, response.text
