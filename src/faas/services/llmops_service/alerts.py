"""Alerts the gateway publishes (`gateway.alert.{tenant}`, the gateway's `AlertEvent`), kept per
tenant for the dashboard: consumed from a durable stream every LLMOps replica shares, stored
once per event id (migration 0015), listed newest first, pruned with the operations' retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy import Float, Index, String, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from faas.integrations.bus import Message, MessageBus, Subscription
from faas.integrations.codec import Codec, default_registry
from faas.services.gateway_service.models import AlertEvent
from faas.services.llmops_service.models import AlertView
from faas.shared.clock import utcnow
from faas.shared.database import Base, Database, UTCDateTime

log = logging.getLogger("faas.llmops")

ALERT_SUBJECT: Final = "gateway.alert.*"
ALERT_STREAM: Final = "alerts"  # JetStream stream {PREFIX}_ALERTS
CONSUMER: Final = "llmops-alerts"
PURGE_EVERY_S: Final = 3600.0


class AlertRow(Base):
    __tablename__ = "llmops_alerts"
    __table_args__ = (Index("ix_llmops_alerts_tenant_time", "tenant_id", "occurred_at"),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    level: Mapped[str] = mapped_column(String(32), nullable=False)
    budget: Mapped[str | None] = mapped_column(String(16))
    window: Mapped[str] = mapped_column(String(32), nullable=False)
    threshold: Mapped[float] = mapped_column(Float, nullable=False)
    limit_usd: Mapped[float] = mapped_column(Float, nullable=False)
    spent_usd: Mapped[float] = mapped_column(Float, nullable=False)
    baseline_usd: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(String(512), nullable=False)


def alert_row(body: dict[str, Any], moment: datetime) -> dict[str, Any] | None:
    """A `gateway.alert.{tenant}` event body as a row (None when malformed)."""
    event_id, tenant, data = body.get("id"), body.get("tenant_id"), body.get("data")
    if not event_id or not tenant or not isinstance(data, dict):
        return None
    try:
        alert = AlertEvent.model_validate(data)
    except ValidationError:
        log.warning("malformed alert event %s", str(event_id)[:64])
        return None
    return {
        "tenant_id": str(tenant)[:64],
        "id": str(event_id)[:64],
        "occurred_at": moment,
        "kind": alert.kind,
        "level": alert.level,
        "budget": alert.budget,
        "window": alert.window[:32],
        "threshold": alert.threshold,
        "limit_usd": alert.limit,
        "spent_usd": alert.spent,
        "baseline_usd": alert.baseline,
        "message": alert.message[:512],
    }


class AlertLog:
    def __init__(self, db: Database, bus: MessageBus, codec: Codec, *, retention_days: int) -> None:
        self.db = db
        self.bus = bus
        self.codec = codec
        self.retention_days = retention_days
        self._codecs = default_registry()
        self._subscription: Subscription | None = None
        self._purger: asyncio.Task[None] | None = None
        self.stored = 0

    async def start(self, *, consume: bool) -> None:
        if consume:
            self._subscription = await self.bus.consume_stream(
                ALERT_STREAM, [ALERT_SUBJECT], CONSUMER, self.on_alerts, batch=100
            )
        if self.retention_days > 0:
            self._purger = asyncio.create_task(self._purge_loop(), name="llmops-alerts-ttl")

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None

    async def on_alerts(self, messages: Sequence[Message]) -> None:
        """A batch of alerts → one transaction; a database error raises (redelivered)."""
        rows = [row for row in map(self._decode, messages) if row is not None]
        if rows:
            self.stored += await self.write(rows)

    def _decode(self, message: Message) -> dict[str, Any] | None:
        codec = self._codecs.find(message.headers.get("Content-Type", "")) or self.codec
        try:
            body = codec.decode(message.data)
        except Exception:
            log.warning("undecodable alert event on %s", message.subject)
            return None
        if not isinstance(body, dict):
            return None
        occurred = body.get("occurred_at")
        moment = occurred if isinstance(occurred, datetime) else _parse(occurred)
        return alert_row(body, moment)

    async def write(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert alerts not stored yet (same tenant and id); the number inserted."""
        dialect = sqlite if self.db.is_sqlite else postgresql
        statement = dialect.insert(AlertRow).on_conflict_do_nothing(
            index_elements=["tenant_id", "id"]
        )
        async with self.db.session() as session:
            result = await session.execute(statement.returning(AlertRow.id), list(rows))
            return len(result.all())

    async def list(self, tenant: str, *, limit: int, since: datetime | None) -> list[AlertView]:
        query = select(AlertRow).where(AlertRow.tenant_id == tenant)
        if since is not None:
            since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
            query = query.where(AlertRow.occurred_at >= since)
        query = query.order_by(AlertRow.occurred_at.desc(), AlertRow.id).limit(limit)
        async with self.db.session() as session:
            rows = (await session.execute(query)).scalars().all()
        return [AlertView.model_validate(row, from_attributes=True) for row in rows]

    async def purge(self, now: datetime | None = None) -> int:
        cutoff = (now or utcnow()) - timedelta(days=self.retention_days)
        async with self.db.session() as session:
            result = await session.execute(delete(AlertRow).where(AlertRow.occurred_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("llmops alert retention failed")
            await asyncio.sleep(PURGE_EVERY_S)


def _parse(value: Any) -> datetime:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                return moment
    return utcnow()
