"""Traces: the OTLP/HTTP receiver (`POST /llmops/otlp/v1/traces`, protobuf or JSON)
and the runs it recorded (`GET /api/v1/llmops/traces`, `GET .../traces/{trace_id}`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from starlette.responses import HTMLResponse, Response

from faas.services.llmops_service.routes import (
    API,
    DASHBOARD_HEADERS,
    TenantParam,
    target_tenant,
)
from faas.services.llmops_service.traces import TraceSummary, TraceTree
from faas.services.llmops_service.traces_otlp import parse_request, span_rows
from faas.services.llmops_service.traces_page import TRACES_HTML, TRACES_PATH
from faas.shared.api import caller, respond
from faas.shared.context import PLATFORM_ADMIN
from faas.shared.contracts import ServiceResponse
from faas.shared.cpu import run_cpu

if TYPE_CHECKING:
    from faas.services.llmops_service.service import LlmopsService

# Outside /api/: the codec middleware there would transcode a protobuf body as a faas message.
OTLP_PATH = "/llmops/otlp/v1/traces"
TraceId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
SessionParam = Annotated[str | None, Query(min_length=1, max_length=128)]


def traces_router(service: LlmopsService) -> APIRouter:
    router = APIRouter(tags=["llmops"])

    @router.post(OTLP_PATH, openapi_extra=_OTLP_BODY)
    async def export_traces(request: Request) -> Response:
        """OTLP/HTTP trace export: an `ExportTraceServiceRequest` as protobuf
        (`application/x-protobuf`) or JSON. Spans are stored in the sender's tenant; a platform
        identity may name the tenant with a `faas.tenant_id` span or resource attribute."""
        identity = caller()
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        parsed = await run_cpu(len(body), parse_request, body, content_type)
        platform = identity.has_scope(PLATFORM_ADMIN)
        rows = await run_cpu(len(body), span_rows, parsed, identity.tenant_id, platform)
        await service.traces.add(rows)
        answer = trace_service_pb2.ExportTraceServiceResponse()
        if content_type.startswith("application/json"):
            return Response(
                orjson.dumps(json_format.MessageToDict(answer)), media_type="application/json"
            )
        return Response(answer.SerializeToString(), media_type="application/x-protobuf")

    @router.get(f"{API}/traces", response_model=ServiceResponse[list[TraceSummary]])
    async def list_traces(
        session_id: SessionParam = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        tenant_id: TenantParam = None,
    ) -> Response:
        """Runs, newest first: one row per trace with its root span, span count, errors and
        its model calls' tokens and cost; `session_id` keeps one agent session's runs."""
        tenant = target_tenant(caller(), tenant_id)
        runs = await service.traces.list(tenant, session_id=session_id, limit=limit)
        return respond([run.model_dump(mode="json") for run in runs])

    @router.get(f"{API}/traces/{{trace_id}}", response_model=ServiceResponse[TraceTree])
    async def get_trace(trace_id: TraceId, tenant_id: TenantParam = None) -> Response:
        """One run as a tree: each span with its children, tokens, cost and latency."""
        tenant = target_tenant(caller(), tenant_id)
        return respond(await service.traces.tree(tenant, trace_id))

    @router.get(TRACES_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def traces_page() -> Response:
        return HTMLResponse(TRACES_HTML, headers=DASHBOARD_HEADERS)

    return router


_OTLP_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            # An empty ExportTraceServiceRequest: valid, and stores nothing.
            "application/x-protobuf": {
                "schema": {"type": "string", "format": "binary"},
                "example": "",
            },
            "application/json": {"schema": {"type": "object"}, "example": {"resourceSpans": []}},
        },
    }
}
