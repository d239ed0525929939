"""The bus counters (`faas.bus.*`), labelled by backend and by subject root or job kind."""

from __future__ import annotations

from typing import Final

from opentelemetry import metrics


class BusMetrics:
    """The bus counters; every call is a no-op without a meter."""

    _COUNTERS: Final = {
        "published": "Messages published",
        "consumed": "Messages handled successfully",
        "failures": "Handler failures",
        "dropped": "Events dropped from the offline buffer",
    }

    def __init__(self, meter: metrics.Meter | None, backend: str) -> None:
        self._backend = backend
        self._counters: dict[str, metrics.Counter] = {}
        if meter is not None:
            for name, description in self._COUNTERS.items():
                self._counters[name] = meter.create_counter(
                    f"faas.bus.{name}", unit="{message}", description=description
                )
            # Exported as 0 from the start, so dashboards and alerts on these rare events see
            # a series before the first one (Prometheus: "avoid missing metrics").
            for name in ("failures", "dropped"):
                self._counters[name].add(0, {"faas.bus.backend": backend})

    def _add(self, name: str, value: int, subject_root: str | None, kind: str | None) -> None:
        counter = self._counters.get(name)
        if counter is None:
            return
        attrs = {"faas.bus.backend": self._backend}
        if subject_root is not None:
            attrs["faas.bus.subject_root"] = subject_root
        if kind is not None:
            attrs["faas.bus.kind"] = kind
        counter.add(value, attrs)

    def published(self, *, subject_root: str | None = None, kind: str | None = None) -> None:
        self._add("published", 1, subject_root, kind)

    def consumed(
        self, *, subject_root: str | None = None, kind: str | None = None, count: int = 1
    ) -> None:
        self._add("consumed", count, subject_root, kind)

    def failure(self, *, subject_root: str | None = None, kind: str | None = None) -> None:
        self._add("failures", 1, subject_root, kind)

    def dropped(self, count: int = 1) -> None:
        self._add("dropped", count, None, None)
