"""How the app answers errors: every FaaSError, validation error, HTTP error, database outage
and unexpected exception becomes an error body in the shape the path calls for (ErrorResponse,
or the shape a service declares for its prefix, like OpenAI's under /v1/)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from faas.shared.exceptions import (
    DependencyUnavailable,
    FaaSError,
    UnsupportedMediaType,
    ValidationFailed,
    error_for_status,
)
from faas.shared.middleware import ErrorRenderer, is_json_media, json_error_renderer

log = logging.getLogger("faas.app")


def error_response(
    exc: FaaSError, path: str = "", renderer: ErrorRenderer = json_error_renderer
) -> Response:
    body, media_type = renderer({"path": path}, exc)
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type=media_type)


def by_prefix(renderers: dict[str, ErrorRenderer], fallback: ErrorRenderer) -> ErrorRenderer:
    """The renderer of the longest prefix the path starts with (services that follow another
    API's error shape declare theirs: "/v1/messages" is Anthropic's inside OpenAI's "/v1/"),
    else `fallback`."""
    if not renderers:
        return fallback
    longest_first = sorted(renderers.items(), key=lambda item: -len(item[0]))

    def render(scope: Scope, exc: FaaSError) -> tuple[bytes, str]:
        path = scope.get("path", "")
        for prefix, renderer in longest_first:
            if path.startswith(prefix):
                return renderer(scope, exc)
        return fallback(scope, exc)

    return render


def _validation_details(exc: RequestValidationError) -> dict[str, Any]:
    # Report where and why, not the offending input (it may be large or sensitive).
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return {"errors": errors}


# What pydantic reports when a model is handed the raw body (bytes or text) instead of an object.
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "dict_type", "list_type", "model_type"})


def _body_not_json(request: Request, exc: RequestValidationError) -> bool:
    """The body was sent under another media type (curl's `-d` sends a form type): FastAPI
    then validates the raw text and says "Input should be a valid dictionary", which hides the
    actual mistake."""
    # No Content-Type counts too: FastAPI (strict_content_type) then reads the body as bytes.
    content_type = request.headers.get("content-type")
    if content_type is not None and is_json_media(content_type):
        return False
    return any(
        tuple(e.get("loc", ())) == ("body",) and e.get("type") in _NOT_AN_OBJECT
        for e in exc.errors()
    )


def install_error_handlers(app: FastAPI, render: ErrorRenderer = json_error_renderer) -> None:
    async def on_faas_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FaaSError)
        if exc.status_code >= 500:
            log.error("request failed: %s", exc.message, extra={"code": exc.code})
        return error_response(exc, request.url.path, render)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if _body_not_json(request, exc):
            error = UnsupportedMediaType(
                "the body must be JSON: send Content-Type: application/json",
                details={"field": "body", "content_type": request.headers.get("content-type")},
            )
            return error_response(error, request.url.path, render)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = (
            f"invalid request: {where}: {first.get('msg', '')}" if first else "invalid request"
        )
        details = _validation_details(exc)
        return error_response(ValidationFailed(message, details=details), request.url.path, render)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        cls = error_for_status(exc.status_code)
        error = cls(str(exc.detail), headers=dict(exc.headers or {}))
        error.status_code = exc.status_code
        if exc.status_code == 405:
            error.code = "method_not_allowed"
        return error_response(error, request.url.path, render)

    async def on_database(request: Request, exc: Exception) -> Response:
        # The database refused or lost the operation (SQLite's write lock under heavy write
        # concurrency, a PostgreSQL restart): retryable, so a 503 rather than a 500.
        log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        error = DependencyUnavailable(
            "the database is busy or unreachable; retry shortly", headers={"Retry-After": "1"}
        )
        return error_response(error, request.url.path, render)

    async def on_driver(request: Request, exc: Exception) -> Response:
        # A connection lost under the request (the server closed it before the loop read the
        # close): retryable, and the pool replaces the rest. Any other driver error is a bug.
        assert isinstance(exc, DBAPIError)
        if exc.connection_invalidated:
            return await on_database(request, exc)
        return await on_unexpected(request, exc)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error", exc_info=exc)
        return error_response(FaaSError("Internal server error"), request.url.path)

    app.add_exception_handler(FaaSError, on_faas_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(OperationalError, on_database)
    app.add_exception_handler(DBAPIError, on_driver)
    app.add_exception_handler(Exception, on_unexpected)
