"""`faas keys create`: an API key for a tenant, made on the running platform (a sub-command of
`faas`, kept in its own module). Only the key goes to stdout, so `KEY=$(faas keys create …)`
works; what it is goes to stderr."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import typer

from faas.cli_rag import _error, _headers

keys_app = typer.Typer(help="API keys: create one on the running faas.", no_args_is_help=True)


@keys_app.command()
def create(
    name: Annotated[str, typer.Option(help="what the key is for")],
    tenant: Annotated[str, typer.Option(help="the key's tenant")] = "demo",
    user: Annotated[str | None, typer.Option(help="the user the key acts as")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="a scope to give (repeatable)")] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="a model it may call (repeatable; default: all)")
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(help="days until it expires (default: never)", min=0.001)
    ] = None,
    url: Annotated[str, typer.Option(help="the running faas")] = "http://127.0.0.1:8000",
) -> None:
    """Create an API key with a tenant admin token signed here (like `faas token --scope
    admin`); the key is printed once and never shown again."""
    from faas.cli import _fail, _settings, console

    settings = _settings()
    body: dict[str, Any] = {"name": name, "user": user, "scopes": scope or [], "models": model}
    if expires_in_days is not None:
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=expires_in_days)).isoformat()
    headers = _headers(settings, tenant, scopes=["admin"])
    try:
        response = httpx.post(f"{url}/api/v1/keys", json=body, headers=headers, timeout=30)
    except httpx.TransportError as exc:
        _fail(f"cannot reach faas at {url} ({exc}): start it with `faas up`, or pass --url")
    if response.status_code != 201:
        _fail(f"key refused ({response.status_code}): {_error(response)}")
    created = response.json()["data"]
    allowed = ", ".join(created["models"]) if created["models"] is not None else "every model"
    console.print(
        f"API key {created['id']} ({created['prefix']}…) of tenant {tenant!r}: "
        f"scopes {created['scopes'] or 'none'}, models: {allowed}; it is shown only now",
        soft_wrap=True,
    )
    typer.echo(created["key"])
