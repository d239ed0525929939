"""Rerank (`POST /v1/rerank`, the Cohere/Jina shape LiteLLM also serves): the request, the
answer, and the call — admitted on its counted input, routed with fallback over the `rerank`
model's deployments, reconciled and recorded with operation `rerank`."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from faas.services.gateway_service.accounting import CallRecord, counted_embedding_usage
from faas.services.gateway_service.dispatch import Dispatcher
from faas.services.gateway_service.inputs import embedding_tokens
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.offload import text_size
from faas.services.gateway_service.providers.rerank_base import RerankResult
from faas.shared.context import Identity
from faas.shared.cpu import run_cpu

MAX_RERANK_DOCUMENTS = 1000  # Cohere's and Jina's limit per request


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str


class RerankBody(BaseModel):
    """Cohere's and Jina's rerank request; documents as strings or `{"text": ...}` objects."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1, max_length=128)
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1, max_length=MAX_RERANK_DOCUMENTS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = True

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


RERANK_EXAMPLE = {
    "model": "rerank-default",
    "query": "What does a semantic cache return?",
    "documents": [
        "A semantic cache returns a stored answer to a question close in meaning.",
        "Feature hashing maps words to buckets.",
    ],
    "top_n": 1,
}


def rerank_body(
    result: RerankResult, call: CallRecord, documents: list[str], *, return_documents: bool
) -> dict[str, Any]:
    """The answer in Cohere's/Jina's shape, with OpenAI-style token usage."""
    results: list[dict[str, Any]] = []
    for index, score in result.ranking:
        row: dict[str, Any] = {"index": index, "relevance_score": score}
        if return_documents:
            row["document"] = {"text": documents[index]}
        results.append(row)
    tokens = call.usage.total_tokens if call.usage else 0
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "object": "list",
        "model": call.model,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def rerank(
    dispatch: Dispatcher,
    identity: Identity,
    query: str,
    documents: list[str],
    model_name: str | None,
    top_n: int | None,
    limits: TenantLimits,
) -> tuple[RerankResult, CallRecord]:
    """The `documents` most relevant to `query`, best first (at most `top_n`)."""
    call = CallRecord("rerank", model=model_name or "")
    if model_name is None:
        model = dispatch.router.table.default_for("rerank")
    else:
        model = dispatch.router.resolve(model_name, "rerank")
    call.model = model.name
    texts = [query, *documents]
    estimate = await embedding_tokens(texts, "documents")
    worst_cost = max(d.price.cost(estimate, 0) for d in model.deployments)
    reservation = await dispatch.admission.reserve(
        identity.tenant_id, limits, estimate, worst_cost, call
    )
    result, attempt = await dispatch.route(
        identity,
        model,
        estimate,
        call,
        reservation,
        lambda d: dispatch.providers.rerank(d.provider).rerank(query, documents, top_n, d),
    )
    usage = result.usage
    if usage is None or usage.total_tokens == 0:
        usage = await run_cpu(text_size(texts), counted_embedding_usage, texts)
    call.usage = usage
    attempt.succeeded(usage.total_tokens)
    await dispatch.admission.reconcile(reservation, call)
    await dispatch.recorder.record(identity, call)
    return result, call
