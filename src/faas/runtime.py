"""The composition root: builds the shared resources (database, key/value store, service
clients, telemetry, token verifier) that services are constructed from."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from starlette.types import ASGIApp

from faas.backends.kv import KeyValueStore, build_kv
from faas.shared.auth import TokenVerifier
from faas.shared.config import Settings
from faas.shared.database import Database
from faas.shared.exceptions import DependencyUnavailable
from faas.shared.http_client import CircuitBreaker, ServiceClient

log = logging.getLogger("faas.runtime")


@dataclass
class ServiceClients:
    """One `ServiceClient` per target service: over HTTP when FAAS_<NAME>_URL is set, else
    in-process through the ASGI app that hosts the target (no socket, same code path)."""

    settings: Settings
    local_app: ASGIApp | None = None
    local_services: frozenset[str] = frozenset()
    _clients: dict[str, ServiceClient] = field(default_factory=dict)

    def bind_local(self, app: ASGIApp, services: frozenset[str]) -> None:
        self.local_app = app
        self.local_services = services

    def get(self, name: str) -> ServiceClient:
        client = self._clients.get(name)
        if client is not None:
            return client
        url = self.settings.service_url(name)
        breaker = CircuitBreaker(
            failure_threshold=self.settings.breaker_failures,
            cooldown_s=self.settings.breaker_cooldown_s,
        )
        common = {
            "timeout_s": self.settings.client_timeout_s,
            "retries": self.settings.client_retries,
            "breaker": breaker,
        }
        if url:
            client = ServiceClient(name, base_url=url, **common)  # type: ignore[arg-type]
        elif self.local_app is not None and name in self.local_services:
            client = ServiceClient(name, asgi_app=self.local_app, **common)  # type: ignore[arg-type]
        else:
            raise DependencyUnavailable(
                f"the {name} service is not reachable: set FAAS_{name.upper()}_URL",
                details={"service": name},
            )
        self._clients[name] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


@dataclass
class Runtime:
    settings: Settings
    db: Database
    kv: KeyValueStore
    clients: ServiceClients
    verifier: TokenVerifier | None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        settings.check_runnable()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            settings=settings,
            db=Database(settings.effective_database_url),
            kv=build_kv(settings),
            clients=ServiceClients(settings),
            verifier=TokenVerifier(settings) if settings.auth == "jwt" else None,
        )

    @property
    def backends(self) -> dict[str, str]:
        return {"database": self.db.backend, "kv": self.kv.backend}

    async def start(self) -> None:
        if self.settings.env == "development":
            await self.db.migrate()

    async def close(self) -> None:
        await self.clients.aclose()
        await self.kv.close()
        await self.db.close()

    async def readiness(self) -> dict[str, bool]:
        return {"database": await self.db.ping(), "kv": await self.kv.ping()}
