"""How the app is put together: included routers flattened into the app's own routes (every
route at its full path, with what the inclusion added, so the route a request reports to spans,
metrics and the request log is the one it matched, and a `@direct` route inside an inclusion is
served directly), and a server process's collector settings."""

from __future__ import annotations

import gc
from collections.abc import Callable

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from faas.app import GC_YOUNG, create_service_app, flat_routes
from faas.runtime import Runtime
from faas.services import BUILDERS
from faas.shared.asgi_app import FaasAPI
from faas.shared.config import Settings
from faas.shared.direct_routes import direct, install_direct_routes
from tests.conftest import auth
from tests.support.asgi import served_directly


class MarkedRoute(APIRoute):
    """A route class of the service's own, which the flattening must keep."""


def nested(seen: list[str]) -> APIRouter:
    def dependency(request: Request) -> None:
        seen.append(f"dependency {request.url.path}")

    inner = APIRouter(route_class=MarkedRoute)

    @inner.get("/items/{item_id}", summary="One item", responses={404: {"description": "none"}})
    async def item(item_id: int, request: Request) -> dict[str, object]:
        route = request.scope["route"]
        return {"id": item_id, "route": route.path, "class": type(route).__name__}

    plain = APIRouter()  # a direct route may not have dependencies or a class of its own

    @plain.post("/fast")
    @direct
    async def fast(request: Request) -> Response:
        return JSONResponse({"route": request.scope["route"].path, "direct": True})

    middle = APIRouter(prefix="/mid", tags=["middle"])
    middle.include_router(inner, prefix="/in", dependencies=[Depends(dependency)])
    middle.include_router(plain, prefix="/in")
    outer = APIRouter(prefix="/api")
    outer.include_router(middle)
    return outer


def app_from(router: APIRouter, *, flat: bool) -> FaasAPI:
    app = FaasAPI()
    if flat:
        app.router.routes.extend(flat_routes(router.routes))
    else:
        app.include_router(router)
    install_direct_routes(app)
    return app


async def get(app: FastAPI, method: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path)


def test_the_openapi_document_is_the_one_fastapi_makes_of_the_inclusions() -> None:
    flat = app_from(nested([]), flat=True)
    assert flat.openapi() == app_from(nested([]), flat=False).openapi()
    operation = flat.openapi()["paths"]["/api/mid/in/items/{item_id}"]["get"]
    assert operation["tags"] == ["middle"]
    assert operation["summary"] == "One item"
    assert "404" in operation["responses"]


def test_form_limits_set_on_an_inclusion_are_refused_rather_than_lost() -> None:
    """The nesting applied an inclusion's form limits; a flat route would not."""
    inner = APIRouter()

    @inner.post("/form")
    async def form() -> None:
        return None

    outer = APIRouter()
    outer.include_router(inner, form_limits={"max_fields": 1})
    with pytest.raises(TypeError, match="form limits"):
        flat_routes(outer.routes)


async def test_a_route_reports_its_full_path_keeps_its_class_and_the_inclusions_dependency() -> (
    None
):
    seen: list[str] = []
    app = app_from(nested(seen), flat=True)
    response = await get(app, "GET", "/api/mid/in/items/7")
    assert response.status_code == 200, response.text
    route = "/api/mid/in/items/{item_id}"
    assert response.json() == {"id": 7, "route": route, "class": "MarkedRoute"}
    assert seen == ["dependency /api/mid/in/items/7"]
    assert (await get(app, "GET", "/api/mid/in/items/x")).status_code == 422


async def test_a_direct_route_inside_an_inclusion_is_served_directly() -> None:
    app = app_from(nested([]), flat=True)
    stack = served_directly(app)
    assert set(stack.routes) == {("POST", "/api/mid/in/fast")}
    response = await get(app, "POST", "/api/mid/in/fast")
    assert response.json() == {"route": "/api/mid/in/fast", "direct": True}


async def test_the_platforms_nested_routes_report_their_full_route(
    make_settings: Callable[..., Settings],
) -> None:
    """The prompt service nests its rendering routes: its render used to be reported as
    `/render` (spans and metrics) and went through FastAPI's router."""
    runtime = Runtime.build(make_settings())
    app = create_service_app([BUILDERS["prompt"](runtime)], runtime)
    stack = served_directly(app)
    assert ("POST", "/api/v1/prompts/render") in stack.routes
    paths = {r.path for r in app.router.routes if isinstance(r, APIRoute)}
    assert "/api/v1/prompts/render" in paths
    assert "/render" not in paths
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"name": "agent.system", "variables": {"agent_name": "a", "tools": []}}
            response = await client.post("/api/v1/prompts/render", json=body, headers=auth("acme"))
        assert response.status_code == 200, response.text
    metrics = runtime.telemetry.prometheus_text()
    assert 'http_route="/api/v1/prompts/render"' in metrics
    assert 'http_route="/render"' not in metrics


async def test_a_server_app_freezes_startup_objects_and_collects_young_ones_less_often(
    make_settings: Callable[..., Settings],
) -> None:
    """`faas up` / `faas serve` (freeze_after_start): what start-up built leaves the collector's
    reach, and young collections run every GC_YOUNG allocations rather than every 700."""
    before = gc.get_threshold()
    runtime = Runtime.build(make_settings())
    app = create_service_app([BUILDERS["prompt"](runtime)], runtime, freeze_after_start=True)
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 0
            assert gc.get_threshold() == (GC_YOUNG, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
