"""Settings from the environment (prefix FAAS_). Built by `load_settings()`, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SERVICE_NAMES: tuple[str, ...] = (
    "gateway",
    "cache",
    "rag",
    "agent",
    "prompt",
    "ml",
    "ingestion",
    "llmops",
    "prompt_generator",
)

DEFAULT_PORTS: dict[str, int] = {name: 8001 + i for i, name in enumerate(SERVICE_NAMES)}

# Secrets that appear in examples and tutorials; production refuses them.
WEAK_SECRETS = frozenset({"", "secret", "changeme", "change-me", "dev", "development", "faas"})


class ConfigError(ValueError):
    """The configuration cannot run; the message names the variable to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAAS_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path(".faas")
    host: str = "127.0.0.1"
    port: int = 8000
    service_name: str = "faas"
    log_level: str = "INFO"
    log_requests: bool = True

    database_url: str | None = None
    redis_url: str | None = None
    nats_url: str | None = None
    nats_prefix: str = ""
    codec: str = "application/json"

    auth: Literal["jwt", "trusted-headers", "none"] = "jwt"
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = 30.0

    max_body_bytes: int = 10 * 1024 * 1024
    shutdown_grace_s: float = 10.0

    gateway_url: str | None = None
    cache_url: str | None = None
    rag_url: str | None = None
    agent_url: str | None = None
    prompt_url: str | None = None
    ml_url: str | None = None
    ingestion_url: str | None = None
    llmops_url: str | None = None
    prompt_generator_url: str | None = None

    client_timeout_s: float = 30.0
    client_retries: int = 3
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0

    cache_max_entries: int = 100_000
    cache_max_bytes: int = 256 * 1024 * 1024
    cache_max_value_bytes: int = 1024 * 1024
    cache_default_ttl_s: float | None = None

    migrate_on_start: bool = True  # development only; production runs `faas migrate`
    run_worker: bool = True
    job_concurrency: int = 4
    job_ack_wait_s: float = 30.0
    job_max_attempts: int = 5
    job_retry_base_s: float = 1.0
    job_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)

    vector_url: str | None = None
    rag_embedding_model: str | None = None
    rag_chat_model: str | None = None
    max_upload_bytes: int = 50 * 1024 * 1024
    ingestion_url_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ingestion_fetch_timeout_s: float = 20.0
    llmops_retention_days: int = 90
    agent_http_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)

    gateway_models: Path | None = None
    gateway_cache_ttl_s: float = 3600.0
    gateway_default_rpm: int | None = None
    gateway_default_tpm: int | None = None
    gateway_default_daily_budget_usd: float | None = None
    gateway_default_monthly_budget_usd: float | None = None
    gateway_limits_on_store_error: Literal["open", "closed"] = "closed"
    gateway_completion_estimate_tokens: int = 256
    gateway_breaker_failures: int = 3
    gateway_breaker_cooldown_s: float = 30.0
    gateway_reload_poll_s: float = 2.0
    trace_content: bool = False
    services: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(SERVICE_NAMES))

    @field_validator(
        "services", "job_modules", "ingestion_url_allowlist", "agent_http_allowlist", mode="before"
    )
    @classmethod
    def _split_services(cls, value: object) -> object:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'faas.db'}"

    def service_url(self, name: str) -> str | None:
        value = getattr(self, f"{name}_url", None)
        return value if isinstance(value, str) and value else None

    def check_runnable(self) -> None:
        """Refuse configurations that are unsafe to serve; each message names what to set."""
        if self.auth == "none" and self.env != "development":
            raise ConfigError("FAAS_AUTH=none is allowed only with FAAS_ENV=development")
        if self.env != "production" or self.auth != "jwt":
            return
        if self.jwt_public_key or self.jwks_url:
            return
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        if secret.lower() in WEAK_SECRETS or len(secret) < 32:
            raise ConfigError(
                "production needs a JWT key: set FAAS_JWT_SECRET to a random string of at least "
                "32 characters, or FAAS_JWT_PUBLIC_KEY / FAAS_JWKS_URL"
            )


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
