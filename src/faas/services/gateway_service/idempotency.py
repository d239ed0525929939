"""Idempotency-Key replay: the first request with a key runs, a retry of the same request gets
the stored answer, and a different request under the same key is refused."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from faas.backends.kv import KeyValueStore
from faas.shared.exceptions import Conflict, ValidationFailed

IDEMPOTENCY_TTL_S = 24 * 3600
# How long a claim survives a request that never finished (a crashed worker).
PENDING_TTL_S = 600


class IdempotencyLedger:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    async def begin(
        self, tenant: str, key: str, fingerprint: str
    ) -> tuple[str, dict[str, Any] | None]:
        """Claims the key for this request: its store key, and the stored answer to replay
        when the same request already finished."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        kv_key = f"faas:{tenant}:gateway-idempotency:{digest}"
        pending = orjson.dumps({"state": "pending", "fp": fingerprint})
        if await self.kv.set_if_absent(kv_key, pending, PENDING_TTL_S):
            return kv_key, None
        raw = await self.kv.get(kv_key)
        if raw is None:  # expired between the two calls: take it over
            await self.kv.set(kv_key, pending, PENDING_TTL_S)
            return kv_key, None
        record = orjson.loads(raw)
        if record.get("fp") != fingerprint:
            raise ValidationFailed("this Idempotency-Key was already used for a different request")
        if record.get("state") != "done":
            raise Conflict(
                "a request with this Idempotency-Key is still in progress",
                headers={"Retry-After": "1"},
            )
        return kv_key, dict(record["body"])

    async def finish(self, kv_key: str, fingerprint: str, body: dict[str, Any]) -> None:
        record = {"state": "done", "fp": fingerprint, "body": body}
        await self.kv.set(kv_key, orjson.dumps(record), IDEMPOTENCY_TTL_S)

    async def abandon(self, kv_key: str) -> None:
        """Frees the key after a failed request, so a retry runs it again."""
        await self.kv.delete(kv_key)
