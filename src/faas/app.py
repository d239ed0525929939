"""`create_service_app`: one FastAPI app for one or more services on a shared runtime, with the
platform middleware, error rendering, health, metrics and OpenAPI.

It lives above `faas.shared` because it wires integrations and backends, which the shared
kernel must not import.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from faas import __version__
from faas.integrations.codec import default_registry
from faas.integrations.codec_http import CodecMiddleware, make_error_renderer
from faas.integrations.otel import TracingMiddleware
from faas.jobs.routes import build_jobs_router
from faas.runtime import Runtime
from faas.services.rag_service.models_in_use import models_in_use
from faas.shared.api import Service
from faas.shared.exceptions import (
    DependencyUnavailable,
    FaaSError,
    UnsupportedMediaType,
    ValidationFailed,
    error_for_status,
)
from faas.shared.logging import RequestLog
from faas.shared.middleware import (
    OPENAI_PREFIX,
    PUBLIC_PATHS,
    AuthMiddleware,
    BodyLimitMiddleware,
    InputRulesMiddleware,
    RequestContextMiddleware,
    is_json_media,
    json_error_renderer,
)

log = logging.getLogger("faas.app")


def error_response(exc: FaaSError, path: str = "") -> Response:
    body, media_type = json_error_renderer({"path": path}, exc)
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type=media_type)


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


def install_error_handlers(app: FastAPI) -> None:
    async def on_faas_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FaaSError)
        if exc.status_code >= 500:
            log.error("request failed: %s", exc.message, extra={"code": exc.code})
        return error_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if _body_not_json(request, exc):
            error = UnsupportedMediaType(
                "the body must be JSON: send Content-Type: application/json",
                details={"field": "body", "content_type": request.headers.get("content-type")},
            )
            return error_response(error, request.url.path)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = (
            f"invalid request: {where}: {first.get('msg', '')}" if first else "invalid request"
        )
        details = _validation_details(exc)
        return error_response(ValidationFailed(message, details=details), request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        cls = error_for_status(exc.status_code)
        error = cls(str(exc.detail), headers=dict(exc.headers or {}))
        error.status_code = exc.status_code
        if exc.status_code == 405:
            error.code = "method_not_allowed"
        return error_response(error, request.url.path)

    async def on_database(request: Request, exc: Exception) -> Response:
        # The database refused or lost the operation (SQLite's write lock under heavy write
        # concurrency, a PostgreSQL restart): retryable, so a 503 rather than a 500.
        log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        error = DependencyUnavailable(
            "the database is busy or unreachable; retry shortly", headers={"Retry-After": "1"}
        )
        return error_response(error, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error", exc_info=exc)
        return error_response(FaaSError("Internal server error"), request.url.path)

    app.add_exception_handler(FaaSError, on_faas_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(OperationalError, on_database)
    app.add_exception_handler(Exception, on_unexpected)


# NATS being away degrades events (they are buffered) but requests still work, so it is
# reported without taking the instance out of rotation.
OPTIONAL_CHECKS = frozenset({"nats"})
MAX_FILES_PER_UPLOAD = 10


def install_bearer_security(app: FastAPI) -> None:
    """Document the bearer token once for every /api route (auth is enforced by middleware,
    not per-route dependencies, so FastAPI cannot infer it)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            for path, operations in schema.get("paths", {}).items():
                if path.startswith(("/api/", "/v1/")):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DOCS_STATIC = "/docs/static"


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, their scripts served from the installed
    `fastapi-offline` package: FastAPI's default pages load them from a CDN and stay blank
    without internet."""
    app.mount(
        DOCS_STATIC,
        StaticFiles(directory=str(files("fastapi_offline") / "static")),
        name="docs-static",
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            # The token pasted in "Authorize" survives a reload of the page.
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


async def service_readiness(services: Sequence[Service]) -> dict[str, str | None]:
    """Checks of services that define `readiness()`: None when passing, else the reason."""
    reasons: dict[str, str | None] = {}
    for service in services:
        probe = getattr(service, "readiness", None)
        if probe is not None:
            reasons |= await probe()
    return reasons


def create_service_app(
    services: Sequence[Service],
    runtime: Runtime,
    *,
    title: str = "faas",
    freeze_after_start: bool = False,
) -> FastAPI:
    settings = runtime.settings
    telemetry = runtime.telemetry
    request_log = RequestLog()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        started: list[Service] = []
        try:
            for service in services:
                await service.start()
                started.append(service)
            if freeze_after_start:
                # What start-up built (modules, the app, tokenizer tables) lives as long as the
                # process: out of the collector's reach, a full collection no longer scans it.
                # Without this, a collection set off by one big request held the GIL ~120 ms.
                gc.freeze()
            yield
        finally:
            await runtime.stop_worker()
            for service in reversed(started):
                await service.stop()
            await runtime.close()
            request_log.flush()

    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        description="AI components as independent, scalable services.",
        # faas traces and measures requests itself (TracingMiddleware); FastAPI's own
        # instrumentation would add a second server span and duplicate metrics per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.telemetry = telemetry
    app.state.services = {s.name: s for s in services}
    install_error_handlers(app)
    for router in [*(s.router() for s in services), build_jobs_router(runtime.jobs)]:
        # Routes are added to the app's own router rather than through include_router, which in
        # FastAPI >= 0.16x keeps a nested router and matches every request twice (~23 us).
        app.router.routes.extend(router.routes)

    install_bearer_security(app)
    install_docs(app)

    @app.get("/livez", tags=["health"])
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        checks = await runtime.readiness()
        # A service's own checks (RAG's vector store) degrade it alone: they never take the
        # instance out of rotation, and each failing one says why.
        reasons = await service_readiness(services)
        checks |= {name: reason is None for name, reason in reasons.items()}
        optional = OPTIONAL_CHECKS | reasons.keys()
        ready = all(ok for name, ok in checks.items() if name not in optional)
        degraded = not all(checks.values())
        body = {
            "status": ("degraded" if degraded else "ready") if ready else "not_ready",
            "checks": {k: "ok" if v else "down" for k, v in checks.items()},
            "reasons": {k: v for k, v in reasons.items() if v is not None},
            "services": sorted(s.name for s in services),
            "backends": runtime.backends,
            "models": models_in_use(settings),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return PlainTextResponse(
            telemetry.prometheus_text(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # Starlette runs the last-added middleware first: tracing → context (ids, the request log
    # line inside the span, last-resort errors) → codecs (so every later error reaches the
    # client in its codec) → body limit → auth → input rules (only authenticated bodies are read).
    codecs = default_registry()
    codec_renderer = make_error_renderer(codecs)

    def render_error(scope: Scope, exc: FaaSError) -> tuple[bytes, str]:
        if scope.get("path", "").startswith(OPENAI_PREFIX):
            return json_error_renderer(scope, exc)
        return codec_renderer(scope, exc)

    app.add_middleware(InputRulesMiddleware, renderer=render_error)
    app.add_middleware(
        AuthMiddleware,
        settings=settings,
        verifier=runtime.verifier,
        renderer=render_error,
        # The dashboard page itself is public; the data it fetches needs the user's token.
        public_paths=PUBLIC_PATHS | {"/llmops/dashboard"},
        public_prefixes=(f"{DOCS_STATIC}/",),
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        overrides={"/api/v1/ingestion/upload": settings.max_upload_bytes * MAX_FILES_PER_UPLOAD},
    )
    app.add_middleware(CodecMiddleware, registry=codecs, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        RequestContextMiddleware,
        log_requests=settings.log_requests,
        renderer=render_error,
        request_log=request_log,
    )
    app.add_middleware(TracingMiddleware, telemetry=telemetry)
    runtime.clients.bind_local(app, frozenset(s.name for s in services))
    return app


def build_app(
    settings: Any, names: Sequence[str] | None = None, *, server: bool = False
) -> FastAPI:
    """The app for `faas up` (every available service) or `faas serve NAME`; `server` for the
    process that serves it (tunes the process's garbage collector)."""
    from faas.services import BUILDERS

    runtime = Runtime.build(settings)
    selected = [n for n in (names or settings.services) if n in BUILDERS]
    services = [BUILDERS[n](runtime) for n in selected]
    runtime.load_job_modules()
    return create_service_app(services, runtime, freeze_after_start=server)
