"""The gateway's native API: `/api/v1/gateway/...` in faas' envelopes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Path
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from faas.services.gateway_service import request_tags
from faas.services.gateway_service.accounting import CallRecord
from faas.services.gateway_service.completion import Completion
from faas.services.gateway_service.headers import SSE_HEADERS, gateway_headers
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.models import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    GenerateRequest,
    GenerateResponse,
    ModelsView,
    ProviderHealth,
    RateLimitsView,
    UsageView,
)
from faas.services.gateway_service.offload import vector_size
from faas.services.gateway_service.price_catalogue import PriceCatalogue, catalogue
from faas.services.gateway_service.provider_keys_routes import build_provider_keys_router
from faas.services.gateway_service.providers.base import EmbeddingResult
from faas.shared.api import caller, require_scope, respond
from faas.shared.auth import TENANT_RE, check_tenant_access
from faas.shared.context import ADMIN, PLATFORM_ADMIN
from faas.shared.contracts import ServiceResponse
from faas.shared.cpu import run_cpu

if TYPE_CHECKING:
    from faas.services.gateway_service.service import GatewayService


def generate_view(completion: Completion) -> GenerateResponse:
    body, call = completion.body, completion.call
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    usage = call.usage
    content = message.get("content")
    return GenerateResponse(
        text=content if isinstance(content, str) else None,
        message=message,
        model=call.model,
        deployment=call.deployment.id if call.deployment else "",
        usage=UsageView(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
            cached_tokens=usage.cached_tokens if usage else 0,
            cost_usd=call.cost_usd,
            usage_source=usage.source if usage else "estimated",
        ),
        finish_reason=choice.get("finish_reason"),
        cached=call.cached,
    )


def embeddings_view(result: EmbeddingResult, call: CallRecord) -> EmbeddingsResponse:
    usage = call.usage
    return EmbeddingsResponse(
        model=call.model,
        deployment=call.deployment.id if call.deployment else "",
        dimensions=len(result.vectors[0]) if result.vectors else 0,
        vectors=result.vectors,
        usage=UsageView(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=0,
            total_tokens=usage.total_tokens if usage else 0,
            cost_usd=call.cost_usd,
            usage_source=usage.source if usage else "estimated",
        ),
    )


def build_router(service: GatewayService) -> APIRouter:
    """Chat and embeddings calls, then the admin routes."""
    router = APIRouter(prefix="/api/v1/gateway", tags=["gateway"])

    @router.post("/generate", response_model=ServiceResponse[GenerateResponse])
    async def generate(
        body: GenerateRequest,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> Response:
        request_tags.begin_request(request.scope)
        completion = await service.complete(
            caller(), body.openai_body(), cache=body.cache, idempotency_key=idempotency_key
        )
        headers = gateway_headers(request, completion.call, replayed=completion.replayed)
        return respond(generate_view(completion), headers=headers)

    @router.post("/generate/stream", response_class=StreamingResponse)
    async def generate_stream(body: GenerateRequest, request: Request) -> Response:
        """Server-sent events in OpenAI's `chat.completion.chunk` format, ending `[DONE]`."""
        request_tags.begin_request(request.scope)
        chunks, call = await service.open_stream(caller(), body.openai_body(), include_usage=True)
        headers = gateway_headers(request, call) | SSE_HEADERS
        return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)

    @router.post("/embeddings", response_model=ServiceResponse[EmbeddingsResponse])
    async def embeddings(body: EmbeddingsRequest, request: Request) -> Response:
        request_tags.begin_request(request.scope)
        result, call = await service.embed(caller(), body.texts, body.model, field="texts")
        headers = gateway_headers(request, call)

        def encode() -> Response:
            return respond(embeddings_view(result, call), headers=headers)

        # 2048 vectors of 384 floats take ~0.2 s to validate and encode: not on the loop.
        return await run_cpu(vector_size(result.vectors), encode)

    router.routes.extend(build_admin_router(service).routes)
    router.routes.extend(build_provider_keys_router(service.provider_keys).routes)
    return router


def build_admin_router(service: GatewayService) -> APIRouter:
    """The routing table, provider health and tenant limits: reads, and admin writes."""
    router = APIRouter(prefix="/api/v1/gateway", tags=["gateway"])

    @router.get("/models", response_model=ServiceResponse[ModelsView])
    async def models() -> Response:
        return respond(await service.models(caller()))

    @router.get("/providers", response_model=ServiceResponse[list[ProviderHealth]])
    async def providers() -> Response:
        caller()
        health = await service.provider_health()
        return respond([h.model_dump() for h in health])

    @router.get("/prices", response_model=ServiceResponse[PriceCatalogue])
    async def prices() -> Response:
        """The bundled price catalogue: its version, notes and list prices per 1,000 tokens
        (used for deployments whose routing entry sets no `price`)."""
        caller()
        return respond(catalogue())

    @router.get("/rate-limits", response_model=ServiceResponse[RateLimitsView])
    async def rate_limits() -> Response:
        return respond(await service.rate_limits(caller().tenant_id))

    @router.put("/limits/{tenant_id}", response_model=ServiceResponse[TenantLimits])
    async def set_limits(
        tenant_id: Annotated[str, Path(pattern=TENANT_RE.pattern)], body: TenantLimits
    ) -> Response:
        """Set a tenant's limits and budgets: its own tenant's with the admin scope, any
        tenant's with platform:admin."""
        admin = require_scope(ADMIN)
        check_tenant_access(admin, tenant_id)
        saved = await service.tenant_limits.set(tenant_id, body, by=admin.user_id)
        return respond(saved)

    @router.post("/reload", response_model=ServiceResponse[dict[str, Any]])
    async def reload() -> Response:
        """Re-read the model routing file now (platform:admin scope: the table serves every
        tenant)."""
        require_scope(PLATFORM_ADMIN)
        table = service.reload()
        return respond({"source": table.source, "models": [m.name for m in table.models]})

    return router
