"""HTTP routes of the cache service: parse, call the use case, answer."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from faas.services.cache_service.models import (
    KEY_RE,
    CacheBatchStored,
    CacheEntries,
    CacheEntry,
    CacheInvalidateRequest,
    CacheMGetRequest,
    CacheMSetRequest,
    CacheRemoved,
    CacheSetRequest,
    CacheStats,
    CacheStored,
    Name,
)
from faas.services.cache_service.service import CacheService, Lookup
from faas.shared.api import caller, respond
from faas.shared.contracts import ServiceResponse

KeyPath = Annotated[str, Path(pattern=KEY_RE.pattern, description="cache key")]
NamespaceQuery = Annotated[Name, Query()]


def _entry(lookup: Lookup) -> dict[str, Any]:
    # The stored bytes are already JSON: embed them without decoding.
    return {
        "key": lookup.key,
        "namespace": lookup.namespace,
        "found": lookup.found,
        "value": orjson.Fragment(lookup.raw) if lookup.raw is not None else None,
        "ttl_remaining_s": lookup.ttl_remaining_s,
    }


def build_router(service: CacheService) -> APIRouter:
    router = APIRouter(prefix="/api/v1/cache", tags=["cache"])

    @router.get("/stats", response_model=ServiceResponse[CacheStats])
    async def cache_stats() -> Response:
        return respond(await service.stats(caller().tenant_id))

    @router.post("/mget", response_model=ServiceResponse[CacheEntries])
    async def cache_mget(body: CacheMGetRequest) -> Response:
        lookups = await service.mget(caller().tenant_id, body)
        return respond({"entries": [_entry(x) for x in lookups]})

    @router.post("/mset", status_code=201, response_model=ServiceResponse[CacheBatchStored])
    async def cache_mset(body: CacheMSetRequest) -> Response:
        stored = await service.mset(caller().tenant_id, body)
        return respond(CacheBatchStored(stored=stored, namespace=body.namespace), status_code=201)

    @router.post("/invalidate", response_model=ServiceResponse[CacheRemoved])
    async def cache_invalidate(body: CacheInvalidateRequest) -> Response:
        return respond(CacheRemoved(removed=await service.invalidate(caller().tenant_id, body)))

    @router.get("/{key}", response_model=ServiceResponse[CacheEntry])
    async def cache_get(key: KeyPath, namespace: NamespaceQuery = "default") -> Response:
        return respond(_entry(await service.get(caller().tenant_id, key, namespace)))

    @router.post("", status_code=201, response_model=ServiceResponse[CacheStored])
    async def cache_set(body: CacheSetRequest) -> Response:
        return respond(await service.set(caller().tenant_id, body), status_code=201)

    @router.delete("/{key}", status_code=204)
    async def cache_delete(key: KeyPath, namespace: NamespaceQuery = "default") -> Response:
        await service.delete(caller().tenant_id, key, namespace)
        return Response(status_code=204)

    @router.delete("", response_model=ServiceResponse[CacheRemoved])
    async def cache_clear() -> Response:
        return respond(CacheRemoved(removed=await service.clear(caller().tenant_id)))

    return router
