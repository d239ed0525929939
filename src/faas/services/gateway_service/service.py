"""The gateway service: model routing table (hot-reloaded), providers, limits and the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from opentelemetry import metrics
from opentelemetry.trace import Tracer

from faas.backends.kv import KeyValueStore
from faas.backends.limits import LimitStore, build_limit_store
from faas.integrations.events import EventPublisher
from faas.services.gateway_service.accounting import CallRecord, UsageRecorder
from faas.services.gateway_service.alerts import alert_monitor
from faas.services.gateway_service.caller_policy import CallerPolicy
from faas.services.gateway_service.completion import Completion
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.models import (
    CacheOptions,
    DeploymentView,
    ModelsView,
    ModelView,
    Operation,
    ProviderHealth,
    RateLimitsView,
)
from faas.services.gateway_service.pipeline import ChatPipeline
from faas.services.gateway_service.provider_health import provider_health
from faas.services.gateway_service.provider_keys import ProviderKeys
from faas.services.gateway_service.providers.base import EmbeddingResult
from faas.services.gateway_service.providers.pool import Providers
from faas.services.gateway_service.providers.rerank_base import RerankResult
from faas.services.gateway_service.rerank import rerank
from faas.services.gateway_service.response_cache import ResponseCache
from faas.services.gateway_service.responses import ResponsesApi
from faas.services.gateway_service.responses_store import ResponseStore
from faas.services.gateway_service.routing import ModelRouter
from faas.services.gateway_service.routing_table import (
    Deployment,
    ModelConfig,
    ModelKind,
    RoutingTable,
    describe_unavailable,
    load_routing,
    unavailable_deployments,
)
from faas.services.gateway_service.teams import Teams
from faas.services.gateway_service.tenant_limits import TenantLimitsStore
from faas.services.gateway_service.tracing import call_tracing
from faas.shared import tokens
from faas.shared.config import Settings
from faas.shared.context import Identity
from faas.shared.database import Database

log = logging.getLogger("faas.gateway")


def default_routing() -> RoutingTable:
    """Offline defaults: the local model when installed, else the labelled mock; MiniLM
    embeddings when installed, else feature hashing."""
    from faas.services.gateway_service.providers import provider_available

    local = provider_available("llamacpp")
    minilm = provider_available("minilm")
    chat = (
        Deployment(
            provider="llamacpp", model="smollm2-135m", context_window=2048, max_output_tokens=512
        )
        if local
        else Deployment(provider="mock", model="faas-mock")
    )
    embed = (
        Deployment(provider="minilm", model="all-MiniLM-L6-v2")
        if minilm
        else Deployment(provider="hash", model="hash-384", dimensions=384)
    )
    # Rerank by the cosine under the same local embedding model (see providers/rerank_local.py).
    rerank = Deployment(provider="cosine", model=embed.model, dimensions=embed.dimensions)
    return RoutingTable(
        models=[
            ModelConfig(
                name="chat-default",
                kind="chat",
                deployments=[chat],
                description="local SmolLM2-135M" if local else "mock (offline demo)",
            ),
            ModelConfig(
                name="embed-default",
                kind="embedding",
                deployments=[embed],
                description="all-MiniLM-L6-v2" if minilm else "feature hashing",
            ),
            ModelConfig(
                name="rerank-default",
                kind="rerank",
                deployments=[rerank],
                description="cosine over " + ("all-MiniLM-L6-v2" if minilm else "feature hashing"),
            ),
        ],
        source="built-in defaults",
    )


def warn_unavailable(table: RoutingTable) -> None:
    for model, deployment in unavailable_deployments(table):
        log.warning(describe_unavailable(model, deployment))


class GatewayService:
    name = "gateway"

    def __init__(
        self,
        settings: Settings,
        *,
        kv: KeyValueStore,
        db: Database,
        events: EventPublisher,
        meter: metrics.Meter,
        limit_store: LimitStore | None = None,
        routing: RoutingTable | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.routing_path: Path | None = settings.gateway_models
        table = routing or (load_routing(self.routing_path) if self.routing_path else None)
        if table is not None:
            warn_unavailable(table)
        self.model_router = ModelRouter(
            table or default_routing(),
            breaker_failures=settings.gateway_breaker_failures,
            breaker_cooldown_s=settings.gateway_breaker_cooldown_s,
        )
        self.providers = Providers()
        self.tenant_limits = TenantLimitsStore(
            db,
            TenantLimits(
                rpm=settings.gateway_default_rpm,
                tpm=settings.gateway_default_tpm,
                daily_budget_usd=settings.gateway_default_daily_budget_usd,
                monthly_budget_usd=settings.gateway_default_monthly_budget_usd,
            ),
        )
        self.teams = Teams(db)
        self.access = CallerPolicy(self.model_router, self.tenant_limits, self.teams)
        self.limits = limit_store or build_limit_store(settings, kv)
        self.pipeline = ChatPipeline(
            router=self.model_router,
            providers=self.providers,
            limits=self.limits,
            cache=ResponseCache(kv, ttl_s=settings.gateway_cache_ttl_s),
            kv=kv,
            recorder=UsageRecorder(events, meter, call_tracing(settings, tracer)),
            completion_estimate_tokens=settings.gateway_completion_estimate_tokens,
        )
        stored = ResponseStore(
            kv,
            ttl_s=settings.gateway_responses_ttl_s,
            max_bytes=settings.gateway_responses_max_bytes,
        )
        self.responses = ResponsesApi(self, stored)
        self.provider_keys = ProviderKeys(db, settings.secrets_key, events=events)
        self.pipeline.dispatch.provider_keys = self.provider_keys
        self.alerts = alert_monitor(settings, self.pipeline, self.tenant_limits, kv, events)
        self._watcher: asyncio.Task[None] | None = None
        self._mtime: float | None = None

    # -- the use cases the routes call: the tenant's limits, then the pipeline ------------

    async def complete(
        self,
        identity: Identity,
        body: dict[str, Any],
        *,
        cache: CacheOptions | None = None,
        idempotency_key: str | None = None,
        operation: Operation = "chat",
    ) -> Completion:
        """A chat completion; `operation` names the API surface the call came through."""
        limits = await self.check_model(identity, body.get("model"), "chat")
        return await self.pipeline.complete(
            identity,
            body,
            limits,
            cache=cache,
            idempotency_key=idempotency_key,
            operation=operation,
        )

    async def open_stream(
        self,
        identity: Identity,
        body: dict[str, Any],
        *,
        include_usage: bool,
        operation: Operation = "chat",
    ) -> tuple[AsyncIterator[bytes], CallRecord]:
        limits = await self.check_model(identity, body.get("model"), "chat")
        return await self.pipeline.open_stream(
            identity, body, limits, include_usage=include_usage, operation=operation
        )

    async def embed(
        self,
        identity: Identity,
        texts: list[str],
        model_name: str | None,
        *,
        field: str,
        token_ids: list[list[int]] | None = None,
    ) -> tuple[EmbeddingResult, CallRecord]:
        """Embeddings of `texts`; `token_ids`, when the caller sent ids, go as they are to
        deployments that take them (`token_ids: pass`)."""
        limits = await self.check_model(identity, model_name, "embedding")
        return await self.pipeline.embed(
            identity, texts, model_name, limits, field=field, token_ids=token_ids
        )

    # -- model access: the one place a caller's allowed models are checked -----------------

    async def check_model(self, identity: Identity, name: Any, kind: ModelKind) -> TenantLimits:
        """403 naming the rule (tenant or team allow/deny list, API key) that refuses the model;
        else the tenant's limits carrying the caller's team, user, key and model levels."""
        return await self.access.admit(identity, name, kind)

    async def visible_models(self, identity: Identity) -> list[ModelConfig]:
        """The models of the routing table the caller may call."""
        return await self.access.visible(identity)

    async def rerank(
        self,
        identity: Identity,
        query: str,
        documents: list[str],
        model_name: str | None,
        *,
        top_n: int | None = None,
    ) -> tuple[RerankResult, CallRecord]:
        """`documents` ordered by relevance to `query` (the `rerank-default` model when None)."""
        limits = await self.check_model(identity, model_name, "rerank")
        return await rerank(
            self.pipeline.dispatch, identity, query, documents, model_name, top_n, limits
        )

    async def start(self) -> None:
        # Load the tokenizer now: building it holds the GIL for ~100 ms, which at the first
        # request stalled every other one.
        await asyncio.to_thread(tokens.encoding)
        # First what can fail (the bus subscription): a failed start leaves no task behind.
        await self.provider_keys.start()
        if self.routing_path is not None:
            self._mtime = self._stat()
            self._watcher = asyncio.create_task(self._watch(), name="gateway-routing-reload")
        self.alerts.start()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.alerts.stop()
        await self.provider_keys.stop()
        await self.providers.aclose()

    # -- routing table ---------------------------------------------------------------------

    def reload(self) -> RoutingTable:
        """Re-read FAAS_GATEWAY_MODELS; an invalid file leaves the current table in place."""
        if self.routing_path is None:
            return self.model_router.table
        table = load_routing(self.routing_path)
        warn_unavailable(table)
        self.model_router.table = table
        log.info("model routing reloaded", extra={"source": str(self.routing_path)})
        return table

    def _stat(self) -> float | None:
        try:
            return self.routing_path.stat().st_mtime if self.routing_path else None
        except OSError:
            return None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway_reload_poll_s)
            mtime = self._stat()
            if mtime is None or mtime == self._mtime:
                continue
            self._mtime = mtime
            try:
                self.reload()
            except Exception:
                log.warning(
                    "model routing file is invalid; keeping the previous one", exc_info=True
                )

    # -- views -----------------------------------------------------------------------------

    async def models(self, identity: Identity | None = None) -> ModelsView:
        """The routing table: every model, or those `identity` may call."""
        table = self.model_router.table
        shown = table.models if identity is None else await self.visible_models(identity)
        return ModelsView(
            source=table.source,
            models=[
                ModelView(
                    name=m.name,
                    kind=m.kind,
                    description=m.description,
                    deployments=[_deployment_view(d) for d in m.deployments],
                )
                for m in shown
            ],
        )

    async def provider_health(self) -> list[ProviderHealth]:
        return await provider_health(self.model_router, self.providers)

    async def rate_limits(self, tenant_id: str) -> RateLimitsView:
        limits = await self.tenant_limits.get(tenant_id)
        remaining = await self.limits.remaining(tenant_id, limits)
        return RateLimitsView(
            tenant_id=tenant_id,
            limits=limits,
            remaining={
                "requests_this_minute": remaining.requests,
                "tokens_this_minute": remaining.tokens,
                "daily_budget_usd": remaining.daily_budget_usd,
                "monthly_budget_usd": remaining.monthly_budget_usd,
            },
            used=remaining.used,
        )


def _deployment_view(d: Deployment) -> DeploymentView:
    return DeploymentView(
        id=d.id,
        provider=d.provider,
        model=d.model,
        timeout_s=d.timeout_s,
        rpm=d.rpm,
        tpm=d.tpm,
        weight=d.weight,
        context_window=d.context_window,
        max_output_tokens=d.max_output_tokens,
        price=d.price.model_dump(),
    )
