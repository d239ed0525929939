"""The `faas` command."""

from __future__ import annotations

import os
import re
import signal
import socket
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from faas import __version__
from faas.cli_keys import keys_app
from faas.cli_rag import rag_app
from faas.services import REGISTRY, load_settings
from faas.shared.config import ConfigError, Settings

app = typer.Typer(
    help="faas: AI components as independent, scalable services.", no_args_is_help=True
)
console = Console(stderr=True)

_TTL_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(value: str) -> float:
    match = _TTL_RE.match(value.strip())
    if not match:
        raise typer.BadParameter("use a number with an optional unit: 90s, 15m, 1h, 7d")
    return float(match.group(1)) * _TTL_UNITS[match.group(2)]


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings(**overrides)
        settings.check_runnable()
    except ConfigError as exc:
        _refuse(exc)
    from faas.diagnostics import startup_problems

    problems = startup_problems(settings)
    if problems:
        _refuse(ConfigError(*problems))
    return settings


def _refuse(exc: ConfigError) -> NoReturn:
    """One line per configuration problem, exit code 2."""
    for problem in exc.problems:
        console.print(f"[red]configuration error:[/red] {escape(problem)}", soft_wrap=True)
    raise typer.Exit(2) from None


def _fail(message: str) -> NoReturn:
    """One line (never wrapped, whatever the terminal's width), exit code 2."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def _data_dir(settings: Settings) -> str:
    return f"{settings.data_dir.resolve()} (FAAS_DATA_DIR)"


def _dev_token(settings: Settings) -> str | None:
    from faas.shared.auth import mint_token, signing_secret

    if settings.auth != "jwt":
        return None
    secret = signing_secret(settings)
    if secret is None or settings.env != "development":
        return None
    return mint_token(secret, tenant_id="demo", user_id="dev", ttl_s=86400, scopes=["admin"])


def _banner(settings: Settings, urls: dict[str, str], backends: dict[str, str]) -> None:
    console.print(f"[bold]faas {__version__}[/bold] ({settings.env})")
    for name, url in urls.items():
        console.print(f"  {name:<18} {url}")
    console.print("  backends: " + ", ".join(f"{k}={v}" for k, v in backends.items()))
    console.print(f"  data dir: {escape(_data_dir(settings))}", soft_wrap=True)
    from faas.services.gateway_service.models_in_use import banner_line

    console.print(banner_line(settings), soft_wrap=True)
    token = _dev_token(settings)
    if token:
        console.print("  development token (tenant 'demo', user 'dev', 24h, admin):")
        console.print(f"  export FAAS_TOKEN={token}", soft_wrap=True)
    elif settings.auth != "jwt":
        console.print(f"  auth: {settings.auth}")


def _run(
    settings: Settings,
    names: list[str] | None,
    host: str,
    port: int,
    *,
    busy_hint: str,
    fds: list[int] | None = None,
) -> None:
    """Serve on `host:port`, bound before anything is built or printed; or, as a child of
    `faas up --split`, on the sockets it inherited (`fds`), without a banner of its own."""
    import uvicorn

    from faas.app import build_app
    from faas.ports import PortUnavailable, listen_sockets
    from faas.shared.logging import configure_logging

    if fds:
        sockets = [socket.socket(fileno=fd) for fd in fds]
    else:
        try:
            sockets = listen_sockets(host, port)
        except PortUnavailable as exc:
            _fail(f"{exc}: {busy_hint}")
    configure_logging(settings.log_level)
    fastapi_app = build_app(settings, names, server=True)
    runtime = fastapi_app.state.runtime
    base = f"http://{host}:{port}"
    urls = {"api": base, "docs": f"{base}/docs", "ready": f"{base}/readyz"}
    urls |= {f"service {n}": base for n in fastapi_app.state.services}
    if not fds:
        _banner(settings, urls, runtime.backends)
    config = uvicorn.Config(
        fastapi_app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        lifespan="on",
        # The peer address stays the TCP peer, never X-Forwarded-For: trusted-headers
        # authentication decides by it (FAAS_TRUSTED_PROXY_CIDRS).
        proxy_headers=False,
    )
    # uvicorn re-raises the stop signal after its graceful shutdown; with these handlers in
    # place that re-raise is a no-op and a requested stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run(sockets=sockets)


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="interface to listen on (default: FAAS_HOST, else 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port of the combined app (default: FAAS_PORT, else 8000)")
    ] = None,
    split: Annotated[
        bool,
        typer.Option("--split", help="one process per service, on ports 8001-8009 (+ offset)"),
    ] = False,
    port_offset: Annotated[
        int,
        typer.Option(help="with --split: added to every port (100: gateway 8101 ... 8109)"),
    ] = 0,
) -> None:
    """Run every service: in one process on one port, or (--split) one process per service."""
    settings = _settings()
    if split and port is not None:
        _fail("--port is the combined app's port; with --split move every port by --port-offset")
    if port_offset and not split:
        _fail("--port-offset applies with --split; the combined app takes --port (or FAAS_PORT)")
    if split:
        _supervise(settings, host or settings.host, port_offset)
        return
    busy = "stop it, or choose another port: faas up --port N (or FAAS_PORT=N, make up PORT=N)"
    _run(settings, None, host or settings.host, port or settings.port, busy_hint=busy)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="service name, e.g. cache")],
    host: Annotated[str | None, typer.Option(help="default: FAAS_HOST, else 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default: the service's own port")] = None,
    fds: Annotated[
        list[int] | None,
        typer.Option("--fd", hidden=True, help="faas up --split: serve on this inherited socket"),
    ] = None,
) -> None:
    """Run one service alone."""
    if service not in REGISTRY:
        message = REGISTRY.unknown_service(service)
        console.print(f"[red]faas serve:[/red] {escape(message)}", soft_wrap=True)
        raise typer.Exit(2)
    settings = _settings(service_name=service)
    busy = "stop it, or choose another port with --port"
    port = port or REGISTRY.port(service)
    _run(settings, [service], host or settings.host, port, busy_hint=busy, fds=fds)


@app.command()
def worker(
    kinds: Annotated[
        list[str] | None,
        typer.Option("--kinds", help="job kinds to run; repeatable (default: all)"),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="jobs run at once")] = None,
    health_port: Annotated[
        int | None,
        typer.Option(help="serve /livez, /readyz and /metrics on this port (for probes)"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="interface of the health port")] = None,
) -> None:
    """Run jobs from the shared queue (needs FAAS_NATS_URL); start as many as you like."""
    import asyncio

    from faas.worker_process import run_worker

    overrides: dict[str, object] = {"run_worker": False}
    if concurrency is not None:
        overrides["job_concurrency"] = concurrency
    settings = _settings(**overrides)
    if not settings.nats_url:
        console.print(
            "[red]faas worker needs FAAS_NATS_URL[/red]: without NATS, jobs run in-process"
        )
        raise typer.Exit(2)
    from faas.shared.logging import configure_logging

    configure_logging(settings.log_level)
    health = None if health_port is None else (host or settings.host, health_port)
    asyncio.run(run_worker(settings, kinds or None, health=health, announce=console.print))


@app.command()
def token(
    tenant: Annotated[str, typer.Option(help="tenant id")],
    user: Annotated[str, typer.Option(help="user id")] = "dev",
    ttl: Annotated[str, typer.Option(help="lifetime: 90s, 15m, 1h, 7d")] = "1h",
    scope: Annotated[
        list[str] | None, typer.Option(help="scope to grant, e.g. admin; repeatable")
    ] = None,
    platform_admin: Annotated[
        bool,
        typer.Option(
            "--platform-admin",
            help="grant platform:admin: may name any tenant (operators only, never a tenant)",
        ),
    ] = False,
) -> None:
    """Mint a bearer token signed with FAAS_JWT_SECRET (or the development secret)."""
    from faas.shared.auth import mint_token, signing_secret
    from faas.shared.context import PLATFORM_ADMIN, PLATFORM_PREFIX

    if any(s.startswith(PLATFORM_PREFIX) for s in scope or []):
        raise typer.BadParameter(
            f"{PLATFORM_ADMIN} is not granted with --scope: use --platform-admin",
            param_hint="--scope",
        )
    settings = _settings()
    # Never create the secret here: a token signed with a new secret in the wrong directory
    # would only meet 401s. `faas up` creates it.
    secret = signing_secret(settings, create=False)
    if secret is None:
        _fail(
            f"no signing secret: FAAS_JWT_SECRET is unset and the data dir {_data_dir(settings)} "
            "has no development secret; run `faas token` where `faas up` runs, or set "
            "FAAS_DATA_DIR to the data dir its banner shows"
        )
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        console.print("faas token: signed with FAAS_JWT_SECRET", soft_wrap=True)
    else:
        note = f"faas token: signed with the development secret of data dir {_data_dir(settings)}"
        console.print(escape(note), soft_wrap=True)
    try:
        value = mint_token(
            secret,
            tenant_id=tenant,
            user_id=user,
            ttl_s=parse_ttl(ttl),
            scopes=scope or [],
            platform_admin=platform_admin,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    print(value)


@app.command()
def migrate() -> None:
    """Apply database migrations to FAAS_DATABASE_URL (default: SQLite in the data dir)."""
    from faas.shared.database import migrate_sync

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate_sync(settings.effective_database_url)
    console.print(f"migrated {settings.effective_database_url.split('@')[-1]}")


@app.command()
def version() -> None:
    """Print the faas version."""
    print(__version__)


def _supervise(settings: Settings, host: str, port_offset: int) -> None:
    """Bind every service's port, then run one `faas serve` child per service on its sockets
    (`faas.supervisor`); one banner once every child listens; Ctrl-C stops all."""
    from faas.ports import PortUnavailable
    from faas.supervisor import Supervisor, bind_all

    ports = {spec.name: spec.port + port_offset for spec in REGISTRY.selected(settings)}
    urls = {n: f"http://{host}:{port}" for n, port in ports.items()}
    try:
        sockets = bind_all(host, ports)
    except PortUnavailable as exc:
        _fail(f"{exc}: stop it, or move every service's port with --port-offset N")
    try:
        supervisor = Supervisor(settings, host, ports, sockets, console)
        supervisor.prepare(urls)
        console.print(f"faas {__version__}: starting {len(ports)} services, one process each…")
        failure = supervisor.run(lambda: _split_banner(settings, urls, list(ports)))
        if failure is not None:
            _fail(failure)
    finally:
        for bound in sockets.values():
            for sock in bound:
                sock.close()


def _split_banner(settings: Settings, urls: dict[str, str], names: list[str]) -> None:
    _banner(settings, {f"service {n}": u for n, u in urls.items()}, {"mode": "split"})
    if not settings.nats_url and {"gateway", "llmops"} <= set(names):
        # Each child has its own in-process bus; the database is shared (the data dir's file).
        console.print(
            "  [yellow]without FAAS_NATS_URL events stay in the process that publishes them: "
            "LLMOps records no gateway usage (jobs run where they are submitted)[/yellow]"
        )


@app.command()
def doctor() -> None:
    """Check what this setup needs (data dir, secret, database, pgvector, Redis, NATS, model
    routing and keys, local models, ports): one line per check with the fix; exit 1 on a fail."""
    import asyncio

    from faas.diagnostics import doctor as run_checks

    try:
        settings = load_settings()
    except ConfigError as exc:
        _refuse(exc)
    checks = asyncio.run(run_checks(settings))
    for check in checks:
        typer.echo(check.line())
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)


@app.command()
def config() -> None:
    """Print the effective settings and where each comes from (env or default), secrets
    masked."""
    from faas.diagnostics import effective_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        _refuse(exc)
    for line in effective_settings(settings, os.environ):
        typer.echo(line)


app.add_typer(rag_app, name="rag")
app.add_typer(keys_app, name="keys")


def main() -> None:
    app()
