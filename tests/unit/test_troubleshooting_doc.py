"""docs/troubleshooting.md covers what faas actually emits: every stable error code (collected
from the error classes and from every `code = "..."` in the source, not from a hand list) and
every readiness state and check that /readyz reports, as reported by a running app."""

from __future__ import annotations

import inspect
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import faas
from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services import REGISTRY
from faas.shared import exceptions
from faas.shared.config import Settings
from tests.conftest import open_client

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "troubleshooting.md").read_text()
CODE_ASSIGNMENT = re.compile(r'\bcode = "([a-z_]+)"')


def documented(term: str) -> bool:
    return f"`{term}`" in PAGE


def exception_codes() -> set[str]:
    return {
        cls.code
        for _, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, exceptions.FaaSError)
    }


def source_codes() -> set[str]:
    package = Path(faas.__file__).parent
    return {
        code for path in package.rglob("*.py") for code in CODE_ASSIGNMENT.findall(path.read_text())
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def readiness(settings: Settings) -> dict[str, Any]:
    """/readyz of an app with RAG (which adds its own check) and the cache."""
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    services = [REGISTRY[name].build(runtime) for name in ("cache", "rag")]
    async for client in open_client(create_service_app(services, runtime)):
        return dict((await client.get("/readyz")).json())
    raise AssertionError("the app did not start")


def test_every_error_class_code_is_documented() -> None:
    codes = exception_codes()
    assert {"internal_error", "dependency_unavailable"} <= codes
    assert sorted(code for code in codes if not documented(code)) == []


def test_every_code_set_elsewhere_in_the_source_is_documented() -> None:
    codes = source_codes() - exception_codes()
    assert {"artifact_corrupt", "method_not_allowed"} <= codes
    assert sorted(code for code in codes if not documented(code)) == []


@pytest.mark.parametrize(
    ("backends", "status"),
    [
        ({}, "ready"),
        ({"nats_url": "closed"}, "degraded"),
        ({"nats_url": "closed", "redis_url": "closed"}, "not_ready"),
    ],
)
async def test_every_readiness_state_and_check_is_documented(
    make_settings: Callable[..., Settings], backends: dict[str, str], status: str
) -> None:
    schemes = {"nats_url": "nats", "redis_url": "redis"}
    urls = {key: f"{schemes[key]}://127.0.0.1:{closed_port()}" for key in backends}
    body = await readiness(make_settings(**urls))
    assert body["status"] == status
    assert {"database", "kv", "rag_vectors"} <= body["checks"].keys()
    assert documented(status)
    assert [check for check in body["checks"] if not documented(check)] == []
