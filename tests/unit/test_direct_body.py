"""A direct route's body fails exactly as a FastAPI body parameter's would: same status, same
error shape, located under `body` (the fuzz suite holds every route to that)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from faas.app_errors import install_error_handlers
from faas.shared.asgi_app import FaasAPI
from faas.shared.direct_routes import body_as, body_doc, direct, install_direct_routes
from faas.shared.middleware import InputRulesMiddleware


class Item(BaseModel):
    name: str = Field(min_length=1)
    count: int = 1


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FaasAPI()
    install_error_handlers(app)
    app.add_middleware(InputRulesMiddleware)  # decodes JSON bodies once, as in every faas app

    @app.post("/direct", openapi_extra=body_doc(Item, {"name": "a"}))
    @direct
    async def direct_item(request: Request) -> Response:
        item = await body_as(request, Item)
        return JSONResponse(item.model_dump())

    @app.post("/fastapi")
    async def fastapi_item(item: Item) -> Response:
        return JSONResponse(item.model_dump())

    assert list(install_direct_routes(app)) == [("POST", "/direct")]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"name": "a", "count": 2}', {"content-type": "application/json"}),
        (b'{"name": ""}', {"content-type": "application/json"}),
        (b'{"count": "many"}', {"content-type": "application/json"}),
        (b"[1, 2]", {"content-type": "application/json"}),
        (b'"text"', {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b"", {}),
        (b'{"name": "a"}', {}),
        (b"name=a", {"content-type": "application/x-www-form-urlencoded"}),
        (b'{"name": "a"}', {"content-type": "text/plain"}),
        (b'{"name": ', {"content-type": "application/json"}),
    ],
)
async def test_a_direct_body_answers_as_fastapi_does(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str]
) -> None:
    direct_answer = await client.post("/direct", content=content, headers=headers)
    fastapi_answer = await client.post("/fastapi", content=content, headers=headers)
    assert direct_answer.status_code == fastapi_answer.status_code, direct_answer.text
    if direct_answer.status_code == 200:
        assert direct_answer.json() == fastapi_answer.json()
        return
    mine, theirs = direct_answer.json()["error"], fastapi_answer.json()["error"]
    assert mine["code"] == theirs["code"]
    if "errors" in theirs.get("details", {}):
        locations = [e["loc"] for e in mine["details"]["errors"]]
        assert locations == [e["loc"] for e in theirs["details"]["errors"]]


async def test_the_body_is_documented(client: httpx.AsyncClient) -> None:
    openapi = (await client.get("/openapi.json")).json()
    media = openapi["paths"]["/direct"]["post"]["requestBody"]["content"]["application/json"]
    assert media["example"] == {"name": "a"}
    assert media["schema"]["required"] == ["name"]
