"""The gateway's three request paths behind one object: a chat completion (with idempotent
replay), a streamed chat completion and an embeddings call. Each path lives in its own module;
this one wires them to the shared admission, routing and accounting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from faas.backends.kv import KeyValueStore
from faas.backends.limits import LimitStore
from faas.services.gateway_service.accounting import CallRecord, UsageRecorder
from faas.services.gateway_service.admission import Admission, check_context
from faas.services.gateway_service.completion import ChatCompletion, Completion
from faas.services.gateway_service.dispatch import Dispatcher
from faas.services.gateway_service.embeddings import embed
from faas.services.gateway_service.idempotency import IdempotencyLedger
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.models import CacheOptions, Operation
from faas.services.gateway_service.providers.base import EmbeddingResult
from faas.services.gateway_service.providers.pool import Providers
from faas.services.gateway_service.response_cache import ResponseCache, request_fingerprint
from faas.services.gateway_service.routing import ModelRouter
from faas.services.gateway_service.streaming import open_stream
from faas.shared.context import Identity


class ChatPipeline:
    def __init__(
        self,
        *,
        router: ModelRouter,
        providers: Providers,
        limits: LimitStore,
        cache: ResponseCache,
        kv: KeyValueStore,
        recorder: UsageRecorder,
        completion_estimate_tokens: int,
    ) -> None:
        self.dispatch = Dispatcher(
            router=router,
            providers=providers,
            admission=Admission(limits, completion_estimate_tokens),
            recorder=recorder,
        )
        self.completion = ChatCompletion(self.dispatch, cache)
        self.idempotency = IdempotencyLedger(kv)

    async def complete(
        self,
        identity: Identity,
        body: dict[str, Any],
        limits: TenantLimits,
        *,
        cache: CacheOptions | None = None,
        idempotency_key: str | None = None,
        operation: Operation = "chat",
    ) -> Completion:
        """A chat completion; under an Idempotency-Key a retry replays the stored answer."""
        call = CallRecord(operation, model=str(body.get("model") or ""), request=body)
        model = self.dispatch.router.resolve(body.get("model"), "chat")
        call.model = model.name
        tenant = identity.tenant_id
        prompt_tokens = await check_context(model, body)
        if idempotency_key is None:  # the fingerprint is then made only if the cache needs it
            return await self.completion.run(
                identity, body, limits, model, call, cache, None, prompt_tokens
            )
        fingerprint = request_fingerprint(tenant, model.name, body)
        kv_key, replay = await self.idempotency.begin(tenant, idempotency_key, fingerprint)
        if replay is not None:
            return Completion(replay, call, replayed=True)
        try:
            completion = await self.completion.run(
                identity, body, limits, model, call, cache, fingerprint, prompt_tokens
            )
        except BaseException:
            await self.idempotency.abandon(kv_key)
            raise
        await self.idempotency.finish(kv_key, fingerprint, completion.body)
        return completion

    async def open_stream(
        self,
        identity: Identity,
        body: dict[str, Any],
        limits: TenantLimits,
        *,
        include_usage: bool,
        operation: Operation = "chat",
    ) -> tuple[AsyncIterator[bytes], CallRecord]:
        return await open_stream(self.dispatch, identity, body, limits, include_usage, operation)

    async def embed(
        self,
        identity: Identity,
        texts: list[str],
        model_name: str | None,
        limits: TenantLimits,
        *,
        field: str = "input",
        token_ids: list[list[int]] | None = None,
    ) -> tuple[EmbeddingResult, CallRecord]:
        """Embeddings of `texts`; `field` names them in a refusal of oversized input."""
        return await embed(self.dispatch, identity, texts, model_name, limits, field, token_ids)
