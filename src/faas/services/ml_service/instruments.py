"""The ML service's OpenTelemetry instruments: rows predicted (realtime and batch) and
realtime prediction latency, by tenant, model and version."""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.util.types import AttributeValue


class PredictionInstruments:
    def __init__(self, meter: metrics.Meter) -> None:
        self._predicted = meter.create_counter(
            "faas.ml.predictions", unit="{row}", description="Rows predicted, realtime and batch"
        )
        self._predict_ms = meter.create_histogram(
            "faas.ml.predict.duration",
            unit="ms",
            description="Realtime prediction time: model resolution, validation, predict",
        )

    def realtime(self, tenant: str, model: str, version: int, rows: int, elapsed_ms: float) -> None:
        attrs = _attributes(tenant, model, version)
        self._predict_ms.record(elapsed_ms, attrs)
        self._predicted.add(rows, attrs | {"faas.ml.mode": "realtime"})

    def batch(self, tenant: str, model: str, version: int, rows: int) -> None:
        self._predicted.add(rows, _attributes(tenant, model, version) | {"faas.ml.mode": "batch"})


def _attributes(tenant: str, model: str, version: int) -> dict[str, AttributeValue]:
    return {"faas.tenant": tenant, "faas.ml.model": model, "faas.ml.version": version}
