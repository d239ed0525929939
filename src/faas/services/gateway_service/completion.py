"""A non-streamed chat completion: answered from the response cache (exact, then semantic)
when it may be, else admitted, routed with fallback, reconciled, cached and recorded."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from faas.services.gateway_service.accounting import CallRecord, completion_text, count_usage
from faas.services.gateway_service.dispatch import Dispatcher, chat_request
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.models import CacheHit, CacheOptions
from faas.services.gateway_service.providers.base import Usage
from faas.services.gateway_service.response_cache import (
    ResponseCache,
    cache_key,
    is_deterministic,
    request_fingerprint,
)
from faas.services.gateway_service.routing_table import ModelConfig
from faas.services.gateway_service.semantic_cache import Vector, semantic_text
from faas.shared.context import Identity

_NO_OPTIONS = CacheOptions()  # read only


@dataclass
class Completion:
    body: dict[str, Any]
    call: CallRecord
    replayed: bool = False


@dataclass
class _CachePlan:
    """Where this request's answer is looked up and stored: `key` is None when neither cache
    is used (a sampled request without semantic caching: most of them), so the request is not
    fingerprinted for nothing (a sorted dump and a SHA-256 of the body, ~2 % of the gateway's
    CPU per request)."""

    key: str | None
    exact: bool
    semantic: bool
    vector: Vector | None = None

    @property
    def stores(self) -> bool:
        return self.exact or self.vector is not None


class ChatCompletion:
    """Non-streamed chat calls, in front of which sits the response cache."""

    def __init__(self, dispatch: Dispatcher, cache: ResponseCache) -> None:
        self.dispatch = dispatch
        self.cache = cache

    async def run(
        self,
        identity: Identity,
        body: dict[str, Any],
        limits: TenantLimits,
        model: ModelConfig,
        call: CallRecord,
        options: CacheOptions | None,
        fingerprint: str | None,
        prompt_tokens: int,
    ) -> Completion:
        """The answer to a resolved, context-checked request (`fingerprint` identifies it;
        None: made here if a cache needs it)."""
        d = self.dispatch
        tenant = identity.tenant_id
        opts = options or _NO_OPTIONS
        mark = time.perf_counter()
        exact = opts.exact if opts.exact is not None else True
        use_exact = exact and (opts.force or is_deterministic(body))
        use_semantic = opts.semantic if opts.semantic is not None else limits.semantic_cache
        key = None
        if use_exact or use_semantic:
            key = cache_key(tenant, fingerprint or request_fingerprint(tenant, model.name, body))
        plan = _CachePlan(key, use_exact, use_semantic)
        found = await self._lookup(plan, tenant, model, body, opts)
        if found is not None:
            return await self._cache_hit(identity, limits, call, *found, mark)
        call.mark("cache", mark)

        reservation, estimate = await d.admission.reserve_chat(
            tenant, limits, model, body, prompt_tokens, call
        )
        request = chat_request(body)
        result, attempt = await d.route(
            identity,
            model,
            estimate,
            call,
            reservation,
            lambda dep: d.providers.chat(dep.provider).chat(request, dep),
        )
        call.usage = result.usage or await count_usage(
            body, completion_text(result.body), prompt_tokens
        )
        attempt.succeeded(call.usage.total_tokens)
        await d.admission.reconcile(reservation, call)
        if plan.stores and plan.key is not None:
            await self.cache.put(plan.key, result.body)
            if plan.vector is not None:
                await self.cache.semantic.add(tenant, model.name, plan.vector, plan.key)
        call.response = result.body
        await d.recorder.record(identity, call)
        return Completion(result.body, call)

    async def _lookup(
        self,
        plan: _CachePlan,
        tenant: str,
        model: ModelConfig,
        body: dict[str, Any],
        opts: CacheOptions,
    ) -> tuple[dict[str, Any], CacheHit] | None:
        """A cached answer and how it was found; fills in the plan's vector on the way."""
        if plan.key is None:
            return None
        if plan.exact:
            hit = await self.cache.get(plan.key)
            if hit is not None:
                return hit, "exact"
        text = semantic_text(body, force=opts.force) if plan.semantic else None
        if text is None:
            return None
        plan.vector = await self._cache_vector(text)
        nearest = await self.cache.semantic.nearest(tenant, model.name, plan.vector, opts.threshold)
        if nearest is None:
            return None
        hit = await self.cache.get(nearest[0])
        if hit is not None:
            return hit, "semantic"
        await self.cache.semantic.forget(tenant, model.name, nearest[0])
        return None

    async def _cache_hit(
        self,
        identity: Identity,
        limits: TenantLimits,
        call: CallRecord,
        body: dict[str, Any],
        kind: CacheHit,
        mark: float,
    ) -> Completion:
        await self.dispatch.admission.count_request(identity.tenant_id, limits)
        call.mark("cache", mark)
        call.cached = kind
        call.usage = Usage.from_openai(body.get("usage")) or Usage(source="estimated")
        call.response = body
        await self.dispatch.recorder.record(identity, call)
        return Completion(body, call)

    async def _cache_vector(self, text: str) -> Vector:
        """The request's text embedded with the default embedding model, unit length."""
        model = self.dispatch.router.table.default_for("embedding")
        deployment = model.deployments[0]
        provider = self.dispatch.providers.embedding(deployment.provider)
        result = await provider.embed([text], deployment)
        vector = np.asarray(result.vectors[0], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector
