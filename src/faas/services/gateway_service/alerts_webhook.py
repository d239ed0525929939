"""The alert webhook: each alert POSTed as JSON, signed, from a background queue.

Signature: `X-Faas-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
FAAS_ALERT_WEBHOOK_SECRET — a receiver recomputes it over the raw body and refuses stale
timestamps (`verify_signature`). Delivery goes through the one SSRF-safe fetch
(`shared.pinned_fetch`: public addresses only unless FAAS_ALERT_WEBHOOK_ALLOWLIST admits them,
no redirects followed), each attempt bounded by FAAS_ALERT_WEBHOOK_TIMEOUT_S, retried with the
one backoff formula on transport errors, 408, 429 and 5xx. Failures are logged; nothing here
ever raises into a call, and a full queue drops (and logs) the newest alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from faas.shared.backoff import backoff
from faas.shared.exceptions import ValidationFailed
from faas.shared.pinned_fetch import Allowlist, Request, Target, pinned_fetch, resolve

log = logging.getLogger("faas.gateway.alerts")

SIGNATURE_HEADER = "X-Faas-Signature"
ALLOWLIST_SETTING = "FAAS_ALERT_WEBHOOK_ALLOWLIST"
RETRIED_STATUSES = frozenset({408, 429})
QUEUE_SIZE = 1000
Sleep = Callable[[float], Awaitable[None]]


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: bytes, header: str, body: bytes, *, now: float, tolerance_s: float = 300.0
) -> bool:
    """What a receiver checks: a `v1` HMAC of `<t>.<body>` and a timestamp within tolerance."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


async def _status(url: str, response: httpx.Response) -> int:
    return response.status_code


class AlertWebhook:
    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        allowlist: Allowlist,
        timeout_s: float,
        attempts: int,
        base_s: float = 1.0,
        cap_s: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.secret = secret
        self.allowlist = allowlist
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.base_s = base_s
        self.cap_s = cap_s
        self.sleep = sleep
        self.clock = clock
        self.delivered = 0
        self.failed = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None

    def submit(self, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.failed += 1
            log.warning("alert webhook queue full; alert %s dropped", payload.get("id"))

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="gateway-alert-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self._queue.empty():
            log.warning("alert webhook stopped with %d alerts undelivered", self._queue.qsize())

    async def _drain(self) -> None:
        while True:
            payload = await self._queue.get()
            await self.deliver(payload)

    async def deliver(self, payload: dict[str, Any]) -> bool:
        """POST one alert until it is accepted (2xx) or the attempts run out; never raises."""
        body = orjson.dumps(payload)
        for attempt in range(self.attempts):
            outcome = await self._attempt(body, str(payload.get("id", "")))
            if outcome == "ok":
                self.delivered += 1
                return True
            if outcome == "final" or attempt + 1 == self.attempts:
                break
            await self.sleep(backoff(attempt, base_s=self.base_s, cap_s=self.cap_s, jitter=True))
        self.failed += 1
        log.warning("alert %s not delivered to the webhook", payload.get("id"))
        return False

    async def _attempt(self, body: bytes, event_id: str) -> str:
        """`ok`, `retry` or `final` (no further attempt can help)."""
        request = Request(
            "POST",
            self.url,
            headers={
                SIGNATURE_HEADER: sign(self.secret, int(self.clock()), body),
                "X-Faas-Event-Id": event_id,
            },
            content=body,
            content_type="application/json",
        )
        try:
            status = await pinned_fetch(
                request,
                check=self._check,
                read=_status,
                user_agent="faas-alerts/1",
                timeout_s=self.timeout_s,
                max_redirects=0,
            )
        except ValidationFailed as exc:  # refused address or URL: the same every time
            log.error("alert webhook refused: %s", exc.message)
            return "final"
        except Exception as exc:  # transport error, timeout, a redirect
            log.warning("alert webhook attempt failed: %s", type(exc).__name__)
            return "retry"
        if 200 <= status < 300:
            return "ok"
        log.warning("alert webhook answered %d", status)
        return "retry" if status >= 500 or status in RETRIED_STATUSES else "final"

    async def _check(self, url: str) -> Target:
        return await resolve(url, self.allowlist, setting=ALLOWLIST_SETTING)
