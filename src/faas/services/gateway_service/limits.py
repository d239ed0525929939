"""The per-tenant limits the API exposes. The counters they cap are a backend
(`faas.backends.limits`), which reads these fields as plain numbers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from faas.backends.limits import MAX_BUDGET_USD, MAX_RATE


class TenantLimits(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"rpm": 600, "tpm": 200000, "daily_budget_usd": 5.0, "monthly_budget_usd": 100.0}
            ]
        }
    )

    rpm: int | None = Field(None, ge=1, le=MAX_RATE, description="requests per minute")
    tpm: int | None = Field(None, ge=1, le=MAX_RATE, description="tokens per minute")
    daily_budget_usd: float | None = Field(None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    monthly_budget_usd: float | None = Field(None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    semantic_cache: bool = False
