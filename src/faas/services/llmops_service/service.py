"""The LLMOps service: ingest usage operations (gateway events and external callers), keep
the rollups current, prune old operations, and answer operations, metrics and cost-analysis
queries. A facade over one module per use case."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from faas.integrations.bus import MessageBus
from faas.integrations.events import EventPublisher
from faas.services.llmops_service.alerts import AlertLog
from faas.services.llmops_service.attribution import AttributionKey, UsageAttribution, usage_by
from faas.services.llmops_service.ingest import UsageIngest
from faas.services.llmops_service.models import (
    AlertView,
    CostAnalysis,
    GroupBy,
    IngestResult,
    OperationIn,
    OperationView,
)
from faas.services.llmops_service.queries import OperationFilter, OperationQueries, TenantBreakdown
from faas.services.llmops_service.retention import Retention
from faas.services.llmops_service.store import OperationStore
from faas.services.llmops_service.traces import TraceStore
from faas.shared.contracts import Page
from faas.shared.database import Database


class LlmopsService:
    name = "llmops"

    def __init__(
        self,
        *,
        db: Database,
        bus: MessageBus,
        events: EventPublisher,
        retention_days: int = 90,
        batch_rows: int = 1000,
        consume: bool = True,
    ) -> None:
        self.db = db
        self.bus = bus
        self.events = events
        self.consume = consume
        self.store = OperationStore(db)
        self.ingest = UsageIngest(self.store, bus, events.codec, batch_rows=batch_rows)
        self.queries = OperationQueries(db)
        self.retention = Retention(db, retention_days)
        self.alerts = AlertLog(db, bus, events.codec, retention_days=retention_days)
        self.traces = TraceStore(db)
        self.retention.also(lambda now: self.traces.purge(retention_days, now))

    async def start(self) -> None:
        if self.consume:
            await self.ingest.start()
        self.retention.start()
        await self.alerts.start(consume=self.consume)

    async def stop(self) -> None:
        await self.ingest.stop()
        await self.retention.stop()
        await self.alerts.stop()

    @property
    def batches(self) -> int:
        """Usage batches written so far (a test or benchmark waits for the next one)."""
        return self.ingest.batches

    @property
    def rejected(self) -> int:
        """Usage events the database refused and that were dropped."""
        return self.ingest.rejected

    async def _write_isolating(self, rows: list[dict[str, Any]]) -> list[str]:
        return await self.ingest.write_isolating(rows)

    async def log_operations(
        self, tenant: str, user_id: str | None, ops: Sequence[OperationIn]
    ) -> IngestResult:
        return await self.ingest.log_operations(tenant, user_id, ops)

    async def list_alerts(
        self, tenant: str, *, limit: int = 50, since: datetime | None = None
    ) -> list[AlertView]:
        """The tenant's gateway alerts, newest first."""
        return await self.alerts.list(tenant, limit=limit, since=since)

    async def purge(self, now: datetime | None = None) -> int:
        return await self.retention.purge(now)

    async def list_operations(
        self, tenant: str, where: OperationFilter, *, limit: int = 50, offset: int = 0
    ) -> Page[OperationView]:
        return await self.queries.list_operations(tenant, where, limit=limit, offset=offset)

    async def metrics(
        self,
        tenant: str,
        start: datetime,
        end: datetime,
        group_by: GroupBy,
        *,
        model: str | None = None,
        operation: str | None = None,
    ) -> dict[str, Any]:
        return await self.queries.metrics(
            tenant, start, end, group_by, model=model, operation=operation
        )

    async def cost_analysis(
        self, tenant: str, start: datetime, end: datetime, *, by_tenant: TenantBreakdown = None
    ) -> CostAnalysis:
        return await self.queries.cost_analysis(tenant, start, end, by_tenant=by_tenant)

    async def usage_by(
        self, tenant: str, group_by: AttributionKey, start: datetime, end: datetime
    ) -> UsageAttribution:
        """Spend attribution: calls, tokens and cost by key, user, team or tag."""
        return await usage_by(self.db, tenant, group_by, start, end)
