"""The composition root: builds the shared resources (database, key/value store, message bus,
jobs, service clients, telemetry, token verifier) that services are constructed from."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from faas.backends.kv import KeyValueStore, build_kv
from faas.integrations.bus import MessageBus, build_bus
from faas.integrations.codec import default_registry
from faas.integrations.events import EventPublisher
from faas.integrations.otel import Telemetry, setup_telemetry
from faas.jobs import JobQueue, JobRegistry, JobWorker, RetryPolicy
from faas.kernel.clients import ServiceClients
from faas.keys import ApiKeys
from faas.shared.auth import TokenVerifier, mint_token, signing_secret
from faas.shared.config import Settings
from faas.shared.context import Identity
from faas.shared.cpu import CpuPool
from faas.shared.database import Database
from faas.shared.exceptions import DependencyUnavailable

log = logging.getLogger("faas.runtime")


@dataclass
class Runtime:
    settings: Settings
    telemetry: Telemetry
    db: Database
    kv: KeyValueStore
    bus: MessageBus
    events: EventPublisher
    jobs: JobQueue
    clients: ServiceClients
    verifier: TokenVerifier | None
    keys: ApiKeys
    worker: JobWorker | None = None
    cpu: CpuPool = field(default_factory=CpuPool)

    @classmethod
    def build(cls, settings: Settings, *, telemetry: Telemetry | None = None) -> Runtime:
        settings.check_runnable()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        name = settings.service_name
        telemetry = telemetry or setup_telemetry(name if name == "faas" else f"faas-{name}")
        url = settings.effective_database_url
        sized = not url.startswith("sqlite")  # the pool settings are PostgreSQL's
        db = Database(
            url,
            pool_size=settings.database_pool_size if sized else None,
            max_overflow=settings.database_pool_overflow if sized else None,
        )
        bus = build_bus(settings, meter=telemetry.meter, tracer=telemetry.tracer)
        events = EventPublisher(bus, default_registry().get(settings.codec))
        keys = ApiKeys(db, bus, events)
        # `fk-` bearer tokens are API keys, resolved by `keys`; the others are JWTs.
        jwt_mode = settings.auth == "jwt"
        return cls(
            settings=settings,
            telemetry=telemetry,
            db=db,
            kv=build_kv(settings),
            bus=bus,
            events=events,
            jobs=JobQueue(db, bus, JobRegistry(), retry=RetryPolicy.from_settings(settings)),
            clients=ServiceClients(settings, tracer=telemetry.tracer),
            verifier=TokenVerifier(settings, keys=keys.resolver) if jwt_mode else None,
            keys=keys,
            cpu=CpuPool(settings.cpu_workers),
        )

    @property
    def meter(self) -> Meter:
        return self.telemetry.meter

    @property
    def tracer(self) -> Tracer:
        return self.telemetry.tracer

    @property
    def backends(self) -> dict[str, str]:
        return {"database": self.db.backend, "kv": self.kv.backend, "bus": self.bus.backend}

    def load_job_modules(self) -> None:
        """Import FAAS_JOB_MODULES; each exposes `register(runtime)` to add its job kinds."""
        for name in self.settings.job_modules:
            module = importlib.import_module(name)
            module.register(self)

    async def start(self, *, run_worker: bool | None = None) -> None:
        if self.settings.env == "development" and self.settings.migrate_on_start:
            await self.db.migrate()
        await self.bus.start()
        await self.keys.start()
        wanted = self.settings.run_worker if run_worker is None else run_worker
        if wanted and self.jobs.registry.kinds:
            await self.start_worker()

    async def start_worker(self, kinds: list[str] | None = None) -> JobWorker:
        self.worker = JobWorker(
            self.jobs,
            self.bus,
            self.jobs.registry,
            concurrency=self.settings.job_concurrency,
            lease_s=2 * self.settings.job_ack_wait_s,
            meter=self.telemetry.meter,
            tracer=self.telemetry.tracer,
        )
        await self.worker.start(kinds)
        return self.worker

    async def stop_worker(self) -> None:
        """Stop taking jobs and let running ones end, while the services they use still run."""
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None

    async def close(self) -> None:
        await self.stop_worker()
        await self.clients.aclose()
        await self.keys.stop()
        await self.bus.close()
        await self.kv.close()
        await self.db.close()
        self.cpu.shutdown()
        self.telemetry.shutdown()

    def service_identity(self, tenant_id: str, user_id: str | None) -> Identity:
        """The identity background work uses to call other services for a tenant: a short-lived
        token signed with the deployment's secret (JWT mode), or headers alone otherwise."""
        if self.settings.auth != "jwt":
            return Identity(tenant_id=tenant_id, user_id=user_id)
        secret = signing_secret(self.settings)
        if secret is None:
            raise DependencyUnavailable(
                "background jobs need FAAS_JWT_SECRET to call other services "
                "(asymmetric keys can verify tokens but not sign them)"
            )
        token = mint_token(
            secret,
            tenant_id=tenant_id,
            user_id=user_id or "faas-worker",
            ttl_s=900,
            scopes=["service"],
        )
        return Identity(
            tenant_id=tenant_id, user_id=user_id, scopes=frozenset({"service"}), token=token
        )

    async def readiness(self) -> dict[str, bool]:
        checks = {"database": await self.db.ping(), "kv": await self.kv.ping()}
        if self.bus.backend == "nats":
            checks["nats"] = await self.bus.ping()
        return checks
