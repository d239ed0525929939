"""Request and response models of the LLMOps API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME = r"^[A-Za-z0-9._:/@-]{1,128}$"
MAX_METADATA_BYTES = 16_384
GroupBy = Literal["model", "day", "hour"]


class OperationIn(BaseModel):
    """One LLM operation logged by an external caller (the gateway's events need no call)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "gpt-4o-mini",
                    "provider": "openai",
                    "prompt_tokens": 120,
                    "completion_tokens": 40,
                    "cost_usd": 4.2e-05,
                    "latency_ms": 850.0,
                    "status": "ok",
                }
            ]
        },
        extra="forbid",
    )

    id: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    occurred_at: datetime | None = None
    operation: str = Field("chat", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    model: str = Field(pattern=NAME)
    provider: str | None = Field(None, max_length=64)
    prompt_tokens: int = Field(0, ge=0, le=100_000_000)
    completion_tokens: int = Field(0, ge=0, le=100_000_000)
    total_tokens: int | None = Field(None, ge=0, le=200_000_000)
    cached_tokens: int = Field(0, ge=0, le=100_000_000)
    cost_usd: float = Field(0.0, ge=0, le=1_000_000)
    latency_ms: float = Field(0.0, ge=0, le=86_400_000)
    status: Literal["ok", "error"] = "ok"
    error_code: str | None = Field(None, max_length=64)
    user_id: str | None = Field(None, max_length=128)
    agent_id: str | None = Field(None, max_length=128)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("occurred_at needs a timezone (e.g. 2026-01-01T00:00:00Z)")
        return value

    @field_validator("metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(orjson.dumps(value))
        except TypeError as exc:  # e.g. an integer beyond 64 bits
            raise ValueError(f"metadata cannot be stored as JSON: {exc}") from None
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes; at most {MAX_METADATA_BYTES}")
        return value


class IngestResult(BaseModel):
    accepted: int
    duplicates: int
    ids: list[str]


class OperationView(BaseModel):
    id: str
    tenant_id: str
    occurred_at: datetime
    source: str
    operation: str
    model: str
    deployment: str | None
    provider: str | None
    upstream_model: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    cost_usd: float
    latency_ms: float
    status: str
    error_code: str | None
    cached: bool
    stream: bool
    user_id: str | None
    agent_id: str | None
    correlation_id: str | None
    request_id: str | None
    metadata: dict[str, Any] | None


class Stats(BaseModel):
    key: str | None = None
    count: int = 0
    errors: int = 0
    error_rate: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    latency_avg_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None


class MetricsView(BaseModel):
    tenant_id: str
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    group_by: GroupBy
    totals: Stats
    series: list[Stats]


class CostItem(BaseModel):
    key: str | None
    count: int
    total_tokens: int
    cost_usd: float


class CostAnalysis(BaseModel):
    tenant_id: str | None
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    total_cost_usd: float
    by_model: list[CostItem]
    by_operation: list[CostItem]
    by_agent: list[CostItem]
    by_tenant: list[CostItem] | None
    trend: list[CostItem]


class AlertView(BaseModel):
    """A gateway alert as stored (`GET /api/v1/llmops/alerts`); USD amounts."""

    id: str
    occurred_at: datetime
    kind: str
    level: str
    budget: str | None
    window: str
    threshold: float
    limit_usd: float
    spent_usd: float
    baseline_usd: float | None
    message: str
