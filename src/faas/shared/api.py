"""What route handlers share: the caller's identity as a dependency, the success envelope,
pagination parameters, and the service protocol every service implements."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Protocol

import orjson
from fastapi import Depends, Query
from pydantic import BaseModel
from starlette.responses import Response

from faas.shared.clock import utcnow
from faas.shared.context import Identity, current_context
from faas.shared.exceptions import FaaSError, Forbidden, Unauthenticated
from faas.shared.input_rules import MAX_DB_INT

log = logging.getLogger("faas.api")


class Service(Protocol):
    """A faas service: a name and start/stop hooks for its own resources (its routes are built
    by its spec, `faas.kernel.ServiceSpec.routes`)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def stream_error(exc: BaseException) -> dict[str, str]:
    """The `error` of the SSE event that ends a stream failing after its 200 was sent."""
    if isinstance(exc, FaaSError):
        return {"code": exc.code, "message": exc.message}
    log.error("stream failed", exc_info=exc)
    return {"code": "internal_error", "message": "Internal server error"}


def caller() -> Identity:
    """The authenticated caller of the current request, as AuthMiddleware resolved it.

    A plain call rather than a FastAPI dependency: dependency resolution costs ~16 us a
    request, a contextvar read well under one.
    """
    ctx = current_context()
    if ctx is None or ctx.identity is None:
        raise Unauthenticated("this endpoint needs an authenticated caller")
    return ctx.identity


def require_scope(scope: str) -> Identity:
    """The caller, who must hold `scope` (or `admin`)."""
    identity = caller()
    if not identity.has_scope(scope):
        raise Forbidden(f"this endpoint needs the '{scope}' scope")
    return identity


MAX_PAGE_SIZE = 200


class PageParams(BaseModel):
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


def envelope(
    data: Any, *, message: str | None = None, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    ctx = current_context()
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return {
        "success": True,
        "data": data,
        "message": message,
        "correlation_id": ctx.correlation_id if ctx else None,
        "request_id": ctx.request_id if ctx else None,
        "timestamp": utcnow().isoformat(),
        "metadata": metadata or {},
    }


def respond(
    data: Any,
    *,
    status_code: int = 200,
    message: str | None = None,
    headers: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Response:
    """A `ServiceResponse` envelope, encoded once (routes declare the model for OpenAPI)."""
    body = orjson.dumps(envelope(data, message=message, metadata=metadata))
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")
