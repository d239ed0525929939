"""Wire models of the gateway's native API (`/api/v1/gateway/...`) and of the usage event it
publishes. The OpenAI-compatible routes (`/v1/...`) take and return OpenAI's own shapes."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from faas.services.gateway_service.inputs import MAX_EMBED_INPUTS as MAX_EMBED_TEXTS
from faas.services.gateway_service.limits import TenantLimits

MAX_MESSAGES = 2048
# Beyond any model's output; keeps worst-case reservations inside Redis' 64-bit counters.
MAX_OUTPUT_TOKENS = 10**8

# Which API surface a call came through: chat and embeddings (OpenAI), completions (OpenAI's
# legacy prompt API), messages (Anthropic), responses (OpenAI Responses), rerank.
Operation = Literal["chat", "embeddings", "completions", "messages", "responses", "rerank"]
CacheHit = Literal[False, "exact", "semantic"]
UsageSource = Literal["provider", "estimated"]
CallStatus = Literal["ok", "error", "partial"]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class CacheOptions(BaseModel):
    """Per-request cache control: `exact` defaults to on for deterministic requests."""

    exact: bool | None = None
    semantic: bool | None = None
    threshold: float = Field(0.92, ge=0.5, le=1.0)
    force: bool = False


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "chat-default",
                    "messages": [
                        {"role": "user", "content": "Name three uses of a vector database."}
                    ],
                    "max_tokens": 128,
                }
            ]
        }
    )

    prompt: str | None = Field(None, max_length=2_000_000)
    messages: list[Message] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    model: str | None = None
    max_tokens: int | None = Field(None, gt=0, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    cache: CacheOptions | None = None

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self

    def openai_body(self) -> dict[str, Any]:
        messages = (
            [m.model_dump(exclude_none=True) for m in self.messages]
            if self.messages is not None
            else [{"role": "user", "content": self.prompt}]
        )
        body: dict[str, Any] = {"messages": messages}
        for name in (
            "model",
            "max_tokens",
            "temperature",
            "top_p",
            "stop",
            "seed",
            "tools",
            "tool_choice",
            "response_format",
        ):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


class UsageView(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    cost_usd: float
    usage_source: UsageSource


class GenerateResponse(BaseModel):
    text: str | None
    message: dict[str, Any]
    model: str
    deployment: str
    usage: UsageView
    finish_reason: str | None
    cached: CacheHit = False


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "embed-default",
                    "texts": ["faas serves AI components", "a semantic cache"],
                }
            ]
        }
    )

    texts: list[str] = Field(min_length=1, max_length=MAX_EMBED_TEXTS)
    model: str | None = None


class EmbeddingsResponse(BaseModel):
    model: str
    deployment: str
    dimensions: int
    vectors: list[list[float]]
    usage: UsageView


class DeploymentView(BaseModel):
    id: str
    provider: str
    model: str
    timeout_s: float
    rpm: int | None
    tpm: int | None
    weight: float
    context_window: int | None
    max_output_tokens: int | None
    price: dict[str, float | None]


class ModelView(BaseModel):
    name: str
    kind: Literal["chat", "embedding", "rerank"]
    description: str
    deployments: list[DeploymentView]


class ModelsView(BaseModel):
    source: str
    models: list[ModelView]


class ProviderHealth(BaseModel):
    model: str
    deployment: str
    provider: str
    healthy: bool
    breaker: str


class RateLimitsView(BaseModel):
    tenant_id: str
    limits: TenantLimits
    remaining: dict[str, float | int | None]
    used: dict[str, float]


def as_count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def as_amount(value: Any) -> float:
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


# A count or amount that is not a finite, non-negative number reads as 0: one bad figure
# must not cost the whole record of a call that was made (and maybe billed).
Count = Annotated[int, BeforeValidator(as_count)]
Amount = Annotated[float, BeforeValidator(as_amount)]


class UsageEvent(BaseModel):
    """The body of `gateway.usage.{tenant}`: one per gateway call, cached or failed ones too.
    LLMOps reads it back through this class; fields it lacks take their defaults."""

    operation: Operation = Field("chat", description="The kind of call.")
    model: str = Field(description="The model name the caller asked for (after defaulting).")
    deployment: str | None = Field(None, description="The deployment that answered, if any.")
    provider: str | None = Field(None, description="That deployment's provider.")
    upstream_model: str | None = Field(None, description="The model name sent upstream.")
    prompt_tokens: Count = Field(0, description="Input tokens.")
    completion_tokens: Count = Field(0, description="Output tokens.")
    total_tokens: Count = Field(0, description="All tokens billed; 0 when not reported.")
    cached_tokens: Count = Field(0, description="Input tokens the provider served from its cache.")
    reasoning_tokens: Count = Field(0, description="Output tokens spent on hidden reasoning.")
    usage_source: UsageSource = Field(
        "provider", description="Whether the provider reported the tokens or we counted them."
    )
    cost_usd: Amount = Field(0.0, description="The call's cost at the deployment's price.")
    latency_ms: Amount = Field(0.0, description="The whole call, as the gateway saw it.")
    upstream_ms: Amount = Field(0.0, description="Time spent waiting on providers.")
    status: CallStatus = Field(
        "ok", description="`partial`: a stream that failed after content was sent."
    )
    error_code: str | None = Field(None, description="The error's code when not `ok`.")
    cached: CacheHit = Field(False, description="Which response cache answered, if one did.")
    stream: bool = Field(False, description="Whether the answer was streamed.")
    user_id: str | None = Field(None, description="The caller's user, when known.")
    correlation_id: str | None = Field(None, description="The request's correlation id.")
    request_id: str | None = Field(None, description="The request's id.")
    key_id: str | None = Field(None, description="The API key the call came with, if any.")
    team: str | None = Field(None, description="The caller's team (from its API key).")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Spend attribution: `x-faas-tags` and the body's `metadata` (a plain tag "
        "has an empty value).",
    )


AlertKind = Literal["budget_threshold", "spend_anomaly"]


class AlertEvent(BaseModel):
    """The body of `gateway.alert.{tenant}` (and of the alert webhook's `data`): a budget's
    soft threshold crossed, or a spend rate far above the tenant's trailing hour. LLMOps reads
    it back through this class."""

    kind: AlertKind = Field(description="What was detected.")
    level: Literal["tenant"] = Field("tenant", description="The budget level it concerns.")
    budget: Literal["daily", "monthly"] | None = Field(
        None, description="Which budget (budget_threshold only)."
    )
    window: str = Field(
        description="The window it belongs to: the UTC day (`20261206`) or month (`202612`) of "
        "a budget, or the UTC minute (`2026-12-06T10:55Z`) that starts an anomaly's window."
    )
    threshold: float = Field(
        description="The budget fraction crossed (0.8), or the rate factor of an anomaly (3.0)."
    )
    limit: float = Field(
        description="USD: the budget, or for an anomaly the most the window could spend at "
        "`threshold` times the trailing rate (never below the floor)."
    )
    spent: float = Field(description="USD spent in the window.")
    baseline: float | None = Field(
        None, description="USD per minute over the trailing hour (spend_anomaly only)."
    )
    message: str = Field(description="One line for a person.")
