"""The registered services: looked up by name, selected by FAAS_SERVICES, checked against the
settings (an unknown FAAS_SERVICES entry or FAAS_<NAME>_URL is refused, naming the closest
service, instead of being silently ignored)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Any

from faas.kernel.spec import ServiceSpec
from faas.shared.config import ConfigError, Settings


class ServiceRegistry:
    def __init__(self, specs: Iterable[ServiceSpec[Any]]) -> None:
        self._specs: dict[str, ServiceSpec[Any]] = {}
        ports: dict[int, str] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"service {spec.name!r} is registered twice")
            if spec.port in ports:
                raise ValueError(f"services {ports[spec.port]!r} and {spec.name!r} share a port")
            self._specs[spec.name] = spec
            ports[spec.port] = spec.name
        for spec in self._specs.values():
            unknown = [name for name in spec.calls if name not in self._specs]
            if unknown:
                raise ValueError(f"service {spec.name!r} calls unknown services {unknown}")

    def __iter__(self) -> Iterator[ServiceSpec[Any]]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> ServiceSpec[Any]:
        return self._specs[name]

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def port(self, name: str) -> int:
        return self._specs[name].port

    def selected(self, settings: Settings) -> list[ServiceSpec[Any]]:
        """FAAS_SERVICES in registration order; every service when it is unset."""
        if settings.services is None:
            return list(self._specs.values())
        return [spec for spec in self._specs.values() if spec.name in settings.services]

    def unknown_service(self, name: str) -> str:
        """One line refusing a service name, suggesting the closest known one."""
        close = difflib.get_close_matches(name, self.names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown service {name!r}{hint}; known: {', '.join(self.names)}"

    def check(self, settings: Settings) -> None:
        """Refuse service names the registry does not know, one line each."""
        problems = []
        unknown = [n for n in settings.services or () if n not in self._specs]
        if unknown:
            shown = ",".join(settings.services or ())
            reasons = "; ".join(self.unknown_service(n) for n in unknown)
            problems.append(f"FAAS_SERVICES={shown!r} is not allowed: {reasons}")
        for name, url in sorted(settings.service_urls.items()):
            if name not in self._specs:
                variable = f"FAAS_{name.upper()}_URL"
                problems.append(f"{variable}={url!r} is not allowed: {self.unknown_service(name)}")
        if problems:
            raise ConfigError(*problems)
