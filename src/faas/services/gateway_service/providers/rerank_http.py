"""Any Cohere/Jina-compatible rerank endpoint (`POST {api_base}/rerank`): Cohere, Jina, Voyage,
vLLM and Infinity serve this shape. The HTTP client, its pooling and the classification of
upstream failures are the OpenAI-compatible provider's (aiohttp, measured there)."""

from __future__ import annotations

import math
from typing import Any

from faas.services.gateway_service.providers.base import ProviderError, Usage
from faas.services.gateway_service.providers.openai import (
    OpenAICompatibleProvider,
    _json_object,
)
from faas.services.gateway_service.providers.rerank_base import RerankResult
from faas.services.gateway_service.routing_table import Deployment


def _usage(body: dict[str, Any]) -> Usage | None:
    """Jina reports `usage.total_tokens`; Cohere bills search units, not tokens (None)."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    tokens = usage.get("prompt_tokens") or usage.get("total_tokens")
    try:
        return Usage(prompt_tokens=max(0, int(tokens))) if tokens is not None else None
    except (TypeError, ValueError):
        return None


def parse_ranking(
    body: dict[str, Any], documents: int, deployment: Deployment
) -> list[tuple[int, float]]:
    """The `results` of a rerank answer, checked: indexes in range, finite scores."""
    try:
        ranking = [(int(r["index"]), float(r["relevance_score"])) for r in body["results"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(
            "server", f"deployment {deployment.id}: malformed rerank response"
        ) from exc
    for index, score in ranking:
        if not 0 <= index < documents or not math.isfinite(score):
            raise ProviderError(
                "server", f"deployment {deployment.id}: rerank result out of range: {index}"
            )
    ranking.sort(key=lambda pair: (-pair[1], pair[0]))
    return ranking


class HttpRerankProvider:
    name = "cohere"

    def __init__(self) -> None:
        self._http = OpenAICompatibleProvider()

    async def rerank(
        self, query: str, documents: list[str], top_n: int | None, deployment: Deployment
    ) -> RerankResult:
        payload: dict[str, Any] = {
            "model": deployment.model,
            "query": query,
            "documents": documents,
            "return_documents": False,
        }
        if top_n is not None:
            payload["top_n"] = top_n
        raw = await self._http._post("/rerank", payload, deployment)
        body = _json_object(raw, deployment)
        ranking = parse_ranking(body, len(documents), deployment)
        if top_n is not None:
            ranking = ranking[:top_n]
        return RerankResult(ranking=ranking, usage=_usage(body))

    async def health(self, deployment: Deployment) -> bool:
        return await self._http.health(deployment)

    async def aclose(self) -> None:
        await self._http.aclose()
