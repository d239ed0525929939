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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from faas.shared.middleware import is_json_media

DirectEndpoint = Callable[[Request], Awaitable[Response]]
E = TypeVar("E", bound=DirectEndpoint)
B = TypeVar("B", bound=BaseModel)

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
        # What the route's own handling would add and a direct call skips.
        if type(route) is not APIRoute or route.dependencies or route.max_body_size is not None:
            raise TypeError(
                f"direct route {route.path}: a route class of its own, dependencies or a body "
                "limit on the route or its router would be skipped"
            )
        for method in route.methods or ():
            routes[(method, route.path)] = route
    if routes:
        app.router.middleware_stack = DirectRoutes(app.router.middleware_stack, routes)
    return routes


# -- the body of a direct route ----------------------------------------------------------------


async def json_body(request: Request) -> Any:
    """The decoded JSON body: InputRulesMiddleware has decoded (and checked) a JSON body once
    already; anything else fails as FastAPI's own body parameter would (`RequestValidationError`,
    so the app's handler answers: 422, or 415 for a body sent under another media type or
    none — the middleware checks those too, but only a JSON media type makes it JSON)."""
    content_type = request.headers.get("content-type")
    state = request.scope.get("state", {})
    if content_type is not None and is_json_media(content_type) and "faas_json" in state:
        return state["faas_json"]
    raw = await request.body()
    if not raw:
        raise _invalid("missing", "Field required")
    if content_type is None or not is_json_media(content_type):
        raise _invalid("model_attributes_type", "Input should be a valid dictionary or object")
    try:  # the middleware decodes JSON bodies of POST, PUT and PATCH; this is another method
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _invalid("json_invalid", f"JSON decode error: {exc}") from exc


async def body_as(request: Request, model: type[B]) -> B:
    """The JSON body validated as `model`, its errors located under `body` as FastAPI's are."""
    data = await json_body(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from exc


def _invalid(kind: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body",), "msg": message}])


def body_doc(
    model: type[BaseModel], example: Any, parameters: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """`openapi_extra` for a route that parses its body itself: the body's schema and example
    (and any header `parameters` it reads itself), as FastAPI documents a body parameter."""
    content = {"schema": _inline(model.model_json_schema()), "example": example}
    doc: dict[str, Any] = {
        "requestBody": {"required": True, "content": {"application/json": content}}
    }
    if parameters:
        doc["parameters"] = list(parameters)
    return doc


def _inline(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """`schema` with its `$defs` references replaced by their definitions: an `openapi_extra`
    schema is placed as is, where `#/$defs/...` would point at nothing."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema
