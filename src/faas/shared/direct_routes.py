"""Direct routes: the hottest endpoints served without FastAPI's per-request machinery.

A route whose endpoint is marked `@direct` takes only the request and returns a `Response`;
it is matched by its exact method and path in one dict lookup in front of the router, instead
of the router's scan over every route, the dependency solver and the endpoint wrapper. It sits
inside FastAPI's exception middleware, so an error raised by the endpoint is rendered by the
same handlers, in the same shape, as anywhere else. The route stays registered as usual: the
OpenAPI document, `url_path_for` and the `scope["route"]` the tracing and request log read are
unchanged; only its dispatch is shorter (measured on the gateway's chat completions in
docs/benchmarks.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

DirectEndpoint = Callable[[Request], Awaitable[Response]]
E = TypeVar("E", bound=DirectEndpoint)

_MARK: Final = "__faas_direct__"


def direct(endpoint: E) -> E:
    """Mark an endpoint `async def name(request: Request) -> Response` to be served directly.
    Validation, headers and errors are the endpoint's own: nothing is injected."""
    setattr(endpoint, _MARK, True)
    return endpoint


class DirectRoutes:
    """ASGI: the marked routes by (method, path); everything else goes on to the router."""

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], APIRoute]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :]
            route = self.routes.get((scope["method"], path))
            if route is not None:
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {}
                response = await route.endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_direct_routes(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    """Serve the app's `@direct` routes directly; the routes so served."""
    routes: dict[tuple[str, str], APIRoute] = {}
    for route in app.router.routes:
        if not isinstance(route, APIRoute) or not getattr(route.endpoint, _MARK, False):
            continue
        parameters = list(inspect.signature(route.endpoint).parameters)
        if parameters != ["request"] or "{" in route.path:
            raise TypeError(
                f"direct route {route.path}: the endpoint must take only `request` and the "
                f"path no parameters (got {parameters})"
            )
        for method in route.methods or ():
            routes[(method, route.path)] = route
    if routes:
        app.router.middleware_stack = DirectRoutes(app.router.middleware_stack, routes)
    return routes
