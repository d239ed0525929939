"""`faas rag …`: RAG maintenance from the command line, against the running platform (a
sub-command of `faas`, kept in its own module)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

import httpx
import typer

from faas.shared.config import Settings
from faas.shared.context import TENANT_HEADER, USER_HEADER

rag_app = typer.Typer(help="RAG maintenance: re-embed collections.", no_args_is_help=True)

_DONE = ("succeeded", "failed", "cancelled")


def _headers(settings: Settings, tenant: str, *, scopes: Sequence[str] = ()) -> dict[str, str]:
    from faas.cli import _data_dir, _fail
    from faas.shared.auth import mint_token, signing_secret

    if settings.auth != "jwt":
        return {TENANT_HEADER: tenant, USER_HEADER: "faas-cli"}
    secret = signing_secret(settings, create=False)
    if secret is None:
        _fail(
            f"no signing secret: FAAS_JWT_SECRET is unset and the data dir {_data_dir(settings)} "
            "has no development secret; run this where `faas up` runs, or set FAAS_DATA_DIR"
        )
    token = mint_token(secret, tenant_id=tenant, user_id="faas-cli", ttl_s=3600, scopes=scopes)
    return {"Authorization": f"Bearer {token}"}


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


@rag_app.command()
def reindex(
    collection: Annotated[
        str | None, typer.Option(help="collection name (default: every collection)")
    ] = None,
    tenant: Annotated[str, typer.Option(help="tenant whose collections to re-embed")] = "demo",
    url: Annotated[str, typer.Option(help="the running faas")] = "http://127.0.0.1:8000",
    wait: Annotated[bool, typer.Option(help="wait for the job to finish")] = True,
) -> None:
    """Re-embed documents with the gateway's current embedding model (after a model change),
    as a job on the running platform."""
    from faas.cli import _fail, _settings, console

    settings = _settings()
    body: dict[str, Any] = {"collection": collection} if collection else {}
    with httpx.Client(base_url=url, timeout=30, headers=_headers(settings, tenant)) as http:
        try:
            response = http.post("/api/v1/rag/reindex", json=body)
            if response.status_code != 202:
                _fail(f"reindex refused ({response.status_code}): {_error(response)}")
            job = response.json()["data"]
            console.print(f"rag.reindex job {job['job_id']} for tenant {tenant!r}", soft_wrap=True)
            while wait and job["status"] not in _DONE:
                time.sleep(0.5)
                polled = http.get(f"/api/v1/jobs/{job['job_id']}")
                if polled.status_code != 200:
                    _fail(f"cannot follow job {job['job_id']}: {_error(polled)}")
                job = polled.json()["data"]
        except httpx.TransportError as exc:
            _fail(f"cannot reach faas at {url} ({exc}): start it with `faas up`, or pass --url")
    if not wait:
        return
    if job["status"] != "succeeded":
        _fail(f"rag.reindex {job['status']}: {job.get('error') or 'no error recorded'}")
    result = job["result"]
    console.print(
        f"re-embedded {result['chunks']} chunks of {result['documents']} documents in "
        f"{result['collections']} collections with {result['embedding_model']}",
        soft_wrap=True,
    )
