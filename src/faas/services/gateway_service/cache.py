"""Response caching. Exact: a hash of the tenant and the canonical request, stored in the
key/value backend. Semantic (opt-in): embedding similarity of the prompt, scoped by tenant and
model, with the index held in this process and the responses in the key/value backend."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from faas.backends.kv import KeyValueStore
from faas.shared.exceptions import DependencyUnavailable

log = logging.getLogger("faas.gateway.cache")

NAMESPACE = "gateway-cache"


def request_fingerprint(tenant_id: str, model: str, body: dict[str, Any]) -> str:
    """Same tenant + model + request → same key; any difference (a parameter, a tool, another
    tenant) → another key. `stream` and `user` do not change the answer, so they are dropped."""
    canonical = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "user")}
    payload = orjson.dumps([tenant_id, model, canonical], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


def cache_key(tenant_id: str, fingerprint: str) -> str:
    return f"faas:{tenant_id}:{NAMESPACE}:{fingerprint}"


def is_deterministic(body: dict[str, Any]) -> bool:
    return body.get("temperature") == 0 and int(body.get("n") or 1) == 1


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


@dataclass
class _Index:
    keys: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    matrix: np.ndarray | None = None


class SemanticIndex:
    """Per (tenant, model) vectors of cached prompts; bounded, oldest dropped first."""

    def __init__(self, *, per_scope: int = 1000, max_scopes: int = 10_000) -> None:
        self._scopes: OrderedDict[tuple[str, str], _Index] = OrderedDict()
        self.per_scope = per_scope
        self.max_scopes = max_scopes

    def add(self, tenant_id: str, model: str, vector: np.ndarray, key: str) -> None:
        scope = (tenant_id, model)
        index = self._scopes.get(scope)
        if index is None:
            index = self._scopes[scope] = _Index()
            if len(self._scopes) > self.max_scopes:
                self._scopes.popitem(last=False)
        self._scopes.move_to_end(scope)
        index.keys.append(key)
        index.vectors.append(vector.astype(np.float32))
        if len(index.keys) > self.per_scope:
            del index.keys[0], index.vectors[0]
        index.matrix = None

    def nearest(
        self, tenant_id: str, model: str, vector: np.ndarray, threshold: float
    ) -> tuple[str, float] | None:
        index = self._scopes.get((tenant_id, model))
        if index is None or not index.keys:
            return None
        if index.matrix is None:
            index.matrix = np.vstack(index.vectors)
        scores = index.matrix @ vector.astype(np.float32)
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (index.keys[best], score) if score >= threshold else None

    def forget(self, tenant_id: str, model: str, key: str) -> None:
        index = self._scopes.get((tenant_id, model))
        if index is not None and key in index.keys:
            position = index.keys.index(key)
            del index.keys[position], index.vectors[position]
            index.matrix = None


class ResponseCache:
    def __init__(self, kv: KeyValueStore, *, ttl_s: float = 3600.0) -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self.semantic = SemanticIndex()

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
