"""HTTP routes of the LLMOps service, and the public dashboard page."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import HTMLResponse, Response

from faas.services.llmops_service.attribution import AttributionKey, UsageAttribution
from faas.services.llmops_service.dashboard import DASHBOARD_HTML
from faas.services.llmops_service.models import (
    NAME,
    CostAnalysis,
    GroupBy,
    IngestResult,
    MetricsView,
    OperationIn,
    OperationView,
)
from faas.services.llmops_service.queries import OperationFilter, TenantBreakdown, time_range
from faas.shared.api import PageDep, caller, respond
from faas.shared.context import ADMIN, PLATFORM_ADMIN, Identity
from faas.shared.contracts import Page, ServiceResponse
from faas.shared.exceptions import ValidationFailed

if TYPE_CHECKING:
    from faas.services.llmops_service.service import LlmopsService

API = "/api/v1/llmops"
DASHBOARD_PATH = "/llmops/dashboard"
DASHBOARD_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": "default-src 'self'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src 'self' data:",
}
MAX_BATCH = 1000
Name = Annotated[str | None, Query(pattern=NAME)]
TenantParam = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
From = Annotated[datetime | None, Query(alias="from")]
To = Annotated[datetime | None, Query(alias="to")]


def _range(start: From = None, end: To = None) -> tuple[datetime, datetime]:
    return time_range(start, end)


# [from, to) in UTC: the last 24 hours by default, at most 366 days.
RangeDep = Annotated[tuple[datetime, datetime], Depends(_range)]


def target_tenant(identity: Identity, tenant_id: str | None) -> str:
    """The caller's tenant. `tenant_id` names another tenant only for platform admins; for
    anyone else, a tenant's admin included, it is ignored (the answer is about their own
    tenant, as the response's `tenant_id` says)."""
    if tenant_id is not None and identity.may_act_for(tenant_id):
        return tenant_id
    return identity.tenant_id


def tenant_breakdown(identity: Identity) -> TenantBreakdown:
    """Which tenants `by_tenant` lists: every one for a platform admin, the caller's own for a
    tenant's admin, none for anyone else."""
    if identity.has_scope(PLATFORM_ADMIN):
        return "all"
    return "own" if identity.has_scope(ADMIN) else None


def operations_router(service: LlmopsService) -> APIRouter:
    router = APIRouter(tags=["llmops"])

    @router.post(f"{API}/operations", status_code=201, response_model=ServiceResponse[IngestResult])
    async def log_operations(body: OperationIn | list[OperationIn]) -> Response:
        """Log one operation or a list (at most 1,000). An `id` makes a retry idempotent."""
        identity = caller()
        ops = body if isinstance(body, list) else [body]
        if not ops or len(ops) > MAX_BATCH:
            raise ValidationFailed(f"send between 1 and {MAX_BATCH} operations")
        result = await service.log_operations(identity.tenant_id, identity.user_id, ops)
        return respond(result, status_code=201)

    @router.get(f"{API}/operations", response_model=ServiceResponse[Page[OperationView]])
    async def list_operations(
        page: PageDep,
        start: From = None,
        end: To = None,
        model: Name = None,
        operation: Name = None,
        status: Name = None,
        user_id: Name = None,
        agent_id: Name = None,
        tenant_id: TenantParam = None,
    ) -> Response:
        where = OperationFilter(start, end, model, operation, status, user_id, agent_id)
        tenant = target_tenant(caller(), tenant_id)
        result = await service.list_operations(tenant, where, limit=page.limit, offset=page.offset)
        return respond(result)

    return router


def analytics_router(service: LlmopsService) -> APIRouter:
    router = APIRouter(tags=["llmops"])

    @router.get(f"{API}/metrics", response_model=ServiceResponse[MetricsView])
    async def metrics(
        span: RangeDep,
        group_by: GroupBy = "hour",
        model: Name = None,
        operation: Name = None,
        tenant_id: TenantParam = None,
    ) -> Response:
        """Count, tokens, cost, error rate and latency p50/p95/p99 over every hour that
        overlaps [from, to) (default: the last 24 hours), in total and per group."""
        tenant = target_tenant(caller(), tenant_id)
        lo, hi = span
        view = await service.metrics(tenant, lo, hi, group_by, model=model, operation=operation)
        return respond(view)

    @router.get(f"{API}/cost-analysis", response_model=ServiceResponse[CostAnalysis])
    async def cost_analysis(span: RangeDep, tenant_id: TenantParam = None) -> Response:
        """Cost by model, operation, agent (agent id, else user id) and day; `by_tenant` lists
        every tenant for platform admins, the caller's own tenant for its admins."""
        identity = caller()
        tenant = target_tenant(identity, tenant_id)
        lo, hi = span
        view = await service.cost_analysis(tenant, lo, hi, by_tenant=tenant_breakdown(identity))
        return respond(view.model_dump(mode="json", by_alias=True))

    @router.get(f"{API}/usage", response_model=ServiceResponse[UsageAttribution])
    async def usage(
        span: RangeDep, group_by: AttributionKey, tenant_id: TenantParam = None
    ) -> Response:
        """Calls, tokens and cost over [from, to) by API key, user, team or request tag (a
        call with several tags counts under each)."""
        tenant = target_tenant(caller(), tenant_id)
        lo, hi = span
        view = await service.usage_by(tenant, group_by, lo, hi)
        return respond(view.model_dump(mode="json", by_alias=True))

    return router


def dashboard_router() -> APIRouter:
    router = APIRouter(tags=["llmops"])

    @router.get(DASHBOARD_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> Response:
        return HTMLResponse(DASHBOARD_HTML, headers=DASHBOARD_HEADERS)

    return router


def build_router(service: LlmopsService) -> APIRouter:
    router = APIRouter()
    router.include_router(operations_router(service))
    router.include_router(analytics_router(service))
    router.include_router(dashboard_router())
    return router
