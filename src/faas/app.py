"""`create_service_app`: one FastAPI app for one or more services on a shared runtime, with the
platform middleware, error rendering, health, metrics and OpenAPI.

It lives above `faas.shared` because it wires integrations and backends, which the shared
kernel must not import.
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute
from starlette.staticfiles import StaticFiles

from faas import __version__
from faas.app_errors import by_prefix, install_error_handlers
from faas.integrations.codec import default_registry
from faas.integrations.codec_http import CodecMiddleware, make_error_renderer
from faas.integrations.otel import TracingMiddleware
from faas.jobs.routes import build_jobs_router
from faas.kernel import ServiceRegistry, ServiceSpec
from faas.keys.routes import build_keys_router
from faas.runtime import Runtime
from faas.shared.api import Service
from faas.shared.asgi_app import FaasAPI
from faas.shared.direct_routes import install_direct_routes
from faas.shared.logging import RequestLog
from faas.shared.middleware import (
    PUBLIC_PATHS,
    AuthMiddleware,
    BodyLimitMiddleware,
    ErrorRenderer,
    InputRulesMiddleware,
    RequestContextMiddleware,
    json_error_renderer,
)

log = logging.getLogger("faas.app")

GC_YOUNG = 10_000  # net allocations between young collections in a server process (default 700)


# NATS being away degrades events (they are buffered) but requests still work, so it is
# reported without taking the instance out of rotation.
OPTIONAL_CHECKS = frozenset({"nats"})


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


def _lifespan(
    runtime: Runtime, services: Sequence[Service], request_log: RequestLog, *, freeze: bool
) -> Any:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        started: list[Service] = []
        try:
            for service in services:
                await service.start()
                started.append(service)
            if freeze:
                # What start-up built (modules, the app, tokenizer tables) lives as long as the
                # process: out of the collector's reach, a full collection no longer scans it.
                # Without this, a collection set off by one big request held the GIL ~120 ms.
                gc.freeze()
                # A young collection runs every GC_YOUNG net allocations; at the default 700,
                # an agent run (15 ms of CPU) set off one every few runs, ~1.7 ms each with 32
                # runs' objects alive: 0.6 ms of every run's CPU, in pauses every other request
                # waited behind. Cyclic garbage then lives a little longer, never unbounded.
                gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
            yield
        finally:
            await runtime.stop_worker()
            for service in reversed(started):
                await service.stop()
            await runtime.close()
            request_log.flush()

    return lifespan


def install_health(
    app: FastAPI, runtime: Runtime, services: Sequence[Service], specs: Sequence[ServiceSpec[Any]]
) -> None:
    """/livez, /readyz (the runtime's checks, each service's own, and what specs describe)
    and /metrics."""

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
        }
        for spec in specs:
            if spec.describe is not None:
                body |= spec.describe(runtime.settings)
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return PlainTextResponse(
            runtime.telemetry.prometheus_text(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )


def install_middleware(
    app: FastAPI,
    runtime: Runtime,
    specs: Sequence[ServiceSpec[Any]],
    render_error: ErrorRenderer,
    request_log: RequestLog,
) -> None:
    """Starlette runs the last-added middleware first: tracing → context (ids, the request log
    line inside the span, last-resort errors) → codecs (so every later error reaches the
    client in its codec) → body limit → auth → input rules (only authenticated bodies are
    read). Public paths and larger body limits are what the specs declare."""
    settings = runtime.settings
    body_limits = {
        path: limit
        for spec in specs
        if spec.body_limits is not None
        for path, limit in spec.body_limits(settings).items()
    }
    app.add_middleware(InputRulesMiddleware, renderer=render_error)
    app.add_middleware(
        AuthMiddleware,
        settings=settings,
        verifier=runtime.verifier,
        renderer=render_error,
        public_paths=PUBLIC_PATHS.union(*(spec.public_paths for spec in specs)),
        public_prefixes=(f"{DOCS_STATIC}/",),
    )
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, overrides=body_limits
    )
    app.add_middleware(
        CodecMiddleware, registry=default_registry(), max_body_bytes=settings.max_body_bytes
    )
    app.add_middleware(
        RequestContextMiddleware,
        log_requests=settings.log_requests,
        renderer=render_error,
        request_log=request_log,
    )
    app.add_middleware(TracingMiddleware, telemetry=runtime.telemetry)


# What an APIRoute is made of (`path` aside): all of it is on the effective route of an inclusion.
_ROUTE_FIELDS = tuple(inspect.signature(APIRoute.__init__).parameters)[2:]


def flat_routes(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """`routes` with each included router replaced by its routes: every one an APIRoute (of the
    class it was declared with) at its full path, with what the inclusions added (prefix, tags,
    dependencies, responses). Added to the app's own router rather than through include_router,
    which in FastAPI >= 0.16x keeps a router nested: a request is matched through it a second
    time (~23 us), the route it then reports is the inner one, whose path lacks the prefix (the
    metrics and spans said `/render` for `/api/v1/prompts/render`), and a `@direct` route inside
    one was never served directly."""
    flat: list[BaseRoute] = []
    for route in routes:
        if not hasattr(route, "effective_route_contexts"):  # not an inclusion
            flat.append(route)
            continue
        if getattr(getattr(route, "include_context", None), "form_limits", None):
            raise TypeError(f"form limits set on an inclusion are not carried: {route}")
        for context in iter_route_contexts([route]):
            inner = context.original_route
            if not isinstance(inner, APIRoute):
                raise TypeError(f"an included {type(inner).__name__} is not supported: {inner}")
            # The inclusion's own settings, else the route's (`form_limits`: no router sets one).
            fields = {name: getattr(context, name, getattr(inner, name)) for name in _ROUTE_FIELDS}
            flat.append(type(inner)(context.path or inner.path, **fields))
    return flat


def create_service_app(
    services: Sequence[Service],
    runtime: Runtime,
    *,
    registry: ServiceRegistry | None = None,
    title: str = "faas",
    freeze_after_start: bool = False,
) -> FaasAPI:
    """The app hosting `services`, wired from what each one's spec in `registry` (the
    platform's, unless given) declares: routes, public paths, body limits, error shapes."""
    if registry is None:
        from faas.services import REGISTRY

        registry = REGISTRY
    specs = [registry[s.name] for s in services]
    request_log = RequestLog()
    # FastAPI's own telemetry stays off (FaasAPI): faas traces and measures requests itself, and
    # FastAPI's instrumentation would add a second server span and duplicate metrics.
    app = FaasAPI(
        title=title,
        version=__version__,
        lifespan=_lifespan(runtime, services, request_log, freeze=freeze_after_start),
        description="AI components as independent, scalable services.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.telemetry = runtime.telemetry
    app.state.services = {s.name: s for s in services}
    renderers = {prefix: r for spec in specs for prefix, r in spec.error_renderers.items()}
    install_error_handlers(app, by_prefix(renderers, json_error_renderer))
    routers = [spec.routes(service) for spec, service in zip(specs, services, strict=True)]
    for router in [*routers, build_jobs_router(runtime.jobs), build_keys_router(runtime.keys)]:
        app.router.routes.extend(flat_routes(router.routes))
    install_direct_routes(app)
    install_bearer_security(app)
    install_docs(app)
    install_health(app, runtime, services, specs)
    render_error = by_prefix(renderers, make_error_renderer(default_registry()))
    install_middleware(app, runtime, specs, render_error, request_log)
    runtime.clients.bind_local(app, frozenset(s.name for s in services))
    return app


def build_app(
    settings: Any, names: Sequence[str] | None = None, *, server: bool = False
) -> FastAPI:
    """The app for `faas up` (every available service) or `faas serve NAME`; `server` for the
    process that serves it (tunes the process's garbage collector)."""
    from faas.services import REGISTRY

    REGISTRY.check(settings)
    runtime = Runtime.build(settings)
    specs = [REGISTRY[n] for n in names if n in REGISTRY] if names else REGISTRY.selected(settings)
    services = [spec.build(runtime) for spec in specs]
    runtime.load_job_modules()
    return create_service_app(services, runtime, freeze_after_start=server)
