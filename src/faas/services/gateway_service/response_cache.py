"""Response caching. Exact: a hash of the tenant and the canonical request, stored in the
key/value backend. Semantic (opt-in, `semantic_cache.py`): an index of prompt vectors pointing
at these same responses."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson

from faas.backends.kv import KeyValueStore
from faas.services.gateway_service.semantic_cache import SemanticCache
from faas.shared.exceptions import DependencyUnavailable

log = logging.getLogger("faas.gateway.cache")

NAMESPACE = "gateway-cache"
_NOT_FINGERPRINTED = frozenset({"stream", "stream_options", "user", "cache"})


def request_fingerprint(tenant_id: str, model: str, body: dict[str, Any]) -> str:
    """Same tenant + model + request → same key; any difference (a parameter, a tool, another
    tenant) → another key. `stream` and `user` do not change the answer, and the gateway's own
    `cache` options never go upstream, so they are dropped."""
    canonical = {k: v for k, v in body.items() if k not in _NOT_FINGERPRINTED}
    payload = orjson.dumps([tenant_id, model, canonical], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


def cache_key(tenant_id: str, fingerprint: str) -> str:
    return f"faas:{tenant_id}:{NAMESPACE}:{fingerprint}"


def is_deterministic(body: dict[str, Any]) -> bool:
    return body.get("temperature") == 0 and int(body.get("n") or 1) == 1


class ResponseCache:
    def __init__(self, kv: KeyValueStore, *, ttl_s: float = 3600.0) -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self.semantic = SemanticCache(kv, ttl_s=ttl_s)

    async def get(self, key: str) -> dict[str, Any] | None:
        # The cache only saves work: an unreachable store is a miss, not a failed request.
        try:
            raw = await self.kv.get(key)
        except DependencyUnavailable:
            log.warning("response cache unavailable; serving without it")
            return None
        return None if raw is None else dict(orjson.loads(raw))

    async def put(self, key: str, body: dict[str, Any]) -> None:
        try:
            await self.kv.set(key, orjson.dumps(body), self.ttl_s)
        except DependencyUnavailable:
            log.warning("response cache unavailable; the answer is not cached")
