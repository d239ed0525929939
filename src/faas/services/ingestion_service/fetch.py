"""Fetching a page or file to ingest, through the shared SSRF-pinned fetch: a host name on
FAAS_INGESTION_URL_ALLOWLIST admits every address it resolves to, a network admits its
addresses; the file is written as it arrives and refused past the upload size limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from faas.shared.exceptions import PayloadTooLarge, UpstreamError
from faas.shared.pinned_fetch import Allowlist, Request, Target, body_blocks, pinned_fetch, resolve

SETTING = "FAAS_INGESTION_URL_ALLOWLIST"
USER_AGENT = "faas-ingestion"


@dataclass(frozen=True)
class Fetched:
    url: str
    content_type: str | None
    size: int


async def check_url(url: str, allowlist: Sequence[str]) -> Target:
    """The URL's target if it may be fetched, else `ValidationFailed` (a 422 at submission)."""
    return await resolve(url, Allowlist.parse(allowlist), setting=SETTING)


async def fetch_to_file(
    url: str,
    target: Path,
    *,
    allowlist: Sequence[str],
    max_bytes: int,
    timeout_s: float,
) -> Fetched:
    allowed = Allowlist.parse(allowlist)

    async def check(hop: str) -> Target:
        return await resolve(hop, allowed, setting=SETTING)

    async def save(final: str, response: httpx.Response) -> Fetched:
        if response.status_code >= 400:
            raise UpstreamError(
                f"fetching {final} answered {response.status_code}",
                details={"url": final, "status": response.status_code},
            )
        size = 0
        with target.open("wb") as out:
            async for block in body_blocks(final, response):
                size += len(block)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"{final} is larger than {max_bytes} bytes",
                        details={"max_bytes": max_bytes},
                    )
                out.write(block)
        return Fetched(final, response.headers.get("content-type"), size)

    return await pinned_fetch(
        Request("GET", url), check=check, read=save, user_agent=USER_AGENT, timeout_s=timeout_s
    )
