"""An embeddings call: admitted on its counted input, routed with fallback, reconciled on
the provider's usage (or the gateway's own count) and recorded."""

from __future__ import annotations

from collections.abc import Awaitable

from faas.services.gateway_service.accounting import CallRecord, counted_embedding_usage
from faas.services.gateway_service.dispatch import Dispatcher
from faas.services.gateway_service.inputs import embedding_tokens
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.offload import text_size
from faas.services.gateway_service.providers.base import EmbeddingResult, TakesTokenIds
from faas.services.gateway_service.routing_table import Deployment
from faas.shared.context import Identity
from faas.shared.cpu import run_cpu


async def embed(
    dispatch: Dispatcher,
    identity: Identity,
    texts: list[str],
    model_name: str | None,
    limits: TenantLimits,
    field: str,
    token_ids: list[list[int]] | None = None,
) -> tuple[EmbeddingResult, CallRecord]:
    """Embeddings of `texts`; `field` names them in a refusal of oversized input. The caller's
    `token_ids` (its texts before decoding) go as they are to deployments that take ids."""
    call = CallRecord("embeddings", model=model_name or "")
    model = dispatch.router.resolve(model_name, "embedding")
    call.model = model.name
    estimate = await embedding_tokens(texts, field)
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
        lambda d: embed_on(dispatch, d, texts, token_ids),
    )
    usage = result.usage
    if usage is None:
        usage = await run_cpu(text_size(texts), counted_embedding_usage, texts)
    call.usage = usage
    attempt.succeeded(usage.total_tokens)
    await dispatch.admission.reconcile(reservation, call)
    await dispatch.recorder.record(identity, call)
    return result, call


def embed_on(
    dispatch: Dispatcher, deployment: Deployment, texts: list[str], ids: list[list[int]] | None
) -> Awaitable[EmbeddingResult]:
    provider = dispatch.providers.embedding(deployment.provider)
    if ids is not None and deployment.token_ids == "pass" and isinstance(provider, TakesTokenIds):
        return provider.embed_token_ids(ids, deployment)
    return provider.embed(texts, deployment)
