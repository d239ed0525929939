"""Histograms aggregated by faas export what the SDK's own histogram would have: the same
points for the same records, the same drops and the same overflow series."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource

from faas.integrations import prometheus
from faas.integrations.histograms import (
    CARDINALITY_LIMIT,
    DEFAULT_BOUNDARIES,
    AggregatedHistogram,
    AggregatingMeter,
    AggregatingReader,
)
from faas.integrations.otel import setup_telemetry

Records = Sequence[tuple[float, dict[str, Any] | None]]


def points_of(data: MetricsData | None, name: str) -> dict[Any, tuple[Any, ...]]:
    """(count, sum, buckets, bounds, min, max) by attribute set, for the histogram `name`."""
    assert data is not None
    found: dict[Any, tuple[Any, ...]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                assert isinstance(metric.data, Histogram)
                for p in metric.data.data_points:
                    key = frozenset((k, repr(v)) for k, v in (p.attributes or {}).items())
                    found[key] = (
                        p.count,
                        pytest.approx(p.sum),
                        list(p.bucket_counts),
                        tuple(p.explicit_bounds),
                        p.min,
                        p.max,
                    )
    return found


def both(records: Records, **advisory: Any) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """The points the SDK's histogram and faas's exported for the same records (and checks
    that the two render the same Prometheus text)."""
    sdk_reader = InMemoryMetricReader()
    provider = MeterProvider([sdk_reader], exemplar_filter=AlwaysOffExemplarFilter())
    sdk = provider.get_meter("faas").create_histogram("h", "s", "d", **advisory)
    ours_reader = AggregatingReader(Resource.create({}))
    inner = MeterProvider([ours_reader]).get_meter("faas")
    ours = AggregatingMeter(inner, ours_reader).create_histogram("h", "s", "d", **advisory)
    assert isinstance(ours, AggregatedHistogram)
    for value, attributes in records:
        sdk.record(value, attributes)
        ours.record(value, attributes)
    sdk_data, ours_data = sdk_reader.get_metrics_data(), ours_reader.get_metrics_data()
    assert prometheus.render(ours_data) == prometheus.render(sdk_data)
    return points_of(sdk_data, "h"), points_of(ours_data, "h")


def test_the_points_are_the_sdks_for_the_same_records() -> None:
    records: Records = [
        (0, {"t": "a"}),
        (5, {"t": "a"}),  # on a boundary: the bucket it closes
        (5.000001, {"t": "a"}),
        (10_001, {"t": "a"}),  # past the last boundary
        (7, {"t": "b", "n": 3, "ok": True}),
        (7, {"ok": True, "n": 3, "t": "b"}),  # the same set in another order
        (3, None),
        (4, {}),
        (1, {"tags": ["x", "y"]}),  # a sequence value
    ]
    sdk, ours = both(records)
    assert ours == sdk
    assert len(ours) == 4


def test_advisory_boundaries_are_the_buckets() -> None:
    records: Records = [(v / 1000, {"route": "/x"}) for v in (1, 5, 9, 30, 400, 6000)]
    sdk, ours = both(records, explicit_bucket_boundaries_advisory=(0.005, 0.01, 0.1, 1.0))
    assert ours == sdk
    [(_, _, buckets, bounds, _, _)] = ours.values()
    assert bounds == (0.005, 0.01, 0.1, 1.0)
    assert buckets == [2, 1, 1, 1, 1]


def test_negative_and_non_finite_values_are_dropped_as_the_sdk_drops_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records: Records = [(-1, {"t": "a"}), (math.nan, {"t": "a"}), (math.inf, {"t": "a"})]
    sdk, ours = both([*records, (2, {"t": "a"})])
    assert ours == sdk
    [(count, *_)] = ours.values()
    assert count == 1
    assert "dropped -1" in caplog.text


def test_past_the_cardinality_limit_new_sets_go_to_the_overflow_series() -> None:
    records: Records = [(1, {"n": i}) for i in range(CARDINALITY_LIMIT + 5)]
    sdk, ours = both([*records, (1, {"n": 0})])
    assert ours == sdk
    assert len(ours) == CARDINALITY_LIMIT + 1
    overflow = ours[frozenset({("otel.metric.overflow", "True")})]
    assert overflow[0] == 5


def test_a_meter_hands_out_one_histogram_per_name_unit_and_buckets() -> None:
    reader = AggregatingReader(Resource.create({}))
    meter = AggregatingMeter(MeterProvider([reader]).get_meter("faas"), reader)
    assert meter.create_histogram("a.b") is meter.create_histogram("A.B")
    assert meter.create_histogram("a.b") is not meter.create_histogram("a.c")
    assert meter.create_histogram("a.b", unit="s") is not meter.create_histogram("a.b", unit="ms")


def test_telemetry_exports_them_beside_the_sdks_instruments_on_its_resource() -> None:
    telemetry = setup_telemetry("hist-test", set_global=False)
    try:
        telemetry.meter.create_counter("things").add(2)
        size = telemetry.meter.create_histogram("payload.size", unit="By", description="Sizes")
        size.record(10, {"kind": "x"})
        size.record(20, {"kind": "x"})
        text = telemetry.prometheus_text()
        data = telemetry.metric_reader.get_metrics_data()
    finally:
        telemetry.shutdown()
    assert 'payload_size_bytes_count{kind="x"} 2' in text
    assert 'payload_size_bytes_sum{kind="x"} 30' in text
    assert 'payload_size_bytes_bucket{kind="x",le="25.0"} 2' in text
    assert "things_total 2" in text
    assert data is not None
    [resource_metrics] = data.resource_metrics
    assert resource_metrics.resource.attributes["service.name"] == "hist-test"
    [scope] = resource_metrics.scope_metrics  # the SDK's counter and faas's histogram together
    assert scope.scope.name == "faas"
    assert {m.name for m in scope.metrics} == {"things", "payload.size"}


def test_histograms_alone_are_exported_on_the_readers_resource() -> None:
    reader = AggregatingReader(Resource.create({"service.name": "only-histograms"}))
    meter = AggregatingMeter(MeterProvider([reader]).get_meter("faas"), reader)
    meter.create_histogram("h").record(1)
    data = reader.get_metrics_data()
    assert data is not None
    [resource_metrics] = data.resource_metrics
    assert resource_metrics.resource.attributes["service.name"] == "only-histograms"
    [(count, _, buckets, bounds, low, high)] = points_of(data, "h").values()
    assert (count, low, high) == (1, 1, 1)
    assert bounds == DEFAULT_BOUNDARIES
    assert buckets == [0, 1] + [0] * (len(DEFAULT_BOUNDARIES) - 1)  # (0, 5]


def test_attributes_are_cleaned_as_the_sdk_cleans_them() -> None:
    class Colour(enum.Enum):
        RED = "red"

    records: Records = [
        (1, {1: "x"}),  # type: ignore[dict-item]  # a key that is not a string
        (2, {"1": "x"}),  # the same set once cleaned
        (3, {"": "dropped", "kept": "y"}),
        (4, {"nested": {"a": 1, "b": [1, 2]}}),
        (5, {"colour": Colour.RED}),
        (6, [("not", "a mapping")]),  # type: ignore[list-item]
        (7, {"tags": ("x", "y")}),
        (8, {"tags": ["x", "y"]}),
    ]
    sdk, ours = both(records)
    assert ours == sdk
    assert len(ours) == 6


def test_a_second_collection_keeps_the_counts_and_the_start() -> None:
    reader = AggregatingReader(Resource.create({}))
    h = AggregatingMeter(MeterProvider([reader]).get_meter("faas"), reader).create_histogram("h")
    h.record(1, {"t": "a"})
    first = reader.get_metrics_data()
    h.record(2, {"t": "a"})
    second = reader.get_metrics_data()
    assert first is not None and second is not None
    data1 = first.resource_metrics[0].scope_metrics[0].metrics[0].data
    data2 = second.resource_metrics[0].scope_metrics[0].metrics[0].data
    assert isinstance(data1, Histogram) and isinstance(data2, Histogram)
    [p1], [p2] = data1.data_points, data2.data_points
    assert (p1.count, p2.count, p2.sum) == (1, 2, 3)
    assert p2.start_time_unix_nano == p1.start_time_unix_nano < p2.time_unix_nano


def test_advisory_boundaries_are_checked_as_the_sdk_checks_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sdk, ours = both([(0.5, None), (7, None)], explicit_bucket_boundaries_advisory=[])
    assert ours == sdk
    assert [bounds for _, _, _, bounds, _, _ in ours.values()] == [()]
    not_numbers: Any = ["0.1", "1"]
    sdk, ours = both([(3, None)], explicit_bucket_boundaries_advisory=not_numbers)
    assert ours == sdk
    assert [bounds for _, _, _, bounds, _, _ in ours.values()] == [DEFAULT_BOUNDARIES]
    assert "must be a sequence of numbers" in caplog.text
    meter = AggregatingMeter(
        MeterProvider().get_meter("faas"), AggregatingReader(Resource.create({}))
    )
    with pytest.raises(ValueError, match="strictly increasing"):
        meter.create_histogram("h", explicit_bucket_boundaries_advisory=[5, 1])
    with pytest.raises(ValueError, match="invalid boundary"):
        meter.create_histogram("h", explicit_bucket_boundaries_advisory=[1, math.inf])
