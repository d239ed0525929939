"""Settings from the environment (prefix FAAS_). Built by `load_settings()`, never at import."""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from faas.shared.alert_settings import AlertSettings


class ConfigError(ValueError):
    """The configuration cannot run; each problem is one line naming the variable to set."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


_SERVICE_URL = re.compile(r"FAAS_(?P<name>[A-Z][A-Z0-9_]*)_URL")
# FAAS_TEST_* belongs to the test suite (FAAS_TEST_DATABASE_URL, FAAS_TEST_REDIS_URL...), which CI
# exports into every process it starts: those are never service URLs.
_TEST_PREFIX = "FAAS_TEST_"
_SECRET_NAME = re.compile(r"secret|key|password|token", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:)(?P<password>[^@/]*)@")
MASK = "********"


def masked(name: str, value: object) -> str:
    """`value` as it may be printed: secrets (by type or by name) masked, URL passwords too."""
    if value is None:
        return ""
    if isinstance(value, SecretStr) or (_SECRET_NAME.search(name) and value != ""):
        return MASK
    if isinstance(value, list | tuple):
        return ",".join(masked(name, v) for v in value)
    text = str(value)
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)


_ALLOWED = {
    "int_parsing": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number",
    "finite_number": "use a finite number",
    "bool_parsing": "use true or false",
    "path_type": "use a file path",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def describe_problem(error: Any) -> str:
    """One line for one pydantic error of Settings: the variable, its value, what is allowed."""
    field = str(error["loc"][0]) if error.get("loc") else ""
    variable = f"FAAS_{field.upper()}"
    shown = repr(masked(field, error.get("input")))
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        allowed = str(ctx.get("expected", "")).replace("'", "")
        return f"{variable}={shown} is not allowed: use {allowed}"
    if kind in _ALLOWED:
        return f"{variable}={shown} is not allowed: {_ALLOWED[kind]}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{variable}={shown} is not allowed: use a value {words} {ctx.get(key)}"
    reason = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{variable}={shown} is not allowed: {reason}"


# Secrets that appear in examples and tutorials; production refuses them.
WEAK_SECRETS = frozenset({"", "secret", "changeme", "change-me", "dev", "development", "faas"})
MIN_SECRET_CHARS = 32
# Shannon entropy of the secret's own characters, summed over its length. Measured on 200,000
# draws each: `secrets.token_hex(16)` and `uuid4().hex` never below 89 bits, `token_urlsafe(24)`
# never below 119; one character 32 times is 0 bits, "ab" 16 times is 32.
MIN_SECRET_BITS = 80.0
GENERATE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
LOOPBACK_CIDRS = ("127.0.0.0/8", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def secret_weakness(secret: str) -> str | None:
    """Why `secret` is too weak to sign tokens in production, or None when it will do."""
    if secret.lower() in WEAK_SECRETS:
        return "it is a well-known example value"
    n = len(secret)
    if n < MIN_SECRET_CHARS:
        return f"it is shorter than {MIN_SECRET_CHARS} characters"
    if any(secret == (secret[:p] * (n // p + 1))[:n] for p in range(1, n // 2 + 1)):
        return "it repeats a shorter string"
    steps = [ord(b) - ord(a) for a, b in itertools.pairwise(secret)]
    constant = sum(1 for a, b in itertools.pairwise(steps) if a == b)
    if constant * 2 > len(steps) - 1:
        return "it is mostly a run of consecutive characters (like abcdef or 123456)"
    bits = -sum(c * math.log2(c / n) for c in Counter(secret).values())
    if bits < MIN_SECRET_BITS:
        return f"its characters carry about {bits:.0f} bits (at least {MIN_SECRET_BITS:.0f} needed)"
    return None


def parse_networks(entries: list[str]) -> list[Network]:
    """CIDRs (or single addresses); ConfigError names the entry that is neither."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"FAAS_TRUSTED_PROXY_CIDRS: {entry!r} is not a CIDR (like 10.0.0.0/8)"
            ) from exc
    return networks


class Settings(AlertSettings):
    """Every setting, one `FAAS_<NAME>` variable each. The docstring under a field is its
    description, from which `python -m faas.settings_doc` generates docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="FAAS_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    env: Literal["development", "production"] = "development"
    """`production` refuses a weak JWT secret, `FAAS_AUTH=none` and `trusted-headers` without
    FAAS_TRUSTED_PROXY_CIDRS, and never migrates on start"""
    data_dir: Path = Path(".faas")
    """Created at start; holds the SQLite database and vectors when no other store is set,
    and the generated development JWT secret"""
    host: str = "127.0.0.1"
    """Address `faas up` and `faas serve` listen on"""
    port: int = 8000
    """Port of `faas up` (`faas serve` listens on the service's own port)"""
    service_name: str = "faas"
    """Names traces (`faas-<name>`) and the NATS connection; `faas serve` sets its service"""
    log_level: str = "INFO"
    """Root log level (DEBUG, INFO, ...); logs are JSON lines on stderr"""
    log_requests: bool = True
    """Write one access-log line per request (logger `faas.request`)"""
    trace_content: bool = False
    """Record prompts and completions on the gateway's GenAI spans as events (PII redacted with
    the ingestion cleaner's rules, at most 8 KiB each); only matters when traces are exported"""

    database_url: str | None = None
    """SQLAlchemy async URL (`postgresql+asyncpg://...`); unset: SQLite in the data dir"""
    database_pool_size: int = Field(default=30, ge=1, le=1000)
    """PostgreSQL connections a process keeps open once it has used them. Size it to the
    requests that hold one at the same time: a connection opened above it is closed when it
    is returned and opened again on the next burst (several ms of the loop each time)"""
    database_pool_overflow: int = Field(default=10, ge=0, le=1000)
    """PostgreSQL connections a process may open above the pool size for a burst; a request
    that finds all of them busy waits up to 30 s, then gets 503 with Retry-After"""
    redis_url: str | None = None
    """Cache, gateway response cache, limits, idempotency keys, agent session locks; unset:
    in memory, per process"""
    nats_url: str | None = None
    """NATS with JetStream (comma-separated servers) for events and jobs; unset: in-process"""
    nats_prefix: str = ""
    """Prepended to subjects and stream names, so several deployments can share one NATS"""
    codec: str = "application/json"
    """Events' encoding: `application/json`, `application/vnd.msgpack`, `application/protobuf`"""

    auth: Literal["jwt", "trusted-headers", "none"] = "jwt"
    """`jwt`: bearer tokens; `trusted-headers`: believe `X-Tenant-ID`, `X-User-ID`, `X-Scopes`
    from FAAS_TRUSTED_PROXY_CIDRS; `none`: `X-Tenant-ID` from anyone (development only)"""
    trusted_proxy_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """`trusted-headers`: peers whose identity headers are believed (others get 401); unset:
    loopback in development, refused in production"""
    jwt_secret: SecretStr | None = None
    """HS256 key; production needs 32+ random characters; development generates one"""
    secrets_key: SecretStr | None = None
    """Key ring sealing tenants' provider keys at rest: comma-separated keys, the first seals"""
    jwt_public_key: str | None = None
    """PEM public key: verify RS256/384/512, ES256/384 or PS256 tokens instead of HS256"""
    jwks_url: str | None = None
    """JWKS endpoint of an identity provider (keys cached 5 minutes)"""
    jwt_audience: str | None = None
    """Required `aud` claim; unset: the audience is not checked"""
    jwt_issuer: str | None = None
    """Required `iss` claim; unset: the issuer is not checked"""
    jwt_leeway_s: float = 30.0
    """Clock skew allowed when checking `exp` and `nbf`"""

    max_body_bytes: int = 10 * 1024 * 1024
    """Larger request bodies answer 413 (uploads have their own limit)"""
    shutdown_grace_s: float = 10.0
    """On stop, how long running requests, event handlers and jobs may take to finish"""

    service_urls: dict[str, str] = Field(default_factory=dict)
    """`FAAS_<NAME>_URL` of each service reached over HTTP (else in-process, when hosted here),
    gathered from the environment by `_gather_service_urls`, checked by the service registry"""

    client_timeout_s: float = 30.0
    """Timeout of one service-to-service call"""
    client_retries: int = 3
    """Extra attempts of a failed service-to-service call (idempotent methods, or calls with
    an idempotency key, only)"""
    breaker_failures: int = 5
    """Failures in a row that open the breaker to a service (then 503 at once)"""
    breaker_cooldown_s: float = 10.0
    """How long a service's breaker stays open before a trial call"""

    cache_max_entries: int = 100_000
    """Entries the in-memory store keeps (LRU; without Redis only)"""
    cache_max_bytes: int = 256 * 1024 * 1024
    """Bytes the in-memory store keeps (LRU; without Redis only)"""
    cache_max_value_bytes: int = 1024 * 1024
    """Larger cache values answer 413"""
    cache_default_ttl_s: float | None = None
    """TTL of a cache entry written without `ttl_s`; unset: kept until evicted"""

    migrate_on_start: bool = True
    """Development only: migrate the database at start (production runs `faas migrate`)"""
    run_worker: bool = True
    """Run a job worker inside `faas up` / `faas serve` for the hosted services' job kinds"""
    job_concurrency: int = 4
    """Jobs one worker runs at once (`faas worker --concurrency`)"""
    cpu_workers: int = Field(1, ge=1, le=64)
    """Processes for pure-Python work on big inputs (chunking, parsing), started at first use;
    see faas.shared.cpu"""
    job_ack_wait_s: float = 30.0
    """A job or stream event unacknowledged this long is redelivered; job leases last twice
    this"""
    job_max_attempts: int = 5
    """Runs of a failing job before it is dead-lettered"""
    job_retry_base_s: float = 1.0
    """Delay before the first retry; doubled for each further one"""
    job_retry_max_s: float = 60.0
    """Longest delay between two retries"""
    job_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Modules imported at start whose `register(runtime)` adds job kinds"""

    vector_url: str | None = None
    """RAG vectors: `postgresql://...` (pgvector), `sqlite` or `sqlite:///file`; unset: the
    database if it is PostgreSQL, else `sqlite` (the data dir's `vectors.db`)"""
    rag_embedding_model: str | None = None
    """Gateway model RAG embeds with; unset: `embed-default`"""
    rag_chat_model: str | None = None
    """Gateway model RAG answers with when a request names none; unset: `chat-default`"""
    max_upload_bytes: int = 50 * 1024 * 1024
    """Largest file ingestion accepts or fetches, and dataset ML accepts; larger: 413"""
    ingestion_url_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts/CIDRs URL ingestion may fetch although private"""
    ingestion_fetch_timeout_s: float = 20.0
    """Timeout of one URL fetch by ingestion"""
    llmops_retention_days: int = 90
    """Raw LLM operations older than this are deleted hourly (rollups kept); 0 keeps all"""
    agent_http_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts/CIDRs agents' http tools may call (nothing else)"""
    prompt_render_max_ops: int = Field(2_000_000, ge=1)
    """Operations (template lines and calls) one prompt render may run; more: 422"""
    prompt_render_timeout_s: float = Field(2.0, gt=0)
    """Wall time one prompt render may take; longer: 422"""
    prompt_max_output_bytes: int = Field(1_000_000, ge=1)
    """Largest rendered prompt; larger: 422"""
    prompt_render_workers: int = Field(2, ge=1, le=64)
    """Threads that render prompt templates"""
    prompt_client_cache_ttl_s: float = Field(5.0, ge=0, le=3600)
    """How long a service (the agent's system prompt) reuses a render it asked for; 0: never.
    A template's new production version reaches it within this time"""
    agent_session_lock_wait_s: float = Field(120.0, gt=0, le=3600)
    """How long a chat turn waits for its session's previous turn before 409"""

    gateway_models: Path | None = None
    """Model routing YAML, re-read when it changes; unset: built-in offline defaults"""
    gateway_cache_ttl_s: float = 3600.0
    """TTL of cached gateway responses (exact and semantic)"""
    gateway_default_rpm: int | None = None
    """Requests per minute per tenant; unset: unlimited"""
    gateway_default_tpm: int | None = None
    """Tokens per minute per tenant; unset: unlimited"""
    gateway_default_daily_budget_usd: float | None = None
    """Spend per tenant per UTC day; unset: unlimited"""
    gateway_default_monthly_budget_usd: float | None = None
    """Spend per tenant per UTC month; unset: unlimited"""
    gateway_limits_on_store_error: Literal["open", "closed"] = "closed"
    """Redis down while checking limits: `closed` answers 503, `open` serves uncounted"""
    gateway_completion_estimate_tokens: int = 256
    """Completion tokens reserved against limits when a request sets no `max_tokens`"""
    gateway_breaker_failures: int = 3
    """Failures in a row that take a model deployment out of rotation"""
    gateway_breaker_cooldown_s: float = 30.0
    """How long a failing deployment stays out before a trial call"""
    gateway_reload_poll_s: float = 2.0
    """How often the routing file's modification time is checked"""
    gateway_responses_ttl_s: int = Field(30 * 86400, ge=1, le=365 * 86400)
    """How long a stored Responses API response (`store: true`) is kept, as OpenAI's 30 days"""
    gateway_responses_max_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest stored response with its conversation; a longer `previous_response_id` chain: 413"""
    services: Annotated[list[str] | None, NoDecode] = None
    """Services this process hosts; unset: every registered one; empty: none (a `faas worker`
    running only FAAS_JOB_MODULES' job kinds)"""

    @field_validator(
        "services",
        "job_modules",
        "ingestion_url_allowlist",
        "agent_http_allowlist",
        "trusted_proxy_cidrs",
        mode="before",
    )
    @classmethod
    def _split_services(cls, value: object) -> object:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @model_validator(mode="before")
    @classmethod
    def _gather_service_urls(cls, data: Any) -> Any:
        """FAAS_<NAME>_URL variables, and `<name>_url` keywords, that are no other setting."""
        if not isinstance(data, dict):
            return data
        urls = dict(data.get("service_urls") or {})
        for variable, value in os.environ.items():
            match = _SERVICE_URL.fullmatch(variable)
            if variable.startswith(_TEST_PREFIX):
                continue
            if match and match["name"].lower() + "_url" not in cls.model_fields and value:
                urls.setdefault(match["name"].lower(), value)
        for key in [k for k in data if k.endswith("_url") and k not in cls.model_fields]:
            value = data.pop(key)
            if value:
                urls[key.removesuffix("_url")] = value
        return {**data, "service_urls": urls}

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'faas.db'}"

    def service_url(self, name: str) -> str | None:
        return self.service_urls.get(name)

    def trusted_networks(self) -> list[Network]:
        """Where trusted-headers requests may come from (FAAS_TRUSTED_PROXY_CIDRS, else
        loopback)."""
        return parse_networks(self.trusted_proxy_cidrs or list(LOOPBACK_CIDRS))

    def check_runnable(self) -> None:
        """Refuse configurations that are unsafe to serve; each message names what to set."""
        if self.auth == "none" and self.env != "development":
            raise ConfigError("FAAS_AUTH=none is allowed only with FAAS_ENV=development")
        self.trusted_networks()
        if self.env != "production":
            return
        if self.auth == "trusted-headers" and not self.trusted_proxy_cidrs:
            raise ConfigError(
                "FAAS_AUTH=trusted-headers in production needs FAAS_TRUSTED_PROXY_CIDRS: the "
                "comma-separated CIDRs of the proxies that set X-Tenant-ID (and of the faas "
                "services, which call each other with it); requests from elsewhere get 401"
            )
        if self.auth != "jwt" or self.jwt_public_key or self.jwks_url:
            return
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        weakness = secret_weakness(secret)
        if weakness is not None:
            raise ConfigError(
                f"production needs a strong JWT key and FAAS_JWT_SECRET is not one ({weakness}): "
                f"set it to a random string of at least {MIN_SECRET_CHARS} characters, e.g. "
                f"`{GENERATE_SECRET}`, or use FAAS_JWT_PUBLIC_KEY / FAAS_JWKS_URL"
            )


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; ConfigError carries one line per invalid variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(*(describe_problem(e) for e in exc.errors())) from None
