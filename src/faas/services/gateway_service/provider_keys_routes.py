"""`/api/v1/gateway/provider-keys`: a tenant's own provider keys (admin scope). A key goes in
and never comes out: answers show its target, its last four characters and timestamps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from faas.services.gateway_service.provider_keys import (
    ProviderKeyBody,
    ProviderKeys,
    ProviderKeyTarget,
    ProviderKeyView,
)
from faas.services.gateway_service.routing_table import ProviderName
from faas.shared.api import require_scope, respond
from faas.shared.context import ADMIN, PLATFORM_ADMIN
from faas.shared.contracts import ServiceResponse
from faas.shared.exceptions import ValidationFailed


def build_provider_keys_router(keys: ProviderKeys) -> APIRouter:
    router = APIRouter(prefix="/api/v1/gateway/provider-keys", tags=["gateway"])

    @router.put("", response_model=ServiceResponse[ProviderKeyView])
    async def put_key(body: ProviderKeyBody) -> Response:
        """Store (or replace) the tenant's key for a provider or a model; the tenant's calls
        to it then use this key instead of the deployment's."""
        admin = require_scope(ADMIN)
        return respond(await keys.put(admin.tenant_id, body, by=admin.user_id))

    @router.get("", response_model=ServiceResponse[list[ProviderKeyView]])
    async def list_keys() -> Response:
        admin = require_scope(ADMIN)
        return respond([view.model_dump(mode="json") for view in await keys.list(admin.tenant_id)])

    @router.delete("", response_model=ServiceResponse[dict[str, bool]])
    async def delete_key(
        provider: Annotated[ProviderName | None, Query()] = None,
        model: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Response:
        """Remove the tenant's key for `provider` or `model` (one of them)."""
        admin = require_scope(ADMIN)
        try:
            target = ProviderKeyTarget(provider=provider, model=model)
        except ValueError:
            raise ValidationFailed(
                "give exactly one of the query parameters provider or model",
                details={"param": "provider"},
            ) from None
        await keys.delete(admin.tenant_id, target)
        return respond({"deleted": True})

    @router.post("/rotate", response_model=ServiceResponse[dict[str, int]])
    async def rotate() -> Response:
        """Re-seal every tenant's stored keys under the first key of FAAS_SECRETS_KEY
        (platform:admin): after it, the older keys can leave the ring."""
        require_scope(PLATFORM_ADMIN)
        return respond({"resealed": await keys.rotate()})

    return router
