"""`faas doctor` and `faas config`: what a setup needs, checked one line at a time with the fix;
the effective settings, where each came from, secrets masked.

Every check is read-only: it connects, looks and disconnects, and never creates a database
file, a secret, an extension or a stream.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from faas.services import REGISTRY
from faas.shared.config import ConfigError, Settings, masked

Status = Literal["ok", "warn", "fail"]
# A server that does not answer within this is reported as unreachable.
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{self.status:<4}  {self.name}: {self.detail}{fix}"


def _url(url: str) -> str:
    return masked("url", url)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# -- data dir, secret, configuration -------------------------------------------------------


def check_configuration(settings: Settings) -> list[Check]:
    try:
        REGISTRY.check(settings)
        settings.check_runnable()
    except ConfigError as exc:
        return [Check("configuration", "fail", problem) for problem in exc.problems]
    return [Check("configuration", "ok", f"FAAS_ENV={settings.env}, FAAS_AUTH={settings.auth}")]


def check_data_dir(settings: Settings) -> Check:
    path = settings.data_dir.resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return Check("data dir", "fail", f"{existing} is not a directory", "set FAAS_DATA_DIR")
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(
            "data dir", "fail", f"{existing} is not writable", "set FAAS_DATA_DIR to a writable dir"
        )
    state = "exists" if path.exists() else "will be created at start"
    return Check("data dir", "ok", f"{path} ({state}; FAAS_DATA_DIR)")


def check_secret(settings: Settings) -> Check:
    from faas.shared.auth import SECRET_FILE

    if settings.auth != "jwt":
        return Check("signing secret", "ok", f"not needed (FAAS_AUTH={settings.auth})")
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        return Check("signing secret", "ok", "FAAS_JWT_SECRET is set")
    if settings.jwt_public_key or settings.jwks_url:
        return Check("signing secret", "ok", "tokens verified with FAAS_JWT_PUBLIC_KEY/JWKS_URL")
    if settings.env != "development":
        return Check(
            "signing secret", "fail", "production has no FAAS_JWT_SECRET", "set FAAS_JWT_SECRET"
        )
    path = settings.data_dir.resolve() / SECRET_FILE
    if path.exists():
        return Check("signing secret", "ok", f"development secret {path}")
    return Check(
        "signing secret",
        "warn",
        f"no development secret in {path.parent} yet: `faas up` creates one, and tokens "
        "minted with another data dir's secret will not verify",
        "run faas from the same directory or set FAAS_DATA_DIR (or FAAS_JWT_SECRET)",
    )


# -- servers ---------------------------------------------------------------------------------


async def check_database(settings: Settings) -> Check:
    from alembic.script import ScriptDirectory

    from faas.shared.database import Database, alembic_config

    url = settings.effective_database_url
    where = _url(url)
    migrate_fix = "run `faas migrate`"
    if url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1]
        if path != ":memory:" and not await asyncio.to_thread(os.path.exists, path):
            if _migrates_on_start(settings):
                return Check("database", "ok", f"{where}: `faas up` creates and migrates it")
            return Check("database", "fail", f"{where} does not exist yet", migrate_fix)
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    db = Database(url)
    try:
        current = await asyncio.wait_for(db.current_revisions(), CONNECT_TIMEOUT_S)
    except Exception as exc:
        return Check(
            "database",
            "fail",
            f"cannot reach {where}: {_reason(exc)}",
            "start the database or correct FAAS_DATABASE_URL",
        )
    finally:
        await db.close()
    if current == heads:
        return Check("database", "ok", f"{where} reachable, migrated to head")
    behind = f"{where} reachable, {len(heads - current)} migration branch(es) behind head"
    if _migrates_on_start(settings):
        return Check("database", "ok", f"{behind}; `faas up` migrates it at start")
    return Check("database", "fail", behind, migrate_fix)


def _migrates_on_start(settings: Settings) -> bool:
    return settings.env == "development" and settings.migrate_on_start


async def check_vectors(settings: Settings) -> Check:
    from faas.backends.vectors import vector_store_problem, vector_url

    try:
        url = vector_url(settings)
    except ConfigError as exc:
        return Check("vector store", "fail", str(exc))
    if url.startswith("sqlite"):
        return Check("vector store", "ok", f"SQLite {url.removeprefix('sqlite:///')}")
    problem = await vector_store_problem(settings)
    if problem is not None:
        return Check("vector store", "fail", problem)
    return Check("vector store", "ok", f"pgvector in {_url(url)}")


async def check_redis(settings: Settings) -> Check:
    if not settings.redis_url:
        return Check("redis", "ok", "not used (FAAS_REDIS_URL unset: cache and limits in memory)")
    from redis.asyncio import Redis

    where = _url(settings.redis_url)
    try:
        client = Redis.from_url(settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    except ValueError as exc:
        return Check("redis", "fail", f"FAAS_REDIS_URL={where}: {_reason(exc)}")
    try:
        await asyncio.wait_for(client.ping(), CONNECT_TIMEOUT_S)
    except Exception as exc:
        return Check(
            "redis",
            "fail",
            f"cannot reach {where}: {_reason(exc)}",
            "start Redis or correct FAAS_REDIS_URL",
        )
    finally:
        await client.aclose()
    return Check("redis", "ok", f"{where} answers PING")


async def check_nats(settings: Settings) -> Check:
    if not settings.nats_url:
        return Check("nats", "ok", "not used (FAAS_NATS_URL unset: events and jobs in-process)")
    from nats.aio.client import Client

    where = _url(settings.nats_url)
    servers = [s.strip() for s in settings.nats_url.split(",") if s.strip()]

    async def quiet(_: Exception) -> None:
        return None

    client = Client()
    try:
        # As the runtime connects: nats-py retries forever unless told to give up.
        await asyncio.wait_for(
            client.connect(
                servers=servers,
                connect_timeout=CONNECT_TIMEOUT_S,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=quiet,
            ),
            CONNECT_TIMEOUT_S * 2,
        )
    except Exception as exc:
        return Check(
            "nats",
            "fail",
            f"cannot reach {where}: {_reason(exc)}",
            "start nats-server -js or correct FAAS_NATS_URL",
        )
    try:
        await asyncio.wait_for(client.jetstream().account_info(), CONNECT_TIMEOUT_S)
    except Exception as exc:
        return Check(
            "nats",
            "fail",
            f"{where} answers but JetStream does not: {_reason(exc)}",
            "start nats-server with -js (jobs need JetStream)",
        )
    finally:
        await client.close()
    return Check("nats", "ok", f"{where} with JetStream")


def startup_problems(settings: Settings) -> list[str]:
    """What stops `faas up` / `faas serve` beyond the settings themselves: an unreadable or
    invalid routing file. One line each, naming FAAS_GATEWAY_MODELS."""
    hosted = {spec.name for spec in REGISTRY.selected(settings)}
    if settings.gateway_models is None or "gateway" not in hosted:
        return []
    from faas.services.gateway_service.routing_table import load_routing
    from faas.shared.exceptions import FaaSError

    try:
        load_routing(settings.gateway_models)
    except FaaSError as exc:
        problems = exc.details.get("problems") or [exc.message]
        return [f"FAAS_GATEWAY_MODELS={str(settings.gateway_models)!r}: {p}" for p in problems]
    return []


# -- gateway routing, local models, ports ------------------------------------------------------


def check_routing(settings: Settings) -> list[Check]:
    from faas.services.gateway_service.providers import provider_available
    from faas.services.gateway_service.routing_table import (
        describe_unavailable,
        load_routing,
        unavailable_deployments,
    )
    from faas.shared.exceptions import FaaSError

    if settings.gateway_models is None:
        return [Check("model routing", "ok", "built-in defaults (FAAS_GATEWAY_MODELS unset)")]
    try:
        table = load_routing(settings.gateway_models)
    except FaaSError as exc:
        return [Check("model routing", "fail", exc.message, "correct FAAS_GATEWAY_MODELS' file")]
    checks = [Check("model routing", "ok", f"{table.source}: {len(table.models)} model(s)")]
    for model, deployment in unavailable_deployments(table):
        usable = any(not d.unavailable for d in model.deployments)
        checks.append(
            Check(
                "deployment key",
                "warn" if usable else "fail",
                describe_unavailable(model, deployment),
                f"export {deployment.missing_key}=... (or remove the deployment)",
            )
        )
    for model in table.models:
        for deployment in model.deployments:
            if not provider_available(deployment.provider, with_default_model=False):
                checks.append(
                    Check(
                        "deployment provider",
                        "fail",
                        f"model {model.name!r}: provider {deployment.provider} is not installed",
                        f"pip install 'faas[{_EXTRAS.get(deployment.provider, 'all')}]'",
                    )
                )
    return checks


_EXTRAS = {"llamacpp": "local", "minilm": "embeddings", "litellm": "litellm"}


def check_local_models() -> list[Check]:
    from faas.services.gateway_service.providers import provider_available

    chat = provider_available("llamacpp")
    embed = provider_available("minilm")
    return [
        Check(
            "local chat model",
            "ok",
            "SmolLM2-135M (llama.cpp) installed"
            if chat
            else "not installed: chat-default is the offline mock (`make models` installs it)",
        ),
        Check(
            "local embedding model",
            "ok",
            "all-MiniLM-L6-v2 installed"
            if embed
            else "not installed: embed-default is feature hashing (`make models` installs it)",
        ),
    ]


def check_ports(settings: Settings) -> list[Check]:
    from faas.ports import PortUnavailable, listen_sockets

    def busy(port: int) -> str | None:
        try:
            sockets = listen_sockets(settings.host, port)
        except PortUnavailable as exc:
            return str(exc)
        for sock in sockets:
            sock.close()
        return None

    problem = busy(settings.port)
    checks = [
        Check("port", "ok", f"{settings.host}:{settings.port} is free")
        if problem is None
        else Check(
            "port",
            "fail",
            f"{settings.host}:{problem}",
            "stop what holds it, or set FAAS_PORT / faas up --port",
        )
    ]
    ports = sorted(spec.port for spec in REGISTRY.selected(settings))
    if not ports:
        return checks
    taken = [p for p in (busy(port) for port in ports) if p is not None]
    first, last = ports[0], ports[-1]
    if taken:
        checks.append(
            Check(
                "split ports",
                "warn",
                "; ".join(taken) + " (only `faas up --split` needs them)",
                "faas up --split --port-offset N",
            )
        )
    else:
        checks.append(Check("split ports", "ok", f"{first}-{last} are free (faas up --split)"))
    return checks


async def doctor(settings: Settings) -> list[Check]:
    """Every check, in the order a user fixes them."""
    checks = [*check_configuration(settings), check_data_dir(settings), check_secret(settings)]
    servers: list[Callable[[Settings], Awaitable[Check]]] = [
        check_database,
        check_vectors,
        check_redis,
        check_nats,
    ]
    checks += await asyncio.gather(*(check(settings) for check in servers))
    checks += check_routing(settings)
    checks += check_local_models()
    checks += check_ports(settings)
    return checks


# -- faas config --------------------------------------------------------------------------------


def effective_settings(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """`FAAS_NAME=value  # source` for every setting; secrets and URL passwords masked."""
    from faas.backends.vectors import vector_url

    present = {name.upper() for name in environ}
    rows: list[tuple[str, str]] = []
    values = {name: getattr(settings, name) for name in Settings.model_fields}
    del values["service_urls"]  # shown one variable per service, as they are set
    values |= {f"{spec.name}_url": settings.service_url(spec.name) for spec in REGISTRY}
    for name, value in values.items():
        variable = f"FAAS_{name.upper()}"
        source = "env" if variable in present else "default"
        rows.append((f"{variable}={_shown(name, value)}", source))
    rows.append((f"database -> {masked('url', settings.effective_database_url)}", "derived"))
    try:
        rows.append((f"vectors -> {masked('url', vector_url(settings))}", "derived"))
    except ConfigError as exc:
        rows.append((f"vectors -> {exc}", "derived"))
    width = min(max(len(text) for text, _ in rows), 48)
    return [f"{text.ljust(width)}  # {source}" for text, source in rows]


def _shown(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return masked(name, value)
