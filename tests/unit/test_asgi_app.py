"""FaasAPI: the layers a request goes through, and a direct route's errors answered as the
exception middleware would answer them (it is outside that middleware now)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import APIRouter
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from faas.app import create_service_app
from faas.integrations.codec_http import CodecMiddleware
from faas.integrations.otel import TracingMiddleware
from faas.runtime import Runtime
from faas.services import BUILDERS
from faas.shared.asgi_app import FaasAPI
from faas.shared.config import Settings
from faas.shared.direct_routes import DirectRoutes, direct, install_direct_routes
from faas.shared.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    InputRulesMiddleware,
    RequestContextMiddleware,
)
from tests.support.asgi import stack_layers


def test_a_faas_app_has_only_the_layers_it_uses(make_settings: Callable[..., Settings]) -> None:
    runtime = Runtime.build(make_settings())
    app = create_service_app([BUILDERS["gateway"](runtime)], runtime)
    assert [type(layer) for layer in stack_layers(app)] == [
        ServerErrorMiddleware,
        TracingMiddleware,
        RequestContextMiddleware,
        CodecMiddleware,
        BodyLimitMiddleware,
        AuthMiddleware,
        InputRulesMiddleware,
        DirectRoutes,
        ExceptionMiddleware,
        AsyncExitStackMiddleware,
        APIRouter,
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_body_size": 1024}, "body limits"),
        ({"telemetry": {"tracing": True, "metrics": False, "logs": False}}, "telemetry"),
    ],
)
def test_what_faas_does_itself_cannot_be_turned_on_in_fastapi(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        FaasAPI(**options)  # type: ignore[arg-type]


class Teapot(Exception):
    pass


def app_raising(exc: Exception) -> FaasAPI:
    """A direct route and a routed one raising `exc`, with handlers of every kind FastAPI
    splits: by status, by class (one of them sync), and for 500 / Exception."""
    app = FaasAPI()

    async def by_status(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("status handler", status_code=418)

    def by_class(request: Request, exc: Exception) -> Response:  # run in a thread
        return PlainTextResponse("class handler", status_code=409)

    async def last_resort(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("last resort", status_code=500)

    app.add_exception_handler(418, by_status)
    app.add_exception_handler(Teapot, by_class)
    app.add_exception_handler(Exception, last_resort)

    @app.post("/direct")
    @direct
    async def fails(request: Request) -> Response:
        raise exc

    @app.post("/routed")
    async def routed() -> Response:
        raise exc

    install_direct_routes(app)
    return app


@pytest.mark.parametrize(
    ("exc", "status", "text"),
    [
        (HTTPException(418), 418, "status handler"),
        (HTTPException(404, "gone"), 404, '{"detail":"gone"}'),  # FastAPI's default handler
        (Teapot(), 409, "class handler"),
        (RuntimeError("boom"), 500, "last resort"),
    ],
    ids=["status", "default HTTP", "class (sync)", "unhandled"],
)
async def test_a_direct_routes_error_is_answered_as_a_routed_one(
    exc: Exception, status: int, text: str
) -> None:
    app = app_raising(exc)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        direct_answer = await client.post("/direct")
        routed_answer = await client.post("/routed")
    assert (direct_answer.status_code, direct_answer.text) == (status, text)
    assert (routed_answer.status_code, routed_answer.text) == (status, text)


async def post_both(app: FaasAPI, prefix: str = "") -> list[tuple[int, str]]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answers = [await client.post(f"{prefix}/direct"), await client.post(f"{prefix}/routed")]
    return [(a.status_code, a.text) for a in answers]


async def test_a_late_handler_changes_neither_route() -> None:
    """Both take the handlers as they stood when the stack was built."""
    app = app_raising(KeyError("k"))
    assert await post_both(app) == [(500, "last resort")] * 2
    app.add_exception_handler(KeyError, lambda request, exc: PlainTextResponse("late", 400))
    assert await post_both(app) == [(500, "last resort")] * 2


async def test_the_apps_root_path_is_honoured() -> None:
    app = app_raising(Teapot())
    app.root_path = "/api"
    assert await post_both(app, "/api") == [(409, "class handler")] * 2


async def test_an_error_while_a_direct_answer_streams_goes_up_as_it_is() -> None:
    """The answer has started: no handler can answer the error, which reaches the server
    unchanged (FastAPI's exception middleware would raise a RuntimeError in its place)."""
    app = FaasAPI()
    app.add_exception_handler(Teapot, lambda request, exc: PlainTextResponse("handled", 409))

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        raise Teapot()

    @app.post("/stream")
    @direct
    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks())

    install_direct_routes(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(Teapot):
            await client.post("/stream")


async def test_direct_routes_are_installed_before_the_first_request() -> None:
    app = app_raising(Teapot())
    await post_both(app)
    with pytest.raises(RuntimeError, match="before the app serves"):
        install_direct_routes(app)
