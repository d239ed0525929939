"""The cache service as the platform registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from faas.kernel import Platform, ServiceSpec

if TYPE_CHECKING:
    from faas.services.cache_service.service import CacheService


def build(platform: Platform) -> CacheService:
    from faas.services.cache_service.service import CacheService

    return CacheService(platform.settings, platform.kv, platform.events)


def routes(service: CacheService) -> APIRouter:
    from faas.services.cache_service.routes import build_router

    return build_router(service)


SPEC: ServiceSpec[CacheService] = ServiceSpec(
    name="cache",
    port=8002,
    summary="Tenant-scoped key/value cache with TTLs, tags and invalidation events",
    build=build,
    routes=routes,
    uses=("kv", "bus"),
)
