"""Direct routes: a `@direct` endpoint is matched by method and path ahead of the router, its
errors take the app's handlers, the route stays what tracing and the docs see, and anything
else (another method, another path) still goes through the router."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from faas.app import create_service_app
from faas.app_errors import install_error_handlers
from faas.runtime import Runtime
from faas.services import BUILDERS
from faas.shared.asgi_app import FaasAPI
from faas.shared.config import Settings
from faas.shared.direct_routes import direct, install_direct_routes
from faas.shared.exceptions import ValidationFailed
from tests.conftest import auth
from tests.support.asgi import served_directly


def app_with_direct_route() -> tuple[FaasAPI, list[str]]:
    app = FaasAPI()
    install_error_handlers(app)
    served: list[str] = []

    @app.post("/v1/things")
    @direct
    async def things(request: Request) -> Response:
        served.append("direct" if "route" in request.scope else "?")
        if request.headers.get("x-fail"):
            raise ValidationFailed("bad thing", details={"param": "thing"})
        route = request.scope["route"]
        return JSONResponse({"route": route.path, "body": (await request.body()).decode()})

    @app.get("/v1/things")
    async def list_things() -> dict[str, str]:
        return {"via": "router"}

    install_direct_routes(app)
    return app, served


async def call(app: FastAPI, method: str, path: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, root_path=str(kwargs.pop("root_path", "")))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path, **kwargs)  # type: ignore[arg-type]


async def test_a_direct_route_is_served_ahead_of_the_router_with_its_route_in_scope() -> None:
    app, served = app_with_direct_route()
    assert served_directly(app).routes
    response = await call(app, "POST", "/v1/things", content=b"hello")
    assert response.status_code == 200
    assert response.json() == {"route": "/v1/things", "body": "hello"}
    assert served == ["direct"]


async def test_its_errors_take_the_apps_handlers() -> None:
    app, _ = app_with_direct_route()
    response = await call(app, "POST", "/v1/things", headers={"x-fail": "1"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_failed" and error["details"] == {"param": "thing"}


async def test_other_methods_and_paths_still_go_through_the_router() -> None:
    app, served = app_with_direct_route()
    assert (await call(app, "GET", "/v1/things")).json() == {"via": "router"}
    assert (await call(app, "POST", "/v1/other")).status_code == 404
    assert (await call(app, "PUT", "/v1/things")).status_code == 405
    assert served == []


async def test_a_root_path_in_front_is_stripped_before_matching() -> None:
    app, served = app_with_direct_route()
    response = await call(app, "POST", "/api/v1/things", root_path="/api")
    assert response.status_code == 200 and served == ["direct"]


def test_an_endpoint_with_injected_parameters_cannot_be_direct() -> None:
    app = FaasAPI()

    @app.post("/v1/things")
    @direct
    async def things(request: Request, key: str | None = Header(None)) -> Response:
        return Response()

    with pytest.raises(TypeError, match="must take only `request`"):
        install_direct_routes(app)


class OwnRoute(APIRoute):
    """A route class whose `handle` might add something (as the prompt generator's
    deprecated routes add headers)."""


@pytest.mark.parametrize(
    "router",
    [
        APIRouter(dependencies=[Depends(lambda: None)]),
        APIRouter(route_class=OwnRoute),
    ],
    ids=["dependencies", "route class"],
)
def test_a_route_whose_handling_adds_something_cannot_be_direct(router: APIRouter) -> None:
    """A direct call goes straight to the endpoint: what the route's own handling would add
    (dependencies of the route or its router, a route class of its own, a body limit) would be
    skipped, so such a route is refused at start-up rather than served without it."""

    @router.post("/v1/things")
    @direct
    async def things(request: Request) -> Response:
        return Response()

    app = FaasAPI()
    app.router.routes.extend(router.routes)
    with pytest.raises(TypeError, match="would be skipped"):
        install_direct_routes(app)


async def test_the_gateways_openai_routes_are_direct_and_check_the_idempotency_key(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = Runtime.build(make_settings())
    app = create_service_app([BUILDERS["gateway"](runtime)], runtime)
    stack = served_directly(app)
    assert {("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")} <= set(stack.routes)
    async with app.router.lifespan_context(app):
        body = {"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]}
        headers = auth("acme") | {"idempotency-key": "k" * 256}
        response = await call(app, "POST", "/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 422, response.text  # in OpenAI's error shape
    assert response.json()["error"]["param"] == "idempotency-key"
    operation = app.openapi()["paths"]["/v1/chat/completions"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["idempotency-key"]


def app_with_patterned_route(earlier_method: str | None = None) -> tuple[FaasAPI, list[str]]:
    """A direct route with a path parameter, behind an earlier route whose pattern overlaps
    it (taking `earlier_method`) when one is asked for."""
    app = FaasAPI()
    install_error_handlers(app)
    served: list[str] = []
    if earlier_method is not None:

        @app.api_route("/v1/things/special/{action}", methods=[earlier_method])
        async def special(action: str) -> dict[str, str]:
            return {"via": "router", "action": action}

    @app.post("/v1/things/{thing_id}/run")
    @direct
    async def run(request: Request) -> Response:
        served.append(request.path_params["thing_id"])
        return JSONResponse({"route": request.scope["route"].path, **request.path_params})

    install_direct_routes(app)
    return app, served


async def test_a_direct_route_with_a_path_parameter_is_matched_by_its_pattern() -> None:
    app, served = app_with_patterned_route()
    response = await call(app, "POST", "/v1/things/t%201/run", root_path="")
    assert response.status_code == 200
    assert response.json() == {"route": "/v1/things/{thing_id}/run", "thing_id": "t 1"}
    assert served == ["t 1"]
    assert (await call(app, "POST", "/v1/things/a/b/run")).status_code == 404
    assert (await call(app, "GET", "/v1/things/a/run")).status_code == 405
    assert served == ["t 1"]


def _answer(request: Request) -> Response:
    return Response()


@pytest.mark.parametrize(
    "earlier",
    [
        Route("/v1/things/special/{action}", _answer, methods=["POST"]),
        Route("/v1/things/special/{action}", _answer, methods=[]),  # every method, in Starlette
        Mount("/v1/things/{x:path}/tail", app=Starlette()),
        Mount("/v1/things", app=Starlette()),
        Route("/v1/{rest:path}", _answer, methods=["POST"]),
    ],
    ids=["same method", "every method", "mount with a path parameter", "mount", "path parameter"],
)
def test_a_direct_route_an_earlier_route_could_take_is_refused(earlier: BaseRoute) -> None:
    """The router gives `/v1/things/special/run` (or everything under a mount, or whatever a
    parameter spanning slashes matches) to the earlier route: served directly, the same request
    would reach another endpoint."""
    app = FaasAPI()
    app.router.routes.append(earlier)

    @app.post("/v1/things/{thing_id}/run")
    @direct
    async def run(request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="earlier route"):
        install_direct_routes(app)


async def test_an_earlier_route_under_other_methods_does_not_stop_it() -> None:
    app, served = app_with_patterned_route(earlier_method="GET")
    got = await call(app, "GET", "/v1/things/special/run")
    assert got.json() == {"via": "router", "action": "run"}
    assert (await call(app, "POST", "/v1/things/special/run")).status_code == 200
    assert served == ["special"]


@pytest.mark.parametrize("path", ["/v1/things/{thing_id:int}", "/v1/things/{thing_id}.json"])
def test_only_whole_segment_string_parameters_can_be_direct(path: str) -> None:
    app = FaasAPI()

    @app.post(path)
    @direct
    async def thing(request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="whole segments"):
        install_direct_routes(app)


async def test_an_agent_run_starts_on_a_direct_route(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = Runtime.build(make_settings())
    app = create_service_app([BUILDERS["agent"](runtime)], runtime)
    stack = served_directly(app)
    assert [r.path for r in stack.patterned] == ["/api/v1/agents/{agent_id}/execute"]
    async with app.router.lifespan_context(app):
        missing = await call(
            app, "POST", "/api/v1/agents/nope/execute", json={"task": "x"}, headers=auth("acme")
        )
        invalid = await call(
            app, "POST", "/api/v1/agents/nope/execute", json={"task": ""}, headers=auth("acme")
        )
    assert missing.status_code == 404, missing.text
    assert invalid.status_code == 422
    assert invalid.json()["error"]["details"]["errors"][0]["loc"] == ["body", "task"]
