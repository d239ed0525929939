"""Histograms aggregated by faas and handed to the OpenTelemetry SDK's reader at collection.

The SDK's synchronous histogram builds a `Measurement`, copies and hashes its attributes, finds the
series through the view machinery and takes two locks for every value: about 10 us a record, three
records an answered chat completion, ~9 % of the gateway's CPU per request (docs/benchmarks.md).
Here a record is a hash of the attributes, a bisect and four adds under one lock (~2 us,
`bench/histograms.py`). What the reader exports is what the SDK's own explicit-bucket histogram
would have exported: cumulative points with the same buckets (the SDK's defaults, or the
instrument's advisory boundaries), sum, count, min and max, the same 2,000-series cap with the same
overflow series, non-finite and negative values dropped with a warning, attributes cleaned as the
SDK cleans them. Where it differs: attribute values that Python holds equal (`True`, `1`, `1.0`)
share a series here, where the SDK keeps them apart (faas gives each attribute one type); a
histogram made through the SDK's own meter under the same name would be exported beside this one
(faas makes every histogram through its Telemetry's meter); the instrumentation scope is the
meter's name, version and schema URL, without scope attributes (faas sets none).

`AggregatingMeter` wraps the SDK's meter: every instrument but the histogram is the SDK's own,
so code that takes an OpenTelemetry `Meter` does not change. `AggregatingReader` is the
in-memory reader that adds these histograms to what the SDK collected.
"""

from __future__ import annotations

import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any, Final

from opentelemetry import metrics
from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import Attributes

log = logging.getLogger("faas.otel")

# The SDK's defaults (opentelemetry.sdk.metrics: explicit bucket histogram aggregation, and the
# per-instrument cardinality limit of a view) and its overflow series past that limit.
DEFAULT_BOUNDARIES: Final = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
    7500.0, 10000.0,
)  # fmt: skip
CARDINALITY_LIMIT: Final = 2000
OVERFLOW_ATTRIBUTES: Final[Mapping[str, bool]] = {"otel.metric.overflow": True}
_OVERFLOW_KEY: Final = frozenset(OVERFLOW_ATTRIBUTES.items())
_NO_ATTRIBUTES: Final[frozenset[tuple[Any, Any]]] = frozenset()


class _Series:
    """One attribute set's cumulative buckets, sum, count, min and max."""

    __slots__ = ("attributes", "buckets", "count", "max", "min", "start_ns", "sum")

    def __init__(self, attributes: Mapping[str, Any], buckets: int) -> None:
        self.attributes = dict(attributes)
        self.buckets = [0] * buckets
        self.sum: float = 0  # an int while the values are, as the SDK's sum
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self.start_ns = time_ns()


class AggregatedHistogram(metrics.Histogram):
    """A histogram instrument whose values are aggregated in place, one series per attribute
    set; `points()` is what the reader exports.

    A record looks its attributes up as given (one frozenset hash). Attributes seen for the
    first time are cleaned as the SDK cleans a measurement's (keys made strings or dropped,
    sequences made tuples, other values made strings) and the series found by the cleaned set,
    so two spellings of one set (`{1: "x"}`, `{"1": "x"}`) share a series as in the SDK."""

    def __init__(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        boundaries: Sequence[float] | None = None,
    ) -> None:
        # (the API's `Instrument.__init__` is abstract and keeps nothing)
        self.name, self.unit, self.description = name, unit, description
        self.boundaries = checked_boundaries(boundaries)
        self._series: dict[Any, _Series] = {}  # by the cleaned attributes
        self._seen: dict[frozenset[tuple[Any, Any]], _Series] = {}  # by the attributes as given
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def record(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        # `not amount >= 0` is also true of NaN: the SDK drops NaN, infinities and negatives.
        if not amount >= 0 or amount == math.inf:
            self._warn("value", f"dropped {amount!r}: a value must be finite and >= 0")
            return
        index = bisect_left(self.boundaries, amount)
        try:
            key: frozenset[tuple[Any, Any]] | None = (
                frozenset(attributes.items()) if attributes else _NO_ATTRIBUTES
            )
        except (TypeError, AttributeError):  # an unhashable value, or not a mapping at all
            key = None
        with self._lock:
            series = self._seen.get(key) if key is not None else None
            if series is None:
                series = self._find(key, attributes)
            series.buckets[index] += 1
            series.sum += amount
            series.count += 1
            if amount < series.min:
                series.min = amount
            if amount > series.max:
                series.max = amount

    def _find(self, key: frozenset[tuple[Any, Any]] | None, attributes: Attributes) -> _Series:
        """The series of attributes not seen before, as given (called with the lock held)."""
        if attributes is not None and not isinstance(attributes, Mapping):
            self._warn("attributes", f"attributes must be a mapping, got {type(attributes)}")
            attributes = None
        cleaned = _clean_mapping(attributes or {})
        series_key = _frozen(cleaned)
        series = self._series.get(series_key)
        if series is None:
            if len(self._series) >= CARDINALITY_LIMIT:
                series_key, cleaned = _OVERFLOW_KEY, dict(OVERFLOW_ATTRIBUTES)
                series = self._series.get(series_key)
            if series is None:
                series = self._series[series_key] = _Series(cleaned, len(self.boundaries) + 1)
        # Remembered as given unless that would let the table outgrow the cap: an overflowing
        # attribute set takes this slower path on every record instead.
        room = len(self._seen) < 2 * CARDINALITY_LIMIT
        if key is not None and series_key is not _OVERFLOW_KEY and room:
            self._seen[key] = series
        return series

    def _warn(self, reason: str, message: str) -> None:
        if reason not in self._warned:  # the SDK warns on every one; once finds the caller
            self._warned.add(reason)
            log.warning("histogram %s: %s", self.name, message)

    def points(self, now_ns: int) -> list[HistogramDataPoint]:
        with self._lock:
            taken = [
                (s.attributes, s.start_ns, s.count, s.sum, list(s.buckets), s.min, s.max)
                for s in self._series.values()
            ]
        return [
            HistogramDataPoint(
                attributes=attributes,
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=count,
                sum=total,
                bucket_counts=buckets,
                explicit_bounds=self.boundaries,
                min=low,
                max=high,
                exemplars=[],
            )
            for attributes, start_ns, count, total, buckets, low, high in taken
        ]


def checked_boundaries(advisory: Sequence[float] | None) -> tuple[float, ...]:
    """The bucket boundaries for an advisory, as the SDK takes it: None or anything but a
    sequence of numbers gives the defaults (with a warning); boundaries must be finite and
    strictly increasing (the SDK raises at the first record; this, when the instrument is
    made); an empty sequence is one bucket."""
    if advisory is None:
        return DEFAULT_BOUNDARIES
    if isinstance(advisory, str | bytes) or not isinstance(advisory, Sequence):
        numbers = False
    else:
        numbers = all(isinstance(b, int | float) and not isinstance(b, bool) for b in advisory)
    if not numbers:
        log.warning("explicit_bucket_boundaries_advisory must be a sequence of numbers")
        return DEFAULT_BOUNDARIES
    for i, bound in enumerate(advisory):
        if not math.isfinite(bound):
            raise ValueError(f"invalid boundary: {bound!r}")
        if i and advisory[i - 1] >= bound:
            raise ValueError("boundaries must be strictly increasing")
    return tuple(advisory)


def _clean_mapping(attributes: Mapping[Any, Any]) -> dict[str, Any]:
    """Attributes as the SDK keeps a measurement's: empty keys dropped, other keys made
    strings, values cleaned."""
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        if not key:
            continue
        cleaned[key if isinstance(key, str) else str(key)] = _clean_value(value)
    return cleaned


def _clean_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | bytes | str):
        return value
    if isinstance(value, Sequence):
        return tuple(_clean_value(v) for v in value)
    if isinstance(value, Mapping):
        return _clean_mapping(value)
    return str(value)  # an enum, a path, ...: its text, as the SDK exports it


def _frozen(value: Any) -> Any:
    """A hashable form of cleaned attributes (a mapping becomes a frozenset of its pairs)."""
    if isinstance(value, dict):
        return frozenset((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, tuple):
        return tuple(_frozen(v) for v in value)
    return value


class AggregatingReader(InMemoryMetricReader):
    """The SDK's in-memory reader, plus the histograms of the `AggregatingMeter`s bound to it
    (under their meter's instrumentation scope, on the provider's resource)."""

    def __init__(self, resource: Resource) -> None:
        super().__init__()
        self.resource = resource
        self._histograms: list[tuple[InstrumentationScope, AggregatedHistogram]] = []

    def add(self, scope: InstrumentationScope, histogram: AggregatedHistogram) -> None:
        self._histograms.append((scope, histogram))

    def get_metrics_data(self) -> MetricsData | None:
        return self._with_histograms(super().get_metrics_data())

    def _with_histograms(self, data: MetricsData | None) -> MetricsData | None:
        now_ns = time_ns()
        extra: dict[InstrumentationScope, list[Metric]] = {}
        for scope, histogram in list(self._histograms):
            points = histogram.points(now_ns)
            if points:
                extra.setdefault(scope, []).append(_metric(histogram, points))
        if not extra:
            return data
        resource_metrics = list(data.resource_metrics) if data is not None else []
        if not resource_metrics:
            resource_metrics = [ResourceMetrics(self.resource, [], "")]
        first = resource_metrics[0]
        scopes = list(first.scope_metrics)
        for scope, added in extra.items():
            at = next((i for i, s in enumerate(scopes) if s.scope == scope), None)
            if at is None:
                scopes.append(ScopeMetrics(scope, added, scope.schema_url or ""))
            else:
                held = scopes[at]
                scopes[at] = ScopeMetrics(held.scope, [*held.metrics, *added], held.schema_url)
        resource_metrics[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resource_metrics=resource_metrics)


def _metric(histogram: AggregatedHistogram, points: list[HistogramDataPoint]) -> Metric:
    return Metric(
        name=histogram.name,
        description=histogram.description,
        unit=histogram.unit,
        data=Histogram(
            data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE
        ),
    )


class AggregatingMeter(metrics.Meter):
    """The SDK meter `inner`, whose histograms are `AggregatedHistogram`s exported through
    `reader`; every other instrument is the SDK's own."""

    def __init__(self, inner: metrics.Meter, reader: AggregatingReader) -> None:
        super().__init__(inner.name, inner.version, inner.schema_url)
        self._inner = inner
        self._reader = reader
        self._scope = InstrumentationScope(inner.name, inner.version, inner.schema_url)
        self._histograms: dict[tuple[str, str, tuple[float, ...]], AggregatedHistogram] = {}
        self._histograms_lock = threading.Lock()

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> metrics.Histogram:
        boundaries = checked_boundaries(explicit_bucket_boundaries_advisory)
        key = (name.lower(), unit, boundaries)
        with self._histograms_lock:  # one instrument per name and kind, as the SDK hands out
            found = self._histograms.get(key)
            if found is None:
                if any(k[0] == key[0] for k in self._histograms):
                    log.warning("histogram %s made again with another unit or buckets", name)
                found = AggregatedHistogram(name, unit, description, boundaries)
                self._histograms[key] = found
                self._reader.add(self._scope, found)
            return found

    def create_counter(self, name: str, unit: str = "", description: str = "") -> metrics.Counter:
        return self._inner.create_counter(name, unit, description)

    def create_up_down_counter(
        self, name: str, unit: str = "", description: str = ""
    ) -> metrics.UpDownCounter:
        return self._inner.create_up_down_counter(name, unit, description)

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> metrics._Gauge:
        return self._inner.create_gauge(name, unit, description)

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[metrics.CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableCounter:
        return self._inner.create_observable_counter(name, callbacks, unit, description)

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[metrics.CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableGauge:
        return self._inner.create_observable_gauge(name, callbacks, unit, description)

    def create_observable_up_down_counter(
        self,
        name: str,
        callbacks: Sequence[metrics.CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableUpDownCounter:
        return self._inner.create_observable_up_down_counter(name, callbacks, unit, description)
