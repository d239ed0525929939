"""The service catalogue: name → builder. A service absent here does not exist yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faas.runtime import Runtime
    from faas.shared.api import Service


def _cache(runtime: Runtime) -> Service:
    from faas.services.cache_service.service import CacheService

    return CacheService(runtime.settings, runtime.kv, runtime.events)


def _gateway(runtime: Runtime) -> Service:
    from faas.services.gateway_service.service import GatewayService

    return GatewayService(
        runtime.settings,
        kv=runtime.kv,
        db=runtime.db,
        events=runtime.events,
        meter=runtime.telemetry.meter,
    )


BUILDERS: dict[str, Callable[[Runtime], Service]] = {
    "gateway": _gateway,
    "cache": _cache,
}


def available() -> list[str]:
    return list(BUILDERS)
