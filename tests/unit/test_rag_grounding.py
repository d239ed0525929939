"""Citations and confidence reflect the answer actually given: a sentence is grounded by the
sources it cites, an uncited or repeated answer scores low."""

from __future__ import annotations

from typing import Any, cast

from faas.services.rag_service.answering import Answerer, Prepared
from faas.services.rag_service.models import QueryRequest, QueryResponse, SearchHit
from faas.services.rag_service.retrieval import (
    UNCITED_WEIGHT,
    answer_confidence,
    cited_support,
    sentences,
)

REFUNDS = "Refunds\nRefunds are paid within 14 days of the return."
SHIPPING = "Shipping\nParcels ship in two days."
PASSAGES = [REFUNDS, SHIPPING]


def confidence(answer: str) -> float:
    return answer_confidence([(s, cited_support(s, PASSAGES)) for s in sentences(answer)])


def test_a_citation_after_the_full_stop_belongs_to_its_sentence() -> None:
    assert sentences("Refunds are paid within 14 days. [1] Parcels ship in two days. [2][1]") == [
        "Refunds are paid within 14 days [1].",
        "Parcels ship in two days [2][1].",
    ]


def test_a_cited_supported_answer_is_confident() -> None:
    assert confidence("Refunds are paid within 14 days of the return [1].") == 1.0
    assert confidence("Refunds are paid within 14 days of the return. [1]") == 1.0


def test_an_answer_citing_the_wrong_source_is_not_supported() -> None:
    assert cited_support("Refunds are paid within 14 days [2].", PASSAGES) < 0.5


def test_an_uncited_answer_scores_low_even_with_the_sources_words() -> None:
    looping = "Refunds are paid within 14 days of the return. " * 6
    assert confidence(looping) < UNCITED_WEIGHT
    assert confidence("Refunds are paid within 14 days of the return.") == UNCITED_WEIGHT


def test_a_repeated_cited_sentence_does_not_raise_confidence() -> None:
    once = "Refunds are paid within 14 days of the return [1]."
    assert confidence(" ".join([once] * 4)) == 0.25


def test_an_answer_the_sources_do_not_support_scores_low() -> None:
    assert confidence("The capital of France is Paris [1].") < 0.2
    assert confidence("") == 0.0
    assert cited_support("A claim citing a source that does not exist [7].", PASSAGES) < 0.5


def finish(answer: str) -> QueryResponse:
    hits = [
        SearchHit(
            chunk_id=f"c{n}",
            document_id=f"d{n}",
            collection_id="default",
            title=title,
            text=text,
            score=0.5,
            metadata={},
        )
        for n, (title, text) in enumerate([("refunds.md", REFUNDS), ("shipping", SHIPPING)], 1)
    ]
    prepared = Prepared("How long do refunds take?", None, hits, "the prompt")
    body = QueryRequest(query="How long do refunds take?", enable_grounding_check=True)
    return Answerer(cast(Any, None)).finish(prepared, answer, body, {})


def test_the_query_response_reflects_the_answer_given() -> None:
    cited = finish("Refunds are paid within 14 days of the return. [1]")
    assert [c.cited_in_answer for c in cited.citations] == [True, False]
    assert cited.confidence == 1.0 and cited.unsupported_sentences == []
    # SmolLM2-135M looping on the passage, no [n]: it got confidence 0.996
    looping = finish("Refunds are paid within 14 days of the return. " * 8)
    assert not any(c.cited_in_answer for c in looping.citations)
    assert looping.confidence < 0.1
    # the old mock echoed the prompt, "[1]" included: only a citation in the answer counts
    echoed = finish("[mock] You said: cite sources like [2] in your answer.")
    assert [c.cited_in_answer for c in echoed.citations] == [False, True]
    assert echoed.confidence < 0.2
