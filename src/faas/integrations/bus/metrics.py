"""The bus counters (`faas.bus.*`), labelled by backend and by subject root or job kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from opentelemetry import metrics

Labels = tuple[str | None, str | None]  # subject root, job kind


class BusMetrics:
    """The bus counters; every call is a no-op without a meter. Counts are tallied in plain
    dicts and observed at collection: a synchronous SDK counter cleans and hashes its
    attributes on every call (~10 us, once per published event on the gateway's hot path)."""

    _COUNTERS: Final = {
        "published": "Messages published",
        "consumed": "Messages handled successfully",
        "failures": "Handler failures",
        "dropped": "Events dropped from the offline buffer",
    }

    def __init__(self, meter: metrics.Meter | None, backend: str) -> None:
        self._backend = backend
        self._totals: dict[str, dict[Labels, int]] = {}
        self._attrs: dict[Labels, dict[str, str]] = {}
        if meter is not None:
            for name, description in self._COUNTERS.items():
                totals: dict[Labels, int] = {}
                self._totals[name] = totals
                meter.create_observable_counter(
                    f"faas.bus.{name}",
                    callbacks=[self._observer(totals)],
                    unit="{message}",
                    description=description,
                )
            # Exported as 0 from the start, so dashboards and alerts on these rare events see
            # a series before the first one (Prometheus: "avoid missing metrics").
            for name in ("failures", "dropped"):
                self._add(name, 0, None, None)

    def _observer(
        self, totals: dict[Labels, int]
    ) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
        def observe(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [metrics.Observation(n, self._attrs[k]) for k, n in list(totals.items())]

        return observe

    def _add(self, name: str, value: int, subject_root: str | None, kind: str | None) -> None:
        totals = self._totals.get(name)
        if totals is None:
            return
        key = (subject_root, kind)
        if key not in self._attrs:
            attrs = {"faas.bus.backend": self._backend}
            if subject_root is not None:
                attrs["faas.bus.subject_root"] = subject_root
            if kind is not None:
                attrs["faas.bus.kind"] = kind
            self._attrs[key] = attrs
        totals[key] = totals.get(key, 0) + value

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
