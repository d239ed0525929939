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


BUILDERS: dict[str, Callable[[Runtime], Service]] = {
    "cache": _cache,
}


def available() -> list[str]:
    return list(BUILDERS)
