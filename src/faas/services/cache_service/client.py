"""How other services call the cache: read and store one value in the caller's tenant.
Requests and answers are the cache's own models; errors arrive as the shared exceptions with
the cache's status and code."""

from __future__ import annotations

from urllib.parse import quote

from faas.kernel.clients import ApiClient
from faas.services.cache_service.models import CacheEntry, CacheSetRequest, CacheStored, check_key
from faas.shared.exceptions import ValidationFailed


class CacheClient(ApiClient):
    service = "cache"

    async def get(self, key: str, namespace: str = "default") -> CacheEntry:
        """The entry under `key` in `namespace`; a missing key is `found: false`, not an
        error. The key is checked here because a reserved one (`stats`) would reach another
        route of the cache's API."""
        try:
            check_key(key)
        except ValueError as exc:
            raise ValidationFailed(str(exc), details={"field": "key"}) from exc
        return await self.model(
            CacheEntry,
            "GET",
            f"/api/v1/cache/{quote(key, safe='')}",
            params={"namespace": namespace},
        )

    async def set(self, request: CacheSetRequest) -> CacheStored:
        """Store a JSON value (replacing any), with an optional TTL and tags."""
        return await self.model(
            CacheStored,
            "POST",
            "/api/v1/cache",
            json=request.model_dump(mode="json"),
        )
