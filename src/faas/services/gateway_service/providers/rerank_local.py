"""A reranker that ships with faas and works offline: the cosine between the query and each
document under a local embedding model — all-MiniLM-L6-v2 when its extra is installed, feature
hashing otherwise (`options.embedder` picks one explicitly).

No cross-encoder: none small enough ships its weights in a pip package (FlashRank and
sentence-transformers download theirs at run time), and faas does not fetch weights."""

from __future__ import annotations

import numpy as np

from faas.services.gateway_service.providers import build_embedding_provider, provider_available
from faas.services.gateway_service.providers.base import EmbeddingProvider, ProviderError, Usage
from faas.services.gateway_service.providers.rerank_base import RerankResult, best_first
from faas.services.gateway_service.routing_table import Deployment
from faas.shared.cpu import run_cpu

LOCAL_EMBEDDERS = ("minilm", "hash")


def embedder_for(deployment: Deployment) -> str:
    chosen = deployment.options.get("embedder")
    if chosen is not None:
        if chosen not in LOCAL_EMBEDDERS:
            raise ProviderError(
                "bad_request",
                f"deployment {deployment.id}: options.embedder must be one of "
                f"{', '.join(LOCAL_EMBEDDERS)}",
            )
        return str(chosen)
    if deployment.model.startswith("hash"):
        return "hash"
    return "minilm" if provider_available("minilm") else "hash"


def cosine_scores(vectors: list[list[float]]) -> list[float]:
    """Cosines of rows 1.. against row 0 (a zero vector scores 0)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0
    unit = matrix / norms[:, None]
    scores: list[float] = (unit[1:] @ unit[0]).astype(float).tolist()
    return scores


class LocalRerankProvider:
    name = "cosine"

    def __init__(self) -> None:
        self._embedders: dict[str, EmbeddingProvider] = {}

    def _embedder(self, name: str) -> EmbeddingProvider:
        if name not in self._embedders:
            self._embedders[name] = build_embedding_provider(name)
        return self._embedders[name]

    def _embedding_deployment(self, deployment: Deployment, embedder: str) -> Deployment:
        model = deployment.model or ("hash-384" if embedder == "hash" else "all-MiniLM-L6-v2")
        return Deployment(
            provider="hash" if embedder == "hash" else "minilm",
            model=model,
            model_path=deployment.model_path,
            dimensions=deployment.dimensions or (384 if embedder == "hash" else None),
        )

    async def rerank(
        self, query: str, documents: list[str], top_n: int | None, deployment: Deployment
    ) -> RerankResult:
        embedder = embedder_for(deployment)
        target = self._embedding_deployment(deployment, embedder)
        result = await self._embedder(embedder).embed([query, *documents], target)
        scores = await run_cpu(len(documents) * 384, cosine_scores, result.vectors)
        usage = result.usage or Usage(source="estimated")
        return RerankResult(ranking=best_first(scores, top_n), usage=usage)

    async def health(self, deployment: Deployment) -> bool:
        embedder = embedder_for(deployment)
        target = self._embedding_deployment(deployment, embedder)
        return await self._embedder(embedder).health(target)

    async def aclose(self) -> None:
        for embedder in self._embedders.values():
            await embedder.aclose()
        self._embedders.clear()
