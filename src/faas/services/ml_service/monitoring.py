"""Drift monitoring: the last prediction inputs of each model, kept in memory per process,
compared with the served version's training profile."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from faas.services.ml_service import profiles
from faas.services.ml_service.models import DriftView
from faas.services.ml_service.registry import ModelRegistry

WINDOW = 1000
MIN_DRIFT_WINDOW = 20


class DriftMonitor:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._windows: dict[tuple[str, str], deque[dict[str, Any]]] = {}

    def observe(self, tenant: str, name: str, rows: Sequence[dict[str, Any]]) -> None:
        window = self._windows.get((tenant, name))
        if window is None:
            window = self._windows[(tenant, name)] = deque(maxlen=WINDOW)
        window.extend(rows[-WINDOW:])

    async def drift(self, tenant: str, name: str) -> DriftView:
        """Per-feature drift of the window; the model drifts once the window is big enough
        for the statistics to mean something and any feature drifts."""
        resolved = await self.registry.resolve(tenant, name)
        window = list(self._windows.get((tenant, name), ()))
        features: dict[str, dict[str, Any]] = {}
        if window:
            features = await asyncio.to_thread(
                profiles.drift, resolved.row.profile, resolved.row.input_schema, window
            )
        flagged = len(window) >= MIN_DRIFT_WINDOW and any(f["drift"] for f in features.values())
        return DriftView(
            model=name,
            version=resolved.version,
            window_size=len(window),
            drift=flagged,
            features=features,
        )
