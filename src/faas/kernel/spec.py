"""What a service declares about itself, and what it is built from.

A service is one `ServiceSpec`: its name and port, how to build it from the platform's shared
resources, how to route HTTP to it, which other services it calls and which backends it uses,
and what it needs from the app around it (public paths, larger body limits, its own error shape
under a path prefix). The app, the CLI and the deployment tooling read the spec; none of them
knows a service by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from fastapi import APIRouter
from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from faas.shared.api import Service
from faas.shared.config import Settings
from faas.shared.context import Identity
from faas.shared.middleware import ErrorRenderer

if TYPE_CHECKING:
    from faas.backends.kv import KeyValueStore
    from faas.integrations.bus import MessageBus
    from faas.integrations.events import EventPublisher
    from faas.jobs import JobQueue
    from faas.kernel.clients import ServiceClients
    from faas.shared.cpu import CpuPool
    from faas.shared.database import Database

Backend = Literal["database", "kv", "bus", "vectors", "jobs", "cpu"]
S = TypeVar("S", bound=Service)


class Platform(Protocol):
    """The shared resources a service is built from (the runtime provides them)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def db(self) -> Database: ...
    @property
    def kv(self) -> KeyValueStore: ...
    @property
    def bus(self) -> MessageBus: ...
    @property
    def events(self) -> EventPublisher: ...
    @property
    def jobs(self) -> JobQueue: ...
    @property
    def clients(self) -> ServiceClients: ...
    @property
    def cpu(self) -> CpuPool: ...
    @property
    def meter(self) -> Meter: ...
    @property
    def tracer(self) -> Tracer: ...

    def service_identity(self, tenant_id: str, user_id: str | None) -> Identity:
        """The identity background work uses to call other services for a tenant."""
        ...


@dataclass(frozen=True)
class ServiceSpec(Generic[S]):
    """One service, as the platform sees it. `port` is fixed per service (never derived from
    the order of registration), so adding a service never moves another."""

    name: str
    port: int
    summary: str
    build: Callable[[Platform], S]
    # The service's HTTP routes; handlers translate HTTP to one use-case call of the service.
    routes: Callable[[S], APIRouter]
    calls: tuple[str, ...] = ()
    uses: tuple[Backend, ...] = ()
    job_kinds: tuple[str, ...] = ()
    public_paths: frozenset[str] = frozenset()
    # Paths that take larger bodies than FAAS_MAX_BODY_BYTES (uploads), from the settings.
    body_limits: Callable[[Settings], Mapping[str, int]] | None = None
    # A path prefix whose errors follow another API's shape (the OpenAI-compatible routes).
    error_renderers: Mapping[str, ErrorRenderer] = field(default_factory=dict)
    # Extra facts for /readyz and the start-up banner (e.g. the models the service uses).
    describe: Callable[[Settings], Mapping[str, Any]] | None = None
