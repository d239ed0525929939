"""How other services call the ML service: predictions from a deployed model. Requests and
answers are the ML service's own models; errors arrive as the shared exceptions (an unknown
model stays a 404)."""

from __future__ import annotations

from urllib.parse import quote

from faas.kernel.clients import ApiClient
from faas.services.ml_service.models import PredictRequest, PredictResponse


class MlClient(ApiClient):
    service = "ml"

    async def predict(self, model: str, request: PredictRequest) -> PredictResponse:
        """Predictions of `model` (its version or alias, else the deployed one) for one row of
        features or several, e.g. for the MCP `ml_predict` tool."""
        return await self.model(
            PredictResponse,
            "POST",
            f"/api/v1/ml/models/{quote(model, safe='')}/predict",
            json=request.model_dump(mode="json", exclude_none=True),
        )
