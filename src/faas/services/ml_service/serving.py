"""Realtime serving: resolve the version, check the inputs against its schema, predict with
the pipeline from an LRU of loaded models, and record what was asked for drift monitoring."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from faas.services.ml_service import artifacts, features, training
from faas.services.ml_service.instruments import PredictionInstruments
from faas.services.ml_service.models import ModelView, PredictResponse
from faas.services.ml_service.monitoring import DriftMonitor
from faas.services.ml_service.registry import CHAMPION, ModelRegistry, Resolved
from faas.shared.exceptions import FaaSError

CACHE_SIZE = 16
# Small requests predict inline: for a few rows the hop to a worker thread costs more than
# the prediction.
INLINE_ROWS = 64


class ModelServer:
    def __init__(
        self, registry: ModelRegistry, monitor: DriftMonitor, instruments: PredictionInstruments
    ) -> None:
        self.registry = registry
        self.monitor = monitor
        self.instruments = instruments
        self._models: OrderedDict[tuple[str, str, int], Any] = OrderedDict()

    def unload_all(self) -> None:
        self._models.clear()

    async def load(self, tenant: str, resolved: Resolved) -> Any:
        """The version's fitted pipeline, from the cache or its (checked) artifact."""
        key = (tenant, resolved.model_id, resolved.version)
        pipeline = self._models.get(key)
        if pipeline is not None:
            self._models.move_to_end(key)
            return pipeline
        row = resolved.row
        pipeline = await asyncio.to_thread(
            artifacts.load, resolved.path, row.artifact_sha256, list(row.artifact_types)
        )
        self._models[key] = pipeline
        while len(self._models) > CACHE_SIZE:
            self._models.popitem(last=False)
        return pipeline

    async def deploy(self, tenant: str, name: str, version: int) -> ModelView:
        """Point `champion` at the version and load it, so its first request is not slow."""
        view = await self.registry.set_alias(tenant, name, CHAMPION, version)
        await self.load(tenant, await self.registry.resolve(tenant, name, version=version))
        return view

    async def ready(self, tenant: str, name: str) -> tuple[Resolved, bool]:
        """The served version, and whether its artifact loads."""
        resolved = await self.registry.resolve(tenant, name)
        try:
            await self.load(tenant, resolved)
        except FaaSError:
            return resolved, False
        return resolved, True

    async def predict(
        self,
        tenant: str,
        name: str,
        rows: Sequence[Any],
        *,
        version: int | None = None,
        alias: str | None = None,
    ) -> PredictResponse:
        resolved, predictions = await self.predict_rows(
            tenant, name, rows, version=version, alias=alias
        )
        return PredictResponse(model=name, version=resolved.version, predictions=predictions)

    async def predict_rows(
        self,
        tenant: str,
        name: str,
        rows: Sequence[Any],
        *,
        version: int | None = None,
        alias: str | None = None,
    ) -> tuple[Resolved, list[Any]]:
        """The version that answered and its predictions, one per row."""
        started = time.perf_counter()
        resolved = await self.registry.resolve(tenant, name, version=version, alias=alias)
        row = resolved.row
        checked = features.validate_inputs(rows, row.input_schema)
        pipeline = await self.load(tenant, resolved)
        if len(checked) <= INLINE_ROWS:
            predictions = training.predict(pipeline, checked, row.input_schema, row.output)
        else:
            predictions = await asyncio.to_thread(
                training.predict, pipeline, checked, row.input_schema, row.output
            )
        self.monitor.observe(tenant, name, checked)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.instruments.realtime(tenant, name, resolved.version, len(predictions), elapsed_ms)
        return resolved, predictions
