"""Direct routes: the hottest endpoints served without FastAPI's per-request machinery.

A route whose endpoint is marked `@direct` takes only the request and returns a `Response`;
it is matched by its exact method and path in one dict lookup in front of the router (one with
path parameters, `/agents/{agent_id}/execute`, by its own pattern after that lookup), instead of
the router's scan over every route, the dependency solver and the endpoint wrapper. A direct
route never takes a request the router would have given an earlier route: one that an earlier
route's path could overlap is refused at start-up. The matcher is inner middleware of the
`FaasAPI` (inside every middleware the app adds, outside FastAPI's exception middleware): an
error raised by the endpoint is answered by the app's own handlers, looked up as the exception
middleware looks them up, so in the same shape as anywhere else. The route stays registered as
usual: the OpenAPI document, `url_path_for` and the `scope["route"]` the tracing and request log
read are unchanged; only its dispatch is shorter (measured on the gateway's chat completions in
docs/benchmarks.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Host, Match, Mount, Router, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from faas.shared.asgi_app import FaasAPI
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
    """ASGI: the marked routes by (method, path), then those with path parameters by their
    patterns; everything else goes on to `app` (FastAPI's exception middleware, the router)."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[tuple[str, str], APIRoute],
        patterned: Sequence[APIRoute] = (),
        *,
        router: Router,
        exception_handlers: Mapping[Any, Any],
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.patterned = tuple(patterned)
        self.router = router
        self.exception_handlers = dict(exception_handlers)

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
                await self._serve(route, scope, receive, send)
                return
            for route in self.patterned:
                match, child = route.matches(scope)  # Starlette's own matching and convertors
                if match is Match.FULL:
                    scope.update(child)
                    await self._serve(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint's answer, or its error's answer by the app's handlers. An error raised
        while the answer is being sent (a stream's generator) goes up as it is: the answer has
        started, so no handler could answer it (FastAPI's exception middleware raises a
        RuntimeError saying so in its place)."""
        scope.setdefault("router", self.router)  # as the router sets it (`request.url_for`)
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = _handler_for(self.exception_handlers, exc)
            if handler is None:
                raise  # to the server-error middleware, as from any route
            if is_async_callable(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
            exc.__traceback__ = None  # as Starlette does: a reused exception keeps no frames
        await response(scope, receive, send)


def _handler_for(handlers: Mapping[Any, Any], exc: Exception) -> Any:
    """The handler for `exc` among `handlers` (the exception middleware's: FaasAPI leaves out
    the 500 / `Exception` handler, which answers from the outermost layer), found as that
    middleware finds it: an HTTP exception's status first, then the nearest class."""
    handler = handlers.get(exc.status_code) if isinstance(exc, HTTPException) else None
    if handler is None:
        handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
    return handler


def install_direct_routes(app: FaasAPI) -> dict[tuple[str, str], APIRoute]:
    """Serve the app's `@direct` routes directly; the routes so served. Before the app starts:
    the layer is added when its stack is built."""
    if app.middleware_stack is not None:
        raise RuntimeError("install the direct routes before the app serves its first request")
    routes: dict[tuple[str, str], APIRoute] = {}
    patterned: list[APIRoute] = []
    for index, route in enumerate(app.router.routes):
        if not isinstance(route, APIRoute) or not getattr(route.endpoint, _MARK, False):
            continue
        _check_direct(route)
        earlier = [r for r in app.router.routes[:index] if _may_take(r, route)]
        if earlier:
            raise TypeError(
                f"direct route {route.path}: an earlier route ({_path_of(earlier[0])}) may "
                "match the same paths, and the router would give them to it"
            )
        if "{" in route.path:
            patterned.append(route)
            continue
        for method in route.methods or ():
            routes[(method, route.path)] = route
    if routes or patterned:
        layer = partial(DirectRoutes, routes=routes, patterned=patterned, router=app.router)
        app.inner_middleware.append(layer)
    return routes | {(m, r.path): r for r in patterned for m in r.methods or ()}


def _check_direct(route: APIRoute) -> None:
    parameters = list(inspect.signature(route.endpoint).parameters)
    if parameters != ["request"]:
        raise TypeError(
            f"direct route {route.path}: the endpoint must take only `request` "
            f"(path parameters are in `request.path_params`; got {parameters})"
        )
    # What the route's own handling would add and a direct call skips.
    if type(route) is not APIRoute or route.dependencies or route.max_body_size is not None:
        raise TypeError(
            f"direct route {route.path}: a route class of its own, dependencies or a body "
            "limit on the route or its router would be skipped"
        )
    if any(not _is_plain_parameter(s) for s in _segments(route.path) if "{" in s):
        raise TypeError(
            f"direct route {route.path}: path parameters must be whole segments, `{{name}}`"
        )


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/")


def _is_plain_parameter(segment: str) -> bool:
    """`{name}` or `{name:str}`: one whole segment, anything but a slash."""
    if not (segment.startswith("{") and segment.endswith("}")):
        return False
    name, _, convertor = segment[1:-1].partition(":")
    return name.isidentifier() and convertor in ("", "str")


def _may_take(earlier: BaseRoute, route: APIRoute) -> bool:
    """Whether the router could give `earlier` a request `route` matches. One matching the
    path under another method only is passed over for a later full match, as is a websocket
    route."""
    if isinstance(earlier, WebSocketRoute):
        return False
    methods = getattr(earlier, "methods", None)  # None or empty: every method (Starlette)
    if methods and route.methods and not methods & route.methods:
        return False
    return _may_overlap(earlier, route.path)


def _may_overlap(route: BaseRoute, path: str) -> bool:
    """Whether `route` may match some path that the template `path` matches (erring towards
    yes): literal segments must agree; a segment with a parameter in it may match anything."""
    theirs = getattr(route, "path", None)
    if isinstance(route, Host) or not isinstance(theirs, str):
        return True
    mine, other = _segments(path), _segments(theirs) if theirs.strip("/") else []
    # From the first parameter that may match a slash (`{name:path}`, a convertor of the app's
    # own), the rest of the path may match anything; so may everything under a mount.
    rest = [i for i, segment in enumerate(other) if _may_span_slashes(segment)]
    k = rest[0] if rest else len(other)
    if rest or isinstance(route, Mount):
        return len(mine) >= k and _segments_overlap(mine[:k], other[:k])
    return _segments_overlap(mine, other)


def _may_span_slashes(segment: str) -> bool:
    """A segment with a parameter whose convertor is not one of Starlette's one-segment ones."""
    for part in segment.split("{")[1:]:
        convertor = part.partition("}")[0].partition(":")[2]
        if convertor not in ("", "str", "int", "float", "uuid"):
            return True
    return False


def _segments_overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y or "{" in x or "{" in y for x, y in zip(a, b, strict=True))


def _path_of(route: BaseRoute) -> str:
    return str(getattr(route, "path", route))


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


def path_parameter(name: str) -> dict[str, Any]:
    """A string path parameter of a direct route, documented as FastAPI documents `name: str`."""
    title = name.replace("_", " ").title()
    schema = {"type": "string", "title": title}
    return {"name": name, "in": "path", "required": True, "schema": schema}


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
