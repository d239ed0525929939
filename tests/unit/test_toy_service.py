"""Adding a service takes a spec, a class and a router: this toy one is built, wired and served
by the same code as the real nine, from nothing but what its spec declares (docs/architecture.md,
"Add a service", follows it step by step)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.kernel import Platform, ServiceRegistry, ServiceSpec
from faas.runtime import Runtime
from faas.services import REGISTRY
from faas.services.cache_service.client import CacheClient
from faas.services.cache_service.models import CacheSetRequest
from faas.shared.api import caller, respond
from faas.shared.config import ConfigError, Settings
from faas.shared.exceptions import NotFound
from tests.conftest import TEST_SECRET, auth


class Note(BaseModel):
    text: str


class NotesService:
    """Keeps one note per tenant in the cache service, through its typed client."""

    name = "notes"

    def __init__(self, platform: Platform) -> None:
        self.cache = CacheClient(platform.clients)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def save(self, note: Note) -> None:
        await self.cache.set(
            CacheSetRequest(key="note", value=note.model_dump(), namespace="notes")
        )

    async def load(self) -> Note:
        entry = await self.cache.get("note", namespace="notes")
        if not entry.found:
            raise NotFound("no note yet")
        return Note.model_validate(entry.value)


def notes_routes(service: NotesService) -> APIRouter:
    router = APIRouter(prefix="/api/v1/notes", tags=["notes"])

    @router.put("")
    async def save_note(note: Note) -> object:
        await service.save(note)
        return respond({"saved": True, "tenant": caller().tenant_id})

    @router.get("")
    async def load_note() -> object:
        return respond(await service.load())

    @router.get("/public/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "notes"}

    return router


NOTES = ServiceSpec(
    name="notes",
    port=8100,
    summary="Notes kept in the cache",
    build=NotesService,
    routes=notes_routes,
    calls=("cache",),
    public_paths=frozenset({"/api/v1/notes/public/ping"}),
    body_limits=lambda settings: {"/api/v1/notes": 64},
)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    registry = ServiceRegistry([*REGISTRY, NOTES])
    settings = Settings(data_dir=tmp_path / "data", jwt_secret=TEST_SECRET, log_requests=False)
    registry.check(settings)
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    services = [registry[name].build(runtime) for name in ("cache", "notes")]
    app = create_service_app(services, runtime, registry=registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://faas.test") as client:
            yield client


async def test_a_toy_service_is_served_from_its_spec(served: httpx.AsyncClient) -> None:
    saved = await served.put("/api/v1/notes", json={"text": "hi"}, headers=auth("acme"))
    assert saved.status_code == 200, saved.text
    assert saved.json()["data"] == {"saved": True, "tenant": "acme"}
    # It called the cache service in-process, through the cache's typed client.
    loaded = await served.get("/api/v1/notes", headers=auth("acme"))
    assert loaded.json()["data"] == {"text": "hi"}
    # Another tenant sees no note: the cache is tenant-scoped behind the typed client too.
    missing = await served.get("/api/v1/notes", headers=auth("other"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_what_the_spec_declares_is_what_the_app_does(served: httpx.AsyncClient) -> None:
    assert (await served.get("/api/v1/notes/public/ping")).json() == {"pong": "notes"}
    assert (await served.get("/api/v1/notes")).status_code == 401
    big = await served.put("/api/v1/notes", json={"text": "x" * 100}, headers=auth("acme"))
    assert big.status_code == 413
    ready = (await served.get("/readyz")).json()
    assert ready["services"] == ["cache", "notes"]
    paths = (await served.get("/openapi.json")).json()["paths"]
    assert "/api/v1/notes" in paths


def test_the_registry_refuses_a_clash_and_names_unknown_services() -> None:
    with pytest.raises(ValueError, match="share a port"):
        ServiceRegistry([*REGISTRY, NOTES, NOTES.__class__(**{**vars(NOTES), "name": "x"})])
    with pytest.raises(ValueError, match="calls unknown services"):
        ServiceRegistry([NOTES])
    registry = ServiceRegistry([*REGISTRY, NOTES])
    with pytest.raises(ConfigError) as refused:
        registry.check(Settings(services=["notse"], service_urls={"note": "http://x"}))
    assert refused.value.problems == [
        "FAAS_SERVICES='notse' is not allowed: unknown service 'notse' (did you mean "
        f"'notes'?); known: {', '.join(registry.names)}",
        "FAAS_NOTE_URL='http://x' is not allowed: unknown service 'note' (did you mean "
        f"'notes'?); known: {', '.join(registry.names)}",
    ]


def test_a_service_url_variable_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAAS_NOTES_URL", "http://notes:8100")
    settings = Settings()
    assert settings.service_url("notes") == "http://notes:8100"
    assert settings.service_url("cache") is None
    assert ServiceRegistry([*REGISTRY, NOTES]).check(settings) is None
    with pytest.raises(ConfigError, match="FAAS_NOTES_URL"):
        REGISTRY.check(settings)
