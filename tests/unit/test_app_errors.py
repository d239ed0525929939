"""Errors that escape a route are rendered by the app's handlers, never as a bare 500 page."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi import APIRouter
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from faas.shared.config import Settings
from tests.cache_app import build_cache_app
from tests.conftest import auth, open_client


async def test_a_busy_database_is_503_with_retry_after(
    make_settings: Callable[..., Settings],
) -> None:
    app = build_cache_app(make_settings())
    router = APIRouter()

    @router.get("/api/v1/locked")
    async def locked() -> None:
        raise OperationalError("UPDATE jobs ...", {}, Exception("database is locked"))

    @router.get("/api/v1/closed")
    async def closed() -> None:  # the server closed it before the loop read the close
        lost = Exception("connection was closed in the middle of operation")
        raise DBAPIError("SELECT ...", {}, lost, connection_invalidated=True)

    @router.get("/api/v1/misused")
    async def misused() -> None:
        raise ProgrammingError("SELECT ...", {}, Exception("syntax error"))

    @router.get("/api/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    app.router.routes.extend(router.routes)
    async for client in open_client(app):
        response = await client.get("/api/v1/locked", headers=auth("acme"))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "dependency_unavailable"
        lost = await client.get("/api/v1/closed", headers=auth("acme"))
        assert lost.status_code == 503 and lost.headers["retry-after"] == "1"
        broken = await client.get("/api/v1/misused", headers=auth("acme"))
        assert broken.status_code == 500 and "syntax" not in broken.text
        crashed = await client.get("/api/v1/boom", headers=auth("acme"))
        assert crashed.status_code == 500
        assert crashed.json()["error"]["message"] == "Internal server error"
        assert "secret" not in crashed.text
        assert isinstance(crashed, httpx.Response)


def test_the_longest_error_renderer_prefix_wins() -> None:
    from faas.app_errors import by_prefix
    from faas.shared.exceptions import NotFound

    def named(name: str) -> Callable[..., tuple[bytes, str]]:
        return lambda scope, exc: (name.encode(), "text/plain")

    # The shorter prefix is declared first, as the gateway declares OpenAI's "/v1/" first.
    render = by_prefix({"/v1/": named("openai"), "/v1/messages": named("anthropic")}, named("x"))
    error = NotFound("gone")
    assert render({"path": "/v1/messages/count_tokens"}, error)[0] == b"anthropic"
    assert render({"path": "/v1/chat/completions"}, error)[0] == b"openai"
    assert render({"path": "/api/v1/cache/k"}, error)[0] == b"x"
