"""Answers cached per tenant under a generation counter: any write to the tenant's index bumps
it, so an answer never outlives the documents it was drawn from (no key scan to invalidate)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from faas.backends.kv import KeyValueStore
from faas.services.rag_service.models import QueryResponse


def _generation_key(tenant: str) -> str:
    return f"faas-meta:{tenant}:rag:generation"


class QueryCache:
    def __init__(self, kv: KeyValueStore, ttl_s: float) -> None:
        self.kv = kv
        self.ttl_s = ttl_s

    async def invalidate(self, tenant: str) -> None:
        """Every answer cached for `tenant` so far is stale."""
        await self.kv.incr(_generation_key(tenant))

    async def key(self, tenant: str, request: dict[str, Any]) -> str:
        generation = await self.kv.get(_generation_key(tenant)) or b"0"
        digest = hashlib.sha256(
            orjson.dumps([generation.decode(), request], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        return f"faas:{tenant}:rag-query:{digest}"

    async def get(self, key: str) -> QueryResponse | None:
        cached = await self.kv.get(key)
        if cached is None:
            return None
        return QueryResponse.model_validate({**orjson.loads(cached), "cached": True})

    async def put(self, key: str, answer: QueryResponse) -> None:
        await self.kv.set(key, answer.model_dump_json().encode(), self.ttl_s)
