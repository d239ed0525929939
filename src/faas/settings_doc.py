"""docs/configuration.md, generated from `Settings`, the service registry and the OTEL_*
variables faas reads, so the page cannot drift from the code (a unit test compares them).

Regenerate: `python -m faas.settings_doc > docs/configuration.md`.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from faas.services import REGISTRY
from faas.shared.config import Settings, masked

REGENERATE = "python -m faas.settings_doc > docs/configuration.md"

# Every Settings field but `service_urls` (a section of its own) belongs to exactly one group.
GROUPS: dict[str, tuple[str, ...]] = {
    "Core": (
        "env",
        "data_dir",
        "host",
        "port",
        "services",
        "service_name",
        "log_level",
        "log_requests",
        "trace_content",
        "max_body_bytes",
        "shutdown_grace_s",
    ),
    "Auth": (
        "auth",
        "trusted_proxy_cidrs",
        "jwt_secret",
        "secrets_key",
        "jwt_public_key",
        "jwks_url",
        "jwt_audience",
        "jwt_issuer",
        "jwt_leeway_s",
    ),
    "Databases, stores and the bus": (
        "database_url",
        "database_pool_size",
        "database_pool_overflow",
        "migrate_on_start",
        "redis_url",
        "nats_url",
        "nats_prefix",
        "codec",
        "vector_url",
    ),
    "Calls between services": (
        "client_timeout_s",
        "client_retries",
        "breaker_failures",
        "breaker_cooldown_s",
    ),
    "Jobs and workers": (
        "run_worker",
        "job_concurrency",
        "job_ack_wait_s",
        "job_max_attempts",
        "job_retry_base_s",
        "job_retry_max_s",
        "job_modules",
        "cpu_workers",
    ),
    "Cache": (
        "cache_max_entries",
        "cache_max_bytes",
        "cache_max_value_bytes",
        "cache_default_ttl_s",
    ),
    "Gateway": (
        "gateway_models",
        "gateway_reload_poll_s",
        "gateway_cache_ttl_s",
        "gateway_default_rpm",
        "gateway_default_tpm",
        "gateway_default_daily_budget_usd",
        "gateway_default_monthly_budget_usd",
        "gateway_limits_on_store_error",
        "gateway_completion_estimate_tokens",
        "gateway_breaker_failures",
        "gateway_breaker_cooldown_s",
        "gateway_responses_ttl_s",
        "gateway_responses_max_bytes",
    ),
    "Alerts": (
        "alert_interval_s",
        "alert_anomaly_window_min",
        "alert_anomaly_factor",
        "alert_anomaly_floor_usd",
        "alert_webhook_url",
        "alert_webhook_secret",
        "alert_webhook_allowlist",
        "alert_webhook_timeout_s",
        "alert_webhook_attempts",
    ),
    "RAG": ("rag_embedding_model", "rag_chat_model"),
    "Ingestion and ML": (
        "max_upload_bytes",
        "ingestion_url_allowlist",
        "ingestion_fetch_timeout_s",
    ),
    "Agent": ("agent_http_allowlist", "agent_session_lock_wait_s"),
    "Prompt": (
        "prompt_render_max_ops",
        "prompt_render_timeout_s",
        "prompt_max_output_bytes",
        "prompt_render_workers",
        "prompt_client_cache_ttl_s",
    ),
    "LLMOps": ("llmops_retention_days",),
}
SECTIONS = ("service_urls",)

# (variable, default, meaning): what faas.integrations.otel reads itself.
OTEL_VARIABLES = (
    (
        "OTEL_SERVICE_NAME",
        "`faas`, or `faas-<service>` under `faas serve`",
        "service.name of spans and metrics",
    ),
    ("OTEL_RESOURCE_ATTRIBUTES", "empty", "extra resource attributes, `key=value,key=value`"),
    (
        "OTEL_TRACES_EXPORTER",
        "`none`",
        "comma-separated: `otlp` (HTTP/protobuf), `console`, `none`; an unknown name is logged "
        "and ignored",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "`http://localhost:4318`",
        "OTLP/HTTP base URL; traces go to `<base>/v1/traces`",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "unset",
        "full traces URL; wins over `OTEL_EXPORTER_OTLP_ENDPOINT`",
    ),
    (
        "OTEL_TRACES_SAMPLER",
        "`parentbased_always_on`",
        "`always_on`, `always_off`, `traceidratio`, or one of them prefixed `parentbased_`; "
        "an unknown name is logged and the default used",
    ),
    (
        "OTEL_TRACES_SAMPLER_ARG",
        "`1.0`",
        "the ratio of the `traceidratio` samplers, clamped to 0..1; not a number: logged, 1.0 used",
    ),
)

_TYPES: dict[Any, str] = {
    bool: "bool",
    int: "integer",
    float: "number",
    str: "string",
    Path: "path",
    SecretStr: "secret",
}
_BOUNDS = ((Ge, "ge", "≥"), (Gt, "gt", ">"), (Le, "le", "≤"), (Lt, "lt", "<"))


def type_name(field: FieldInfo) -> str:
    """How a variable is written: the type without `None`, `a` | `b` for choices, bounds."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        name = " | ".join(f"`{choice}`" for choice in get_args(annotation))
    elif get_origin(annotation) is list:
        name = "comma-separated list"
    else:
        name = _TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = [
        f"{sign} {getattr(meta, attr)}"
        for meta in field.metadata
        for kind, attr, sign in _BOUNDS
        if isinstance(meta, kind)
    ]
    return ", ".join([name, *bounds])


def default_text(name: str, field: FieldInfo) -> str:
    """The default as a reader would set it; secrets masked, None and [] as words."""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value == []:
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, int):
        for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
            if name.endswith("_bytes") and value % size == 0:
                return f"`{value}` ({value // size} {unit})"
        return f"`{value}`"
    text = masked(name, value)
    return f"`{text}`" if text else "empty"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _grouped(settings_cls: type[Settings]) -> dict[str, list[str]]:
    """GROUPS checked against the model: a new field must be given a group to be documented."""
    seen = [name for names in GROUPS.values() for name in names]
    fields = set(settings_cls.model_fields) - set(SECTIONS)
    missing, unknown = sorted(fields - set(seen)), sorted(set(seen) - fields)
    twice = sorted({name for name in seen if seen.count(name) > 1})
    if missing or unknown or twice:
        raise ValueError(
            f"settings_doc.GROUPS is out of step with Settings: without a group {missing}, "
            f"not a setting {unknown}, in two groups {twice}"
        )
    return {title: list(names) for title, names in GROUPS.items()}


def settings_tables(settings_cls: type[Settings]) -> Iterator[str]:
    for title, names in _grouped(settings_cls).items():
        yield f"## {title}\n\n| variable | type | default | meaning |\n|---|---|---|---|"
        for name in names:
            field = settings_cls.model_fields[name]
            if not field.description:
                raise ValueError(f"Settings.{name} has no description")
            row = (
                f"`FAAS_{name.upper()}`",
                type_name(field),
                default_text(name, field),
                field.description,
            )
            yield "| " + " | ".join(_cell(cell) for cell in row) + " |"
        yield ""


def service_urls_section() -> Iterator[str]:
    yield "## Service URLs (`FAAS_<SERVICE>_URL`)\n"
    yield (
        "A process calls a service it does not host at `FAAS_<SERVICE>_URL` (its base URL, e.g. "
        "`http://rag:8003`); one it hosts is called in-process. A call to a service that is "
        "neither answers 503 `dependency_unavailable`: *the rag service is not reachable: set "
        "FAAS_RAG_URL*. `faas up --split` sets these for its children. A name that is no "
        "service stops start-up. Ports are fixed by the registry (`faas serve <service>`).\n"
    )
    yield "| service | variable | port | called by | job kinds |\n|---|---|---|---|---|"
    for spec in REGISTRY:
        callers = [s.name for s in REGISTRY if spec.name in s.calls]
        yield (
            f"| {spec.name} | `FAAS_{spec.name.upper()}_URL` | {spec.port} | "
            f"{', '.join(callers) or '—'} | {', '.join(spec.job_kinds) or '—'} |"
        )
    yield ""


def otel_section() -> Iterator[str]:
    yield "## OpenTelemetry (`OTEL_*`)\n"
    yield (
        "Standard OpenTelemetry variables, read once at start by every process; traces are off "
        "unless `OTEL_TRACES_EXPORTER` names an exporter. Metrics are served at `/metrics` "
        "whatever these say. The OTLP exporter also reads its own variables "
        "(`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._COMPRESSION`, `..._CERTIFICATE`).\n"
    )
    yield "| variable | default | meaning |\n|---|---|---|"
    for variable, default, meaning in OTEL_VARIABLES:
        yield f"| `{variable}` | {_cell(default)} | {_cell(meaning)} |"
    yield ""


def render(settings_cls: type[Settings] = Settings) -> str:
    """The whole page."""
    head = (
        "# Configuration\n\n"
        f"<!-- Generated from faas.shared.config.Settings: do not edit; run `{REGENERATE}`. -->\n\n"
        "Every setting is an environment variable `FAAS_<NAME>` (faas reads no `.env` file). "
        "Booleans take `true`/`false` (or `1`/`0`), lists are comma-separated, an unset "
        "optional setting means what its row says. A wrong value stops every command with one "
        "line naming the variable (exit code 2). `faas config` prints the effective value of "
        "each and where it came from, secrets and URL passwords masked; `faas doctor` checks "
        "that what they point at answers.\n\n"
        "Provider API keys are not `FAAS_` settings: the routing file (`FAAS_GATEWAY_MODELS`) "
        "names the variable that holds each (`api_key: env:OPENAI_API_KEY`).\n"
    )
    parts = [head, *settings_tables(settings_cls), *service_urls_section(), *otel_section()]
    return "\n".join(parts).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
