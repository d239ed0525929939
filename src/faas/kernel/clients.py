"""Clients of the other services: `ServiceClients` hands out one `ServiceClient` per target
service, and `ApiClient` is the base of each service's typed `client.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import orjson
from opentelemetry.trace import Tracer
from pydantic import BaseModel
from starlette.types import ASGIApp

from faas.shared.breaker import CircuitBreaker
from faas.shared.config import Settings
from faas.shared.exceptions import DependencyUnavailable, UpstreamError
from faas.shared.http_client import ServiceClient, raise_for_error
from faas.shared.sse import read_sse

M = TypeVar("M", bound=BaseModel)


@dataclass
class ServiceClients:
    """One `ServiceClient` per target service: over HTTP when FAAS_<NAME>_URL is set, else
    in-process through the ASGI app that hosts the target (no socket, same code path)."""

    settings: Settings
    tracer: Tracer | None = None
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
        options = {
            "timeout_s": self.settings.client_timeout_s,
            "retries": self.settings.client_retries,
            "breaker": breaker,
            "tracer": self.tracer,
        }
        if url:
            client = ServiceClient(name, base_url=url, **options)  # type: ignore[arg-type]
        elif self.local_app is not None and name in self.local_services:
            client = ServiceClient(name, asgi_app=self.local_app, **options)  # type: ignore[arg-type]
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


class ApiClient:
    """The base of a service's typed client (`<service>/client.py`): methods named after use
    cases, taking and returning the service's own models, raising the shared errors.

    The HTTP client is looked up on each call, so a client can be built before the service it
    calls is reachable (and a missing FAAS_<NAME>_URL is reported when it is first needed).
    """

    service: ClassVar[str]

    def __init__(self, clients: ServiceClients) -> None:
        self._clients = clients

    @property
    def http(self) -> ServiceClient:
        return self._clients.get(self.service)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The response body, errors raised as the shared exceptions."""
        response = await self.http.request(
            method,
            path,
            json=json,
            params=params,
            idempotency_key=idempotency_key,
            timeout_s=timeout_s,
            headers=headers,
        )
        raise_for_error(response, self.service)
        try:
            # orjson: httpx's stdlib json took ~1.3 µs per float, and an embeddings answer
            # of 256 chunks carries ~100k of them (measured 4x faster, bench/ingestion.py).
            return orjson.loads(response.content)
        except ValueError as exc:
            raise UpstreamError(
                f"the {self.service} service answered with a body that is not JSON"
            ) from exc

    async def data(self, method: str, path: str, **kwargs: Any) -> Any:
        """The `data` of a `ServiceResponse` envelope (the /api/v1 routes)."""
        body = await self.call(method, path, **kwargs)
        if not isinstance(body, dict) or "data" not in body:
            raise UpstreamError(f"the {self.service} service answered without a data envelope")
        return body["data"]

    async def model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """The envelope's `data` validated as `model`."""
        return model.model_validate(await self.data(method, path, **kwargs))

    @asynccontextmanager
    async def events(
        self,
        path: str,
        *,
        json: Any = None,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """POST `json` and read the server-sent events of the answer (an error status is raised
        before the first event)."""
        stream = self.http.stream("POST", path, json=json, timeout_s=timeout_s, headers=headers)
        async with stream as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_error(response, self.service)
            yield read_sse(response)
