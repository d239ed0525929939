"""What both gateway APIs add to responses: timing headers and the cache verdict."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from faas.services.gateway_service.accounting import CallRecord

CACHE_HEADER = {False: "MISS", "exact": "HIT", "semantic": "SEMANTIC_HIT"}


def gateway_headers(
    request: Request, call: CallRecord, *, replayed: bool = False
) -> dict[str, str]:
    """`x-gateway-overhead-ms` (time in faas minus time upstream) and `Server-Timing`."""
    state: dict[str, Any] = request.scope.get("state", {})
    started = state.get("faas_started", call.started)
    total_ms = (time.perf_counter() - started) * 1000
    upstream_ms = call.upstream_s * 1000
    auth_ms = float(state.get("faas_auth_ms", 0.0))
    limits_ms = call.timings.get("limits", 0.0) * 1000
    cache_ms = call.timings.get("cache", 0.0) * 1000
    overhead_ms = max(0.0, total_ms - upstream_ms)
    route_ms = max(0.0, overhead_ms - auth_ms - limits_ms - cache_ms)
    headers = {
        "x-gateway-overhead-ms": f"{overhead_ms:.3f}",
        "server-timing": (
            f"auth;dur={auth_ms:.3f}, limits;dur={limits_ms:.3f}, cache;dur={cache_ms:.3f}, "
            f"route;dur={route_ms:.3f}, upstream;dur={upstream_ms:.3f}"
        ),
        "x-cache": CACHE_HEADER[call.cached],
    }
    if call.deployment is not None:
        headers["x-faas-deployment"] = call.deployment.id
    if replayed:
        headers["idempotent-replayed"] = "true"
    return headers


SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
