"""Spend alerts: soft budget thresholds and spend anomalies, published as
`gateway.alert.{tenant}` events (and POSTed to the alert webhook when one is configured).

Nothing here runs on the request path. Each reconciled cost is handed to `AlertMonitor.note`
(`Admission.on_spend`): a dict add into the tenant's minute bucket. A timer
(`FAAS_ALERT_INTERVAL_S`) then checks, for the tenants that spent since the last tick, the
shared budget counters (one `remaining` read of the limit store, which every replica updates)
against the tenant's `alert_thresholds`, and every tenant's recent minute buckets against its
trailing hour. Replicas may both see a crossing: the one that stores the alert's key first
(`set_if_absent`, kept for the rest of the window) publishes it, so each (budget, threshold,
window) and each anomaly window is published once.

Anomalies use this replica's own minute buckets (no shared counter per minute exists): behind a
balancer every replica sees its share of a tenant's traffic, so the ratio holds, but the floor
applies to the replica's share. A replica judges anomalies only once it has watched a whole
trailing hour plus a window, so a restart never reads as a spike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from faas.backends.kv import KeyValueStore
from faas.backends.limits import LimitStore, Windows
from faas.integrations.events import EventPublisher
from faas.services.gateway_service.alerts_webhook import AlertWebhook
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.models import AlertEvent
from faas.services.gateway_service.pipeline import ChatPipeline
from faas.services.gateway_service.tenant_limits import TenantLimitsStore
from faas.shared.clock import utcnow
from faas.shared.config import Settings
from faas.shared.pinned_fetch import Allowlist

log = logging.getLogger("faas.gateway.alerts")

TRAILING_MIN = 60
LimitsOf = Callable[[str], Awaitable[TenantLimits]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    """Spend in the last `window_min` minutes above `factor` times the trailing hour's rate
    for as long, and at least `floor_usd`, is an anomaly."""

    window_min: int = 5
    factor: float = 3.0
    floor_usd: float = 1.0


def minute_label(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%MZ")


def detect_anomaly(
    buckets: dict[int, float], now_minute: int, rule: AnomalyRule
) -> AlertEvent | None:
    """The anomaly in a tenant's minute buckets (USD per UTC minute number) at `now_minute`, if
    any. The recent window ends with the current minute; the trailing hour precedes it."""
    first_recent = now_minute - rule.window_min + 1
    recent = sum(v for m, v in buckets.items() if first_recent <= m <= now_minute)
    trailing = sum(v for m, v in buckets.items() if first_recent - TRAILING_MIN <= m < first_recent)
    baseline = trailing / TRAILING_MIN
    limit = max(rule.floor_usd, rule.factor * baseline * rule.window_min)
    if recent < rule.floor_usd or recent <= limit:
        return None
    window = minute_label(now_minute - now_minute % rule.window_min)
    return AlertEvent(
        kind="spend_anomaly",
        window=window,
        threshold=rule.factor,
        limit=round(limit, 6),
        spent=round(recent, 6),
        baseline=round(baseline, 6),
        message=(
            f"spent {recent:.4f} USD in {rule.window_min} min, over {rule.factor:g}x the "
            f"trailing hour's rate ({baseline:.4f} USD/min)"
        ),
    )


def crossed_budgets(
    caps: TenantLimits, used: dict[str, float], windows: Windows
) -> list[AlertEvent]:
    """Every (budget, threshold) the tenant's spend in the current windows has reached."""
    found: list[AlertEvent] = []
    for budget, cap, spent, window in (
        ("daily", caps.daily_budget_usd, used.get("usd_today", 0.0), windows.day),
        ("monthly", caps.monthly_budget_usd, used.get("usd_this_month", 0.0), windows.month),
    ):
        if not cap:  # no budget, or a zero budget that refuses every paid call
            continue
        for threshold in sorted(set(caps.alert_thresholds)):
            if spent >= threshold * cap:
                found.append(
                    AlertEvent(
                        kind="budget_threshold",
                        budget=budget,
                        window=window,
                        threshold=threshold,
                        limit=cap,
                        spent=round(spent, 6),
                        message=(
                            f"{budget} budget {threshold * 100:.4g}% reached: {spent:.4f} of "
                            f"{cap:g} USD spent in {window}"
                        ),
                    )
                )
    return found


class SpendHistory:
    """Per-tenant USD per UTC minute, as this replica reconciled it; kept for the trailing hour
    and one window."""

    def __init__(self, keep_min: int) -> None:
        self.keep_min = keep_min
        self.buckets: dict[str, dict[int, float]] = {}

    def add(self, tenant: str, minute: int, cost: float) -> None:
        buckets = self.buckets.get(tenant)
        if buckets is None:
            buckets = self.buckets[tenant] = {}
        buckets[minute] = buckets.get(minute, 0.0) + cost

    def prune(self, now_minute: int) -> None:
        oldest = now_minute - self.keep_min
        for tenant in list(self.buckets):
            buckets = self.buckets[tenant]
            for minute in [m for m in buckets if m < oldest]:
                del buckets[minute]
            if not buckets:
                del self.buckets[tenant]


class AlertMonitor:
    def __init__(
        self,
        *,
        limits: LimitStore,
        limits_of: LimitsOf,
        kv: KeyValueStore,
        events: EventPublisher,
        rule: AnomalyRule,
        interval_s: float,
        webhook: AlertWebhook | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.limits = limits
        self.limits_of = limits_of
        self.kv = kv
        self.events = events
        self.rule = rule
        self.interval_s = interval_s
        self.webhook = webhook
        self.clock = clock
        self.history = SpendHistory(TRAILING_MIN + rule.window_min)
        self._active: set[str] = set()
        self._since = clock()
        self._task: asyncio.Task[None] | None = None

    def note(self, tenant: str, cost: float) -> None:
        """A reconciled cost (the request path's only part: no await, no I/O)."""
        self.history.add(tenant, int(self.clock() // 60), cost)
        self._active.add(tenant)

    async def check(self) -> list[AlertEvent]:
        """One tick: the alerts published now (each once across replicas)."""
        now = self.clock()
        published: list[AlertEvent] = []
        active, self._active = self._active, set()
        for tenant in active:
            try:
                published += await self._check_budgets(tenant, now)
            except Exception:
                self._active.add(tenant)  # checked again at the next tick
                log.warning("budget alert check failed", exc_info=True, extra={"tenant": tenant})
        now_minute = int(now // 60)
        self.history.prune(now_minute)
        if now - self._since >= (TRAILING_MIN + self.rule.window_min) * 60:
            for tenant, buckets in list(self.history.buckets.items()):
                alert = detect_anomaly(buckets, now_minute, self.rule)
                if alert is not None:
                    ttl = 2 * self.rule.window_min * 60
                    if await self._publish_once(tenant, alert, ttl):
                        published.append(alert)
        return published

    async def _check_budgets(self, tenant: str, now: float) -> list[AlertEvent]:
        caps = await self.limits_of(tenant)
        if not caps.daily_budget_usd and not caps.monthly_budget_usd:
            return []
        left = await self.limits.remaining(tenant, caps)
        windows = Windows.at(now)
        published = []
        for alert in crossed_budgets(caps, left.used, windows):
            end = windows.day_end if alert.budget == "daily" else windows.month_end
            if await self._publish_once(tenant, alert, max(60.0, end - now + 3600)):
                published.append(alert)
        return published

    async def _publish_once(self, tenant: str, alert: AlertEvent, ttl_s: float) -> bool:
        key = f"faas-meta:{tenant}:alerts:{alert.kind}:{alert.budget or '-'}:{alert.window}"
        if alert.kind == "budget_threshold":
            key += f":{alert.threshold:g}"
        if not await self.kv.set_if_absent(key, b"1", ttl_s):
            return False
        data = alert.model_dump(mode="json")
        event_id = await self.events.publish("gateway", "alert", tenant, data)
        log.info("alert %s published", alert.kind, extra={"tenant": tenant})
        if self.webhook is not None:
            self.webhook.submit(
                {
                    "id": event_id,
                    "type": "gateway.alert",
                    "tenant_id": tenant,
                    "occurred_at": utcnow().isoformat(),
                    "data": data,
                }
            )
        return True

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def start(self) -> None:
        if not self.enabled:
            return
        if self.webhook is not None:
            self.webhook.start()
        self._task = asyncio.create_task(self._loop(), name="gateway-alerts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.webhook is not None:
            await self.webhook.stop()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:
                log.exception("alert check failed")


def alert_monitor(
    settings: Settings,
    pipeline: ChatPipeline,
    tenant_limits: TenantLimitsStore,
    kv: KeyValueStore,
    events: EventPublisher,
) -> AlertMonitor:
    """The monitor the settings ask for, told every reconciled cost by the pipeline's
    admission; with FAAS_ALERT_INTERVAL_S at 0 it is never told anything and never runs."""
    admission = pipeline.dispatch.admission
    webhook = None
    if settings.alert_webhook_url and settings.alert_webhook_secret is not None:
        webhook = AlertWebhook(
            settings.alert_webhook_url,
            settings.alert_webhook_secret.get_secret_value().encode(),
            allowlist=Allowlist.parse(settings.alert_webhook_allowlist),
            timeout_s=settings.alert_webhook_timeout_s,
            attempts=settings.alert_webhook_attempts,
        )
    monitor = AlertMonitor(
        limits=admission.limits,
        limits_of=tenant_limits.get,
        kv=kv,
        events=events,
        rule=AnomalyRule(
            settings.alert_anomaly_window_min,
            settings.alert_anomaly_factor,
            settings.alert_anomaly_floor_usd,
        ),
        interval_s=settings.alert_interval_s,
        webhook=webhook,
    )
    if monitor.enabled:
        admission.on_spend = monitor.note
    return monitor
