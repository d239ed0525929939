"""Model routing, declared in YAML (FAAS_GATEWAY_MODELS): aliases → ordered deployments."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from faas.shared.exceptions import ValidationFailed

ProviderName = Literal[
    "openai", "litellm", "llamacpp", "minilm", "hash", "mock", "cohere", "cosine", "anthropic"
]
ModelKind = Literal["chat", "embedding", "rerank"]
EMBEDDING_PROVIDERS = frozenset({"minilm", "hash"})
RERANK_PROVIDERS = frozenset({"cohere", "cosine"})
_DEFAULT_NAMES = {"chat": "chat-default", "embedding": "embed-default", "rerank": "rerank-default"}
_ENV_REFERENCE = re.compile(r"^(?:env:|\$\{?)([A-Za-z_][A-Za-z0-9_]*)\}?$")


def env_reference(value: object) -> str | None:
    """The variable an api_key names (`env:NAME`, `$NAME`, `${NAME}`), or None."""
    if not isinstance(value, str):
        return None
    match = _ENV_REFERENCE.match(value.strip())
    return match.group(1) if match else None


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
    token_ids: Literal["decode", "pass"] = Field(
        "decode",
        description="embeddings sent as token ids: decoded to text with cl100k (default), or "
        "passed through as ids (`pass`: an openai deployment whose model tokenizes with cl100k, "
        "as OpenAI's text-embedding models do)",
    )

    @model_validator(mode="after")
    def _ids_pass_to_openai_only(self) -> Deployment:
        if self.token_ids == "pass" and self.provider != "openai":
            raise ValueError("token_ids: pass needs provider openai (others take text)")
        return self

    @model_validator(mode="after")
    def _catalogue_price(self) -> Deployment:
        # No `price` in the routing file: the bundled catalogue's list price for the model.
        if "price" not in self.model_fields_set and self.model:
            from faas.services.gateway_service.price_catalogue import catalogue_price

            found = catalogue_price(self.model)
            if found is not None:
                object.__setattr__(self, "price", found)  # frozen: set once, while validating
        return self

    # The variable its api_key names when that is unset: the deployment cannot serve.
    _missing_key: str | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_key(cls, data: Any, handler: ModelWrapValidatorHandler[Deployment]) -> Deployment:
        # `env:NAME`, `$NAME` or `${NAME}` keeps secrets out of the file. An unset variable
        # makes this deployment unavailable rather than the whole file invalid: the others
        # (a local fallback) still serve.
        variable = env_reference(data.get("api_key")) if isinstance(data, dict) else None
        if variable is None:
            return handler(data)
        value = os.environ.get(variable) or None
        deployment = handler({**data, "api_key": value})
        if value is None:
            deployment._missing_key = variable
        return deployment

    @property
    def missing_key(self) -> str | None:
        # Pydantic's store of private attributes read directly: `self._missing_key` goes
        # through `BaseModel.__getattr__` (1.7 us against 0.07; checked on every call routed).
        private = self.__pydantic_private__
        assert private is not None  # a dict: the model declares a private attribute
        missing: str | None = private["_missing_key"]
        return missing

    @property
    def unavailable(self) -> str | None:
        """Why this deployment cannot serve, or None when it can."""
        missing = self.missing_key
        if missing is None:
            return None
        return f"api_key needs ${missing}, which is not set"

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
    kind: ModelKind = "chat"
    deployments: list[Deployment] = Field(min_length=1)
    description: str = ""

    @model_validator(mode="after")
    def _providers_fit_kind(self) -> ModelConfig:
        for d in self.deployments:
            if self.kind == "chat" and d.provider in EMBEDDING_PROVIDERS:
                raise ValueError(f"{self.name}: provider {d.provider} only serves embeddings")
            if (self.kind == "rerank") != (d.provider in RERANK_PROVIDERS):
                raise ValueError(
                    f"{self.name}: a {self.kind} model cannot use provider {d.provider} "
                    f"(rerank providers: {', '.join(sorted(RERANK_PROVIDERS))})"
                )
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

    def default_for(self, kind: ModelKind) -> ModelConfig:
        model = self.get(_DEFAULT_NAMES[kind])
        if model is not None and model.kind == kind:
            return model
        for candidate in self.models:
            if candidate.kind == kind:
                return candidate
        raise ValidationFailed(f"no {kind} model is configured")


def unavailable_deployments(table: RoutingTable) -> list[tuple[ModelConfig, Deployment]]:
    """Deployments that cannot serve as configured (a key's variable is unset)."""
    return [(m, d) for m in table.models for d in m.deployments if d.unavailable]


def describe_unavailable(model: ModelConfig, deployment: Deployment) -> str:
    """One line for a deployment that cannot serve, saying what the model falls back to."""
    usable = [d for d in model.deployments if not d.unavailable]
    outcome = (
        f"requests use {', '.join(d.id for d in usable)}"
        if usable
        else "the model has no other deployment: its requests get 503"
    )
    return (
        f"model {model.name!r}: deployment {deployment.id} is unavailable "
        f"({deployment.unavailable}); {outcome}"
    )


def load_routing(path: Path) -> RoutingTable:
    """The routing table in `path`; ValidationFailed lists one line per problem in
    `details["problems"]` (a key's value is never among them)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise ValidationFailed(
            f"cannot read model routing {path}: {reason}", details={"problems": [reason]}
        ) from exc
    if not isinstance(raw, dict):
        problem = "expected a mapping with a 'models' list"
        raise ValidationFailed(f"{path}: {problem}", details={"problems": [problem]})
    try:
        return RoutingTable.model_validate({**raw, "source": str(path)})
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        raise ValidationFailed(
            f"invalid model routing in {path}: {'; '.join(problems)}",
            details={"problems": problems},
        ) from None


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "file"
    reason = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        allowed = str((error.get("ctx") or {}).get("expected", "")).replace("'", "")
        reason = f"use {allowed}"
    secret = any(part in ("api_key", "headers") for part in error["loc"])
    if secret or error["type"] == "missing" or isinstance(error.get("input"), dict | list):
        return f"{where}: {reason}"
    return f"{where}={error.get('input')!r} is not allowed: {reason}"
