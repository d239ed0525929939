"""The `faas` command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

from faas import __version__
from faas.shared.config import DEFAULT_PORTS, ConfigError, Settings, load_settings

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
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    return settings


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
    token = _dev_token(settings)
    if token:
        console.print("  development token (tenant 'demo', user 'dev', 24h, admin):")
        console.print(f"  export FAAS_TOKEN={token}", soft_wrap=True)
    elif settings.auth != "jwt":
        console.print(f"  auth: {settings.auth}")


def _run(settings: Settings, names: list[str] | None, host: str, port: int) -> None:
    import uvicorn

    from faas.app import build_app
    from faas.shared.logging import configure_logging

    configure_logging(settings.log_level)
    fastapi_app = build_app(settings, names, server=True)
    runtime = fastapi_app.state.runtime
    base = f"http://{host}:{port}"
    urls = {"api": base, "docs": f"{base}/docs", "ready": f"{base}/readyz"}
    urls |= {f"service {n}": base for n in fastapi_app.state.services}
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
    uvicorn.Server(config).run()


@app.command()
def up(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the combined app")] = 8000,
    split: Annotated[
        bool, typer.Option("--split", help="one process per service on its default port")
    ] = False,
    port_offset: Annotated[
        int, typer.Option(help="with --split: added to every service's default port")
    ] = 0,
) -> None:
    """Run every service: in one process on one port, or (--split) one process per service."""
    settings = _settings()
    if split:
        _supervise(settings, host, port_offset)
        return
    _run(settings, None, host, port)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="service name, e.g. cache")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="default: the service's own port")] = None,
) -> None:
    """Run one service alone."""
    from faas.services import available

    if service not in available():
        console.print(
            f"[red]unknown service {service!r}[/red]; available: {', '.join(available())}"
        )
        raise typer.Exit(2)
    settings = _settings(service_name=service)
    _run(settings, [service], host, port or DEFAULT_PORTS[service])


@app.command()
def worker(
    kinds: Annotated[
        list[str] | None,
        typer.Option("--kinds", help="job kinds to run; repeatable (default: all)"),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="jobs run at once")] = None,
) -> None:
    """Run jobs from the shared queue (needs FAAS_NATS_URL); start as many as you like."""
    import asyncio

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
    asyncio.run(_work(settings, kinds or None))


async def _work(settings: Settings, kinds: list[str] | None) -> None:
    import asyncio

    from faas.runtime import Runtime
    from faas.services import BUILDERS

    runtime = Runtime.build(settings)
    # Services are built for the job kinds they register; their HTTP routes are not served.
    services = [BUILDERS[name](runtime) for name in settings.services if name in BUILDERS]
    runtime.load_job_modules()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start(run_worker=False)
    try:
        for service in services:
            await service.start()
        worker = await runtime.start_worker(kinds)
        consuming = ", ".join(sorted(kinds or worker.registry.kinds)) or "nothing (no job kinds)"
        console.print(f"worker {os.getpid()} consuming {consuming}")
        await stop.wait()
    finally:
        await runtime.stop_worker()
        for service in reversed(services):
            await service.stop()
        await runtime.close()


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
    secret = signing_secret(settings)
    if secret is None:
        console.print("[red]no signing secret:[/red] set FAAS_JWT_SECRET")
        raise typer.Exit(2)
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
    """Start one `faas serve` child per service, restart crashed ones, stop all on Ctrl-C."""
    from faas.services import available

    names = [n for n in available() if n in settings.services]
    ports = {n: DEFAULT_PORTS[n] + port_offset for n in names}
    urls = {n: f"http://{host}:{ports[n]}" for n in names}
    env = dict(os.environ)
    for name, url in urls.items():
        env.setdefault(f"FAAS_{name.upper()}_URL", url)
    from faas.shared.auth import signing_secret
    from faas.shared.database import migrate_sync

    signing_secret(settings)  # create the development secret once, before children race for it
    if settings.env == "development" and settings.migrate_on_start:
        # Once here, not in every child at the same moment (they would race on the schema).
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate_sync(settings.effective_database_url)
        env["FAAS_MIGRATE_ON_START"] = "false"

    def start(name: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "faas", "serve", name, "--host", host]
        cmd += ["--port", str(ports[name])]
        return subprocess.Popen(cmd, env=env)

    children = {name: start(name) for name in names}
    _banner(settings, {f"service {n}": u for n, u in urls.items()}, {"mode": "split"})
    if not settings.nats_url and {"gateway", "llmops"} <= set(names):
        # Each child has its own in-process bus; the database is shared (the data dir's file).
        console.print(
            "  [yellow]without FAAS_NATS_URL events stay in the process that publishes them: "
            "LLMOps records no gateway usage (jobs run where they are submitted)[/yellow]"
        )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    restarts: dict[str, int] = dict.fromkeys(names, 0)
    while not stopping:
        time.sleep(0.5)
        for name, child in list(children.items()):
            code = child.poll()
            if code is None or stopping:
                continue
            restarts[name] += 1
            delay = min(30.0, 0.5 * 2 ** min(restarts[name], 6))
            console.print(
                f"[yellow]service {name} exited with code {code}; restarting in {delay:.1f}s "
                f"(restart #{restarts[name]})[/yellow]"
            )
            time.sleep(delay)
            children[name] = start(name)
    for child in children.values():
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.shutdown_grace_s + 2
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()


def main() -> None:
    app()
