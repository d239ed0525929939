"""`GET /api/v1/llmops/alerts`: the gateway's budget and anomaly alerts of a tenant."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from faas.services.llmops_service.models import AlertView
from faas.services.llmops_service.routes import API, TenantParam, target_tenant
from faas.shared.api import caller, respond
from faas.shared.contracts import ServiceResponse

if TYPE_CHECKING:
    from faas.services.llmops_service.service import LlmopsService


def alerts_router(service: LlmopsService) -> APIRouter:
    router = APIRouter(tags=["llmops"])

    @router.get(f"{API}/alerts", response_model=ServiceResponse[list[AlertView]])
    async def list_alerts(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        since: datetime | None = None,
        tenant_id: TenantParam = None,
    ) -> Response:
        """The newest alerts first (budget thresholds crossed, spend anomalies), at most
        `limit`, optionally only those since a moment."""
        tenant = target_tenant(caller(), tenant_id)
        alerts = await service.list_alerts(tenant, limit=limit, since=since)
        return respond([a.model_dump(mode="json") for a in alerts])

    return router
