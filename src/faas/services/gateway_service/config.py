"""Model routing, declared in YAML (FAAS_GATEWAY_MODELS): aliases → ordered deployments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from faas.shared.exceptions import ValidationFailed

ProviderName = Literal["openai", "litellm", "llamacpp", "minilm", "hash", "mock"]
EMBEDDING_PROVIDERS = frozenset({"minilm", "hash"})


class Price(BaseModel):
    """USD per 1,000 tokens. Cached prompt tokens are billed at `cached_input_per_1k` when
    the provider reports them (default: the full input price)."""

    model_config = ConfigDict(frozen=True)

    input_per_1k: float = Field(0.0, ge=0)
    output_per_1k: float = Field(0.0, ge=0)
    cached_input_per_1k: float | None = Field(None, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(cached_tokens, prompt_tokens)
        cached_rate = self.cached_input_per_1k
        if cached_rate is None:
            cached_rate = self.input_per_1k
        return (
            (prompt_tokens - cached) * self.input_per_1k
            + cached * cached_rate
            + completion_tokens * self.output_per_1k
        ) / 1000.0


class Deployment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: ProviderName
    model: str = ""
    api_base: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(60.0, gt=0, le=3600)
    rpm: int | None = Field(None, gt=0, le=10**9)
    tpm: int | None = Field(None, gt=0, le=10**9)
    weight: float = Field(1.0, gt=0)
    priority: int | None = Field(
        None, description="equal priorities share load by weight; default: list position"
    )
    price: Price = Field(default_factory=Price)
    context_window: int | None = Field(None, gt=0, le=10**8)
    max_output_tokens: int | None = Field(
        None,
        gt=0,
        le=10**8,
        description="the most tokens one answer can have; budgets reserve it when a request "
        "sets no max_tokens (default: FAAS_GATEWAY_COMPLETION_ESTIMATE_TOKENS)",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    model_path: str | None = None
    dimensions: int | None = Field(None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("api_key", mode="before")
    @classmethod
    def _resolve_env(cls, value: object) -> object:
        # `env:NAME` keeps secrets out of the file; a missing variable is a clear error.
        if isinstance(value, str) and value.startswith("env:"):
            name = value[4:]
            resolved = os.environ.get(name)
            if resolved is None:
                raise ValueError(f"api_key refers to ${name}, which is not set")
            return resolved
        return value

    def output_bound(self, prompt_tokens: int, asked: int | None, fallback: int) -> int:
        """The most completion tokens an answer can bill: what the request allows, else the
        deployment's max output, else `fallback` — never more than the model can produce.
        (The context window only tightens: reserving a whole 128k window per call would refuse
        every request of a tenant whose tpm is below it.)"""
        bound = asked if asked is not None else self.max_output_tokens or fallback
        if self.max_output_tokens is not None:
            bound = min(bound, self.max_output_tokens)
        if self.context_window is not None:
            bound = min(bound, max(1, self.context_window - prompt_tokens))
        return bound

    @property
    def id(self) -> str:
        base = f"{self.provider}:{self.model or 'default'}"
        return f"{base}@{self.api_base}" if self.api_base else base


class ModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._:/-]{1,128}$")
    kind: Literal["chat", "embedding"] = "chat"
    deployments: list[Deployment] = Field(min_length=1)
    description: str = ""

    @model_validator(mode="after")
    def _providers_fit_kind(self) -> ModelConfig:
        for d in self.deployments:
            if self.kind == "chat" and d.provider in EMBEDDING_PROVIDERS:
                raise ValueError(f"{self.name}: provider {d.provider} only serves embeddings")
        return self


class RoutingTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    models: list[ModelConfig] = Field(min_length=1)
    source: str = "built-in defaults"

    @model_validator(mode="after")
    def _unique_names(self) -> RoutingTable:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique: {', '.join(duplicates)}")
        return self

    def get(self, name: str) -> ModelConfig | None:
        for model in self.models:
            if model.name == name:
                return model
        return None

    def default_for(self, kind: Literal["chat", "embedding"]) -> ModelConfig:
        preferred = "chat-default" if kind == "chat" else "embed-default"
        model = self.get(preferred)
        if model is not None and model.kind == kind:
            return model
        for candidate in self.models:
            if candidate.kind == kind:
                return candidate
        raise ValidationFailed(f"no {kind} model is configured")


def load_routing(path: Path) -> RoutingTable:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationFailed(f"cannot read model routing {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{path}: expected a mapping with a 'models' list")
    try:
        return RoutingTable.model_validate({**raw, "source": str(path)})
    except ValueError as exc:
        raise ValidationFailed(f"invalid model routing in {path}: {exc}") from exc
