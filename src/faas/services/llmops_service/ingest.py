"""Ingest use cases: gateway usage events from the durable `gateway.usage.*` stream, and
operations external callers post, both as rows of the operations log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from faas.integrations.bus import Message, MessageBus, Subscription
from faas.integrations.codec import Codec, default_registry
from faas.services.gateway_service.models import UsageEvent
from faas.services.llmops_service.models import IngestResult, OperationIn
from faas.services.llmops_service.store import OperationStore
from faas.shared.clock import utcnow
from faas.shared.context import new_id
from faas.shared.database import is_data_rejection

log = logging.getLogger("faas.llmops")

USAGE_SUBJECT: Final = "gateway.usage.*"
USAGE_STREAM: Final = "usage"  # JetStream stream {PREFIX}_USAGE
CONSUMER: Final = "llmops"  # the durable consumer every LLMOps replica shares
USAGE_MAX_AGE_S: Final = 7 * 24 * 3600.0  # unconsumed usage is kept this long
INT4_MAX: Final = 2**31 - 1  # the operations table's token columns are 4-byte integers
# Refusals raised before a row reaches the database: sqlite3's and orjson's for an integer
# beyond 64 bits, the JSON encoder's for values it cannot write.
ENCODER_REJECTED: Final = (OverflowError, TypeError)


def _str(value: Any, limit: int = 128) -> str | None:
    return None if value is None or value is False else str(value)[:limit]


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return utcnow()
    else:
        return utcnow()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def event_row(body: dict[str, Any]) -> dict[str, Any] | None:
    """A `gateway.usage.{tenant}` event body as an operations row (None when malformed)."""
    event_id, tenant = body.get("id"), body.get("tenant_id")
    data = body.get("data")
    if not event_id or not tenant or not isinstance(data, dict):
        return None
    try:
        event = UsageEvent.model_validate(data)
    except ValidationError:
        log.warning("malformed usage event %s", str(event_id)[:64])
        return None
    prompt = min(INT4_MAX, event.prompt_tokens)
    completion = min(INT4_MAX, event.completion_tokens)
    meta = {
        k: getattr(event, k)
        for k in ("usage_source", "upstream_ms", "reasoning_tokens")
        if k in event.model_fields_set
    }
    return {
        "tenant_id": str(tenant)[:64],
        "id": str(event_id)[:64],
        "occurred_at": _moment(body.get("occurred_at")),
        "source": "gateway",
        "operation": event.operation,
        "model": _str(event.model) or "unknown",
        "deployment": _str(event.deployment),
        "provider": _str(event.provider, 64),
        "upstream_model": _str(event.upstream_model),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": min(INT4_MAX, event.total_tokens) or prompt + completion,
        "cached_tokens": min(INT4_MAX, event.cached_tokens),
        "cost_usd": event.cost_usd,
        "latency_ms": event.latency_ms,
        "status": event.status,
        "error_code": _str(event.error_code, 64),
        "cached": bool(event.cached),
        "stream": event.stream,
        "user_id": _str(event.user_id),
        "agent_id": None,
        "correlation_id": _str(event.correlation_id),
        "request_id": _str(event.request_id),
        "metadata": meta or None,
        "key_id": _str(event.key_id, 64),
        "team": _str(event.team),
        # A tag as grouped: `key=value`, or `key` for a plain tag.
        "tags": [f"{k}={v}" if v else k for k, v in event.tags.items()] or None,
    }


def api_row(tenant: str, op: OperationIn, user_id: str | None) -> dict[str, Any]:
    """An operation an external caller logged, as an operations row."""
    meta = dict(op.metadata)
    total = op.total_tokens
    return {
        "tenant_id": tenant,
        "id": op.id or new_id(),
        "occurred_at": (op.occurred_at or utcnow()).astimezone(UTC),
        "source": "api",
        "operation": op.operation,
        "model": op.model,
        "deployment": None,
        "provider": op.provider,
        "upstream_model": None,
        "prompt_tokens": op.prompt_tokens,
        "completion_tokens": op.completion_tokens,
        "total_tokens": total if total is not None else op.prompt_tokens + op.completion_tokens,
        "cached_tokens": op.cached_tokens,
        "cost_usd": op.cost_usd,
        "latency_ms": op.latency_ms,
        "status": op.status,
        "error_code": op.error_code,
        "cached": False,
        "stream": False,
        "user_id": op.user_id or user_id,
        "agent_id": op.agent_id or _str(meta.get("agent_id")),
        "correlation_id": None,
        "request_id": None,
        "metadata": meta or None,
        "key_id": None,
        "team": None,
        "tags": None,
    }


class UsageIngest:
    """Writes operations; counts what it drops, so an operator can see losses."""

    def __init__(
        self, store: OperationStore, bus: MessageBus, codec: Codec, *, batch_rows: int
    ) -> None:
        self.store = store
        self.bus = bus
        self.codec = codec  # for events without a Content-Type this service knows
        self.batch_rows = batch_rows
        self._codecs = default_registry()
        self._subscription: Subscription | None = None
        self.malformed = 0
        self.rejected = 0  # events the database refused (out-of-range values, say)
        self.ingested = 0  # usage events written (duplicates excluded)
        self.batches = 0

    async def start(self) -> None:
        self._subscription = await self.bus.consume_stream(
            USAGE_STREAM,
            [USAGE_SUBJECT],
            CONSUMER,
            self.on_usage,
            batch=self.batch_rows,
            max_age_s=USAGE_MAX_AGE_S,
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def on_usage(self, messages: Sequence[Message]) -> None:
        """A batch of `gateway.usage.*` events → one transaction. Returning acknowledges the
        batch; a database error raises, so the bus redelivers it later and nothing is lost
        (rows are keyed by event id, so a redelivered event is stored once). Malformed events
        are counted and dropped: redelivering them would never help."""
        rows: list[dict[str, Any]] = []
        for message in messages:
            row = self._decode(message)
            if row is None:
                self.malformed += 1
                continue
            rows.append(row)
        if rows:
            inserted = await self.write_isolating(rows)
            self.ingested += len(inserted)
            self.batches += 1

    def _decode(self, message: Message) -> dict[str, Any] | None:
        codec = self._codecs.find(message.headers.get("Content-Type", "")) or self.codec
        try:
            body = codec.decode(message.data)
        except Exception:
            log.warning("undecodable usage event on %s", message.subject)
            return None
        return event_row(body) if isinstance(body, dict) else None

    async def write_isolating(self, rows: list[dict[str, Any]]) -> list[str]:
        """Write a batch; when the database refuses its data, halve it until the rows it
        refuses are alone, and drop (count) those: one bad event must not hold back the batch
        it came with, redelivered forever. Other errors (database down) propagate."""
        try:
            return await self.store.write(rows)
        except Exception as exc:
            if not (isinstance(exc, ENCODER_REJECTED) or is_data_rejection(exc)):
                raise
            if len(rows) == 1:
                self.rejected += 1
                log.warning("usage event %s rejected by the database", rows[0]["id"], exc_info=True)
                return []
        half = len(rows) // 2
        return await self.write_isolating(rows[:half]) + await self.write_isolating(rows[half:])

    async def log_operations(
        self, tenant: str, user_id: str | None, ops: Sequence[OperationIn]
    ) -> IngestResult:
        rows = [api_row(tenant, op, user_id) for op in ops]
        inserted = await self.store.write(rows)
        return IngestResult(
            accepted=len(inserted),
            duplicates=len(rows) - len(inserted),
            ids=[r["id"] for r in rows],
        )
