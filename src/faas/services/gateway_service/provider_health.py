"""`GET /api/v1/gateway/providers`: every deployment of the routing table asked, at once, whether
it answers (each within 5 s), beside its breaker's state."""

from __future__ import annotations

import asyncio
from typing import Any

from faas.services.gateway_service.models import ProviderHealth
from faas.services.gateway_service.providers.pool import Providers
from faas.services.gateway_service.routing import ModelRouter
from faas.services.gateway_service.routing_table import Deployment, ModelConfig


async def provider_health(router: ModelRouter, providers: Providers) -> list[ProviderHealth]:
    checks: list[tuple[ModelConfig, int, Deployment, Any]] = []
    for model in router.table.models:
        for index, deployment in enumerate(model.deployments):
            checks.append((model, index, deployment, _healthy(providers, model, deployment)))
    results = await asyncio.gather(*(c[3] for c in checks))
    return [
        ProviderHealth(
            model=model.name,
            deployment=deployment.id,
            provider=deployment.provider,
            healthy=healthy,
            breaker=str(router.breaker_state(model, index)),
        )
        for (model, index, deployment, _), healthy in zip(checks, results, strict=True)
    ]


async def _healthy(providers: Providers, model: ModelConfig, deployment: Deployment) -> bool:
    if deployment.unavailable:
        return False
    try:
        provider: Any
        if model.kind == "chat":
            provider = providers.chat(deployment.provider)
        elif model.kind == "rerank":
            provider = providers.rerank(deployment.provider)
        else:
            provider = providers.embedding(deployment.provider)
        return bool(await asyncio.wait_for(provider.health(deployment), timeout=5))
    except Exception:
        return False
