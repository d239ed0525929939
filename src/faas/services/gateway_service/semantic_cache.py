"""Semantic response cache: a chat whose prompt embeds close enough to an earlier one of the same
tenant and model is answered with that earlier response.

The index lives in the key/value backend, beside the responses it points at, rather than in the
vector backend: a vector is only worth keeping while its response is reachable, so both share a
store (Redis shares them between replicas exactly when it shares the responses, and memory keeps
both in one process), expire with the same TTL and go together when a tenant's keys are purged.
The vector backend would add a second store to start, keep in step and prune.

Per (tenant, model): a set of response keys, and one entry per key holding when it was added and
the prompt's vector. A lookup reads the set and every vector (at most `per_scope`, 1,000 by
default: about 1.5 MB of 384-d vectors), scores them here, and drops members whose vector
expired. The store only saves work: an unreachable one is a miss, never a failed request.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from faas.backends.kv import KeyValueStore
from faas.shared.exceptions import DependencyUnavailable

log = logging.getLogger("faas.gateway.cache")

NAMESPACE = "gateway-semantic"
_STAMP = struct.Struct("<d")  # seconds since the epoch the entry was added
Vector = npt.NDArray[np.float32]


def semantic_text(body: dict[str, Any], *, force: bool) -> str | None:
    """The prompt to compare, or None when semantic matching would be unsafe: requests with
    tools, or conversations longer than one user turn (plus an optional system message)."""
    if body.get("tools") and not force:
        return None
    messages = body.get("messages") or []
    turns = [m for m in messages if m.get("role") != "system"]
    if (len(turns) != 1 or turns[0].get("role") != "user") and not force:
        return None
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    content = last.get("content") if last else None
    return content if isinstance(content, str) and content.strip() else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SemanticCache:
    """Prompt vectors per (tenant, model), each naming the response-cache key it answers with;
    bounded per scope, oldest dropped first."""

    def __init__(self, kv: KeyValueStore, *, ttl_s: float, per_scope: int = 1000) -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self.per_scope = per_scope

    @staticmethod
    def _scope(tenant_id: str, model: str) -> str:
        # The model is hashed: its name may hold ':' or glob characters.
        return f"faas:{tenant_id}:{NAMESPACE}:{_digest(model)}"

    @staticmethod
    def _entry(scope: str, key: str) -> str:
        return f"{scope}:{_digest(key)}"

    async def nearest(
        self, tenant_id: str, model: str, vector: Vector, threshold: float
    ) -> tuple[str, float] | None:
        """The response key whose prompt scores highest (dot product of unit vectors), and its
        score, when that score reaches the threshold."""
        query = np.asarray(vector, dtype=np.float32)
        try:
            entries = await self._entries(self._scope(tenant_id, model))
        except DependencyUnavailable:
            log.warning("semantic cache unavailable; serving without it")
            return None
        same = [(key, v) for key, _, v in entries if v.shape == query.shape]
        if not same:
            return None
        scores = np.vstack([v for _, v in same]) @ query
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (same[best][0], score) if score >= threshold else None

    async def add(self, tenant_id: str, model: str, vector: Vector, key: str) -> None:
        scope = self._scope(tenant_id, model)
        value = _STAMP.pack(time.time()) + np.asarray(vector, dtype="<f4").tobytes()
        try:
            await self.kv.set(self._entry(scope, key), value, self.ttl_s)
            await self.kv.sadd(scope, key)
            if len(await self.kv.smembers(scope)) > self.per_scope:
                await self._entries(scope)  # reading them drops the oldest beyond the bound
        except DependencyUnavailable:
            log.warning("semantic cache unavailable; the prompt is not indexed")

    async def forget(self, tenant_id: str, model: str, key: str) -> None:
        scope = self._scope(tenant_id, model)
        try:
            await self.kv.srem(scope, key)
            await self.kv.delete(self._entry(scope, key))
        except DependencyUnavailable:
            log.warning("semantic cache unavailable; a stale prompt stays indexed")

    async def _entries(self, scope: str) -> list[tuple[str, float, Vector]]:
        """The scope's live entries, oldest first, at most `per_scope`; members whose entry
        expired, and the oldest beyond the bound, are removed on the way."""
        keys = sorted(await self.kv.smembers(scope))
        if not keys:
            return []
        values = await self.kv.mget([self._entry(scope, k) for k in keys])
        entries: list[tuple[str, float, Vector]] = []
        gone: list[str] = []
        for key, value in zip(keys, values, strict=True):
            if value is None:
                gone.append(key)
                continue
            (added,) = _STAMP.unpack_from(value)
            entries.append((key, added, np.frombuffer(value, dtype="<f4", offset=_STAMP.size)))
        entries.sort(key=lambda entry: entry[1])
        excess = entries[: max(0, len(entries) - self.per_scope)]
        if gone or excess:
            await self.kv.srem(scope, *gone, *(key for key, _, _ in excess))
            await self.kv.delete(*(self._entry(scope, key) for key, _, _ in excess))
        return entries[len(excess) :]
