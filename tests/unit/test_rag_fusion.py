"""Hybrid search's fusion (rag_service/fusion.py): the vector weight chosen per query and
embedding space, weighted reciprocal rank fusion and its order, how deep each list is fetched,
and the per-request `vector_weight` through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.backends.vectors import Hit
from faas.services.rag_service.fusion import (
    VECTOR_WEIGHT_IDENTIFIER,
    VECTOR_WEIGHT_LEXICAL,
    VECTOR_WEIGHT_TEXT,
    fuse,
    has_identifier,
    vector_weight,
    weighted_rrf,
)
from faas.services.rag_service.models import SearchRequest
from faas.services.rag_service.search import FUSION_DEPTH, RERANK_DEPTH, candidate_depth
from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme")
MINILM = "minilm:all-MiniLM-L6-v2"


def hits(*scored: tuple[str, float]) -> list[Hit]:
    return [Hit(cid, f"doc-{cid}", "col", score, f"text {cid}", {}) for cid, score in scored]


def ids(fused: list[Hit]) -> list[str]:
    return [h.chunk_id for h in fused]


@pytest.mark.parametrize(
    "query", ["NW-4412", "5.15.1", "nwk_test_ key", "What does NW-4412 mean?", "error E07"]
)
def test_a_query_carrying_a_code_leans_on_keywords(query: str) -> None:
    assert has_identifier(query)
    assert vector_weight(query, MINILM) == VECTOR_WEIGHT_IDENTIFIER


@pytest.mark.parametrize(
    "query", ["Can I bring my puppy to the office?", "I left my work computer in a taxi"]
)
def test_a_natural_language_question_leans_on_vectors(query: str) -> None:
    assert not has_identifier(query)
    assert vector_weight(query, MINILM) == VECTOR_WEIGHT_TEXT
    assert vector_weight(query, None) == VECTOR_WEIGHT_TEXT  # the caller's own embedding


def test_feature_hashing_vectors_get_a_small_weight_for_every_query() -> None:
    for query in ("Can I bring my puppy to the office?", "NW-4412"):
        assert vector_weight(query, "hash:hash-384") == VECTOR_WEIGHT_LEXICAL


def test_a_hit_scores_its_weighted_reciprocal_ranks_in_both_lists() -> None:
    vector = hits(("a", 0.9), ("b", 0.8))
    keyword = hits(("b", 7.0), ("c", 3.0))
    fused = weighted_rrf(vector, keyword, 0.6, 1.0)
    assert ids(fused) == ["b", "a", "c"]
    assert [h.score for h in fused] == pytest.approx([0.6 / 3 + 0.4 / 2, 0.6 / 2, 0.4 / 3])
    # Hybrid search's fusion is this with k = 1.
    assert fuse(vector, keyword, 0.6) == fused
    # The scores of the lists do not matter, only the ranks.
    rescaled = hits(("b", 700.0), ("c", 0.001))
    assert ids(weighted_rrf(vector, rescaled, 0.6, 1.0)) == ids(fused)


def test_a_share_from_deep_in_one_list_breaks_a_tie_of_the_heads() -> None:
    filler = [(f"f{i}", 0.5 - i / 100) for i in range(28)]
    vector = hits(("a", 0.9), *filler, ("b", 0.1))  # b 30th
    keyword = hits(("b", 9.0), ("k2", 4.0))
    fused = fuse(vector, keyword, 0.5)  # a and b both 0.5 / 2 from the heads
    assert ids(fused)[:2] == ["b", "a"]
    assert ids(fuse(vector[:10], keyword, 0.5))[:2] == ["a", "b"]  # a 10-deep list: tie, as met


def test_the_weight_decides_which_list_leads() -> None:
    keyword = hits(("k1", 12.0), ("both", 6.0), ("k3", 5.0))
    vector = hits(("v1", 0.9), ("both", 0.5), ("v3", 0.45))
    assert ids(fuse(vector, keyword, 0.0)) == ["k1", "both", "k3"]  # keyword search
    assert ids(fuse(vector, keyword, 1.0)) == ["v1", "both", "v3"]  # vector search
    assert ids(fuse(vector, keyword, 0.5)) == ["both", "v1", "k1", "v3", "k3"]


def test_a_hit_strong_in_one_list_beats_one_middling_in_both() -> None:
    keyword = hits(("exact", 20.0), ("middling", 6.0), ("k3", 5.5), ("k4", 5.0))
    vector = hits(("v1", 0.52), ("middling", 0.5), ("v3", 0.49), ("v4", 0.48))
    assert ids(fuse(vector, keyword, VECTOR_WEIGHT_IDENTIFIER))[0] == "exact"
    # The fusion before Step 11 (equal weights, k = 60) ranked `middling` first.
    assert ids(weighted_rrf(vector, keyword, 0.5, 60.0))[0] == "middling"


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        ({"mode": "hybrid", "top_k": 10}, FUSION_DEPTH),
        ({"mode": "hybrid", "top_k": 60}, 60),
        ({"mode": "vector", "top_k": 10}, 10),
        ({"mode": "keyword", "top_k": 3}, 3),
        ({"mode": "hybrid", "top_k": 5, "mmr": True}, FUSION_DEPTH),
        ({"mode": "hybrid", "top_k": 20, "mmr": True}, 80),
        ({"mode": "vector", "top_k": 5, "mmr": True}, 20),
        ({"mode": "vector", "top_k": 5, "rerank": True}, RERANK_DEPTH),
    ],
)
def test_each_list_is_fetched_as_deep_as_the_search_needs(body: dict[str, Any], depth: int) -> None:
    assert candidate_depth(SearchRequest(query_text="refunds", **body)) == depth


def test_fused_hits_carry_the_fused_score_in_order() -> None:
    fused = fuse(hits(("a", 0.9), ("b", 0.1)), hits(("b", 3.0), ("c", 1.0)), 0.5)
    scores = [h.score for h in fused]
    assert scores == sorted(scores, reverse=True)
    assert fuse([], [], 0.5) == []
    assert ids(fuse([], hits(("k", 1.0), ("j", 0.5)), 0.7)) == ["k", "j"]


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


async def test_vector_weight_is_a_validated_search_option(env: Platform) -> None:
    for text in ("Refunds are paid within 14 days.", "Standard shipping takes 3 to 5 days."):
        body = {"title": text[:12], "content": text}
        created = await env.client.post("/api/v1/rag/documents", json=body, headers=A)
        assert created.status_code == 201, created.text
    for weight in (0.0, 0.4, 1.0):
        body = {"query_text": "refunds", "mode": "hybrid", "vector_weight": weight}
        response = await env.client.post("/api/v1/rag/search", json=body, headers=A)
        assert response.status_code == 200, response.text
        assert "Refunds" in response.json()["data"]["results"][0]["text"]
    for bad in (-0.1, 1.5, "half"):
        body = {"query_text": "refunds", "mode": "hybrid", "vector_weight": bad}
        response = await env.client.post("/api/v1/rag/search", json=body, headers=A)
        assert response.status_code == 422, response.text
