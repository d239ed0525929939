"""The rerank port: score documents against a query. Scores are the provider's own (a cosine,
a cross-encoder's logit squashed to 0..1, ...): comparable within one answer, not across
providers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from faas.services.gateway_service.providers.base import Usage
from faas.services.gateway_service.routing_table import Deployment


@dataclass(slots=True)
class RerankResult:
    """`(index into the documents, relevance score)`, best first, at most `top_n` of them."""

    ranking: list[tuple[int, float]]
    usage: Usage | None


def best_first(scores: list[float], top_n: int | None) -> list[tuple[int, float]]:
    """Indexes and scores in descending score order; ties keep the documents' order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if top_n is not None:
        order = order[:top_n]
    return [(i, scores[i]) for i in order]


@runtime_checkable
class RerankProvider(Protocol):
    name: str

    async def rerank(
        self, query: str, documents: list[str], top_n: int | None, deployment: Deployment
    ) -> RerankResult:
        """The documents most relevant to `query`. Raises ProviderError."""
        ...

    async def health(self, deployment: Deployment) -> bool: ...

    async def aclose(self) -> None: ...
