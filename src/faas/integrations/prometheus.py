"""Render OpenTelemetry SDK metrics as Prometheus text exposition format 0.0.4.

No `prometheus_client`: the SDK's in-memory reader collects, this module writes the text.
Naming follows the OpenTelemetry-to-Prometheus compatibility rules: dots and other invalid
characters become underscores, a known unit becomes a suffix (`s` -> `_seconds`), monotonic
sums get `_total`; histograms become `_bucket{le=...}` / `_sum` / `_count`; non-monotonic sums
and gauges are gauges. Exponential histograms are not rendered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from opentelemetry.sdk.metrics.export import Gauge, Histogram, Metric, MetricsData, Sum
from opentelemetry.util.types import AttributeValue

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LE_INF = 'le="+Inf"'

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
_UNITS = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "%": "percent",
    "Hz": "hertz",
}
_PER_UNITS = {"s": "second", "min": "minute", "h": "hour", "d": "day"}


def metric_name(name: str, unit: str = "") -> str:
    """The Prometheus base name (no `_total`) for an OTel instrument name and unit."""
    base = _INVALID_NAME.sub("_", name).strip("_") or "_"
    suffix = _unit_suffix(unit)
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return f"_{base}" if base[0].isdigit() else base


def _unit_suffix(unit: str) -> str:
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()  # `{request}` is an annotation, not a unit
    if not unit or unit == "1":
        return ""
    per, _, denom = unit.partition("/")
    words = [_UNITS.get(per, per)] if per else []
    if denom:
        words += ["per", _PER_UNITS.get(denom, denom)]
    return _INVALID_LABEL.sub("_", "_".join(words)).strip("_")


def label_name(key: str) -> str:
    name = _INVALID_LABEL.sub("_", key) or "_"
    return f"_{name}" if name[0].isdigit() else name


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(value: AttributeValue) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, int | float):
        return format_value(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_label_text(v)}" for k, v in value.items()) + "}"
    return "[" + ",".join(_label_text(v) for v in value) + "]"


def format_value(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _labels(attributes: Mapping[str, AttributeValue] | None, extra: str = "") -> str:
    merged: dict[str, str] = {}
    for key, value in (attributes or {}).items():
        name = label_name(key)
        text = _label_text(value)
        merged[name] = f"{merged[name]};{text}" if name in merged else text
    parts = [f'{k}="{escape_label_value(merged[k])}"' for k in sorted(merged)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Family:
    __slots__ = ("help", "samples", "type")

    def __init__(self, type_: str, help_: str) -> None:
        self.type = type_
        self.help = help_
        self.samples: list[str] = []


def _add(families: dict[str, _Family], metric: Metric) -> None:
    data = metric.data
    base = metric_name(metric.name, metric.unit or "")
    help_ = metric.description or metric.name
    if isinstance(data, Sum) and data.is_monotonic:
        name = base if base.endswith("_total") else f"{base}_total"
        family = families.setdefault(name, _Family("counter", help_))
        if family.type == "counter":
            for point in data.data_points:
                labels = _labels(point.attributes)
                family.samples.append(f"{name}{labels} {format_value(point.value)}")
    elif isinstance(data, Sum | Gauge):
        family = families.setdefault(base, _Family("gauge", help_))
        if family.type == "gauge":
            for point in data.data_points:
                labels = _labels(point.attributes)
                family.samples.append(f"{base}{labels} {format_value(point.value)}")
    elif isinstance(data, Histogram):
        family = families.setdefault(base, _Family("histogram", help_))
        if family.type != "histogram":
            return
        for hp in data.data_points:
            cumulative = 0
            for bound, count in zip(hp.explicit_bounds, hp.bucket_counts, strict=False):
                cumulative += count
                le = f'le="{format_value(float(bound))}"'
                family.samples.append(f"{base}_bucket{_labels(hp.attributes, le)} {cumulative}")
            family.samples.append(f"{base}_bucket{_labels(hp.attributes, _LE_INF)} {hp.count}")
            family.samples.append(f"{base}_sum{_labels(hp.attributes)} {format_value(hp.sum)}")
            family.samples.append(f"{base}_count{_labels(hp.attributes)} {hp.count}")


def render(data: MetricsData | None) -> str:
    """The exposition text for one collection; empty string when there is nothing to show."""
    families: dict[str, _Family] = {}
    for metric in _metrics(data):
        _add(families, metric)
    lines: list[str] = []
    for name, family in families.items():
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.type}")
        lines.extend(family.samples)
    return "\n".join(lines) + "\n" if lines else ""


def _metrics(data: MetricsData | None) -> Iterable[Metric]:
    if data is None:
        return
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            yield from scope_metrics.metrics
