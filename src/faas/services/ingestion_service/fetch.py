"""Fetching a URL without becoming a proxy into the private network (SSRF): http(s) only,
every address the name resolves to must be public (or allow-listed), the connection goes to
the address that was checked (no DNS rebinding between check and connect), redirects are
re-checked hop by hop, and size and time are bounded."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from faas.shared.exceptions import PayloadTooLarge, UpstreamError, ValidationFailed

MAX_REDIRECTS = 5
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Fetched:
    url: str
    content_type: str | None
    size: int


def _allowed(ip: Address, host: str, allowlist: Sequence[str]) -> bool:
    for entry in allowlist:
        if entry == host:
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return ip.is_global and not ip.is_multicast


async def resolve_public(url: str, allowlist: Sequence[str]) -> tuple[str, str, int, Address]:
    """(scheme, host, port, address) for a URL that may be fetched, else ValidationFailed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationFailed("only http and https URLs can be fetched", details={"url": url})
    host = parts.hostname
    if not host:
        raise ValidationFailed("the URL has no host", details={"url": url})
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValidationFailed(f"cannot resolve {host}", details={"url": url}) from exc
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    refused = [str(a) for a in addresses if not _allowed(a, host, allowlist)]
    if refused or not addresses:
        raise ValidationFailed(
            f"{host} resolves to a private, loopback or link-local address; add it to "
            "FAAS_INGESTION_URL_ALLOWLIST to allow it",
            details={"url": url, "addresses": sorted(refused)},
        )
    return parts.scheme, host, port, sorted(addresses, key=str)[0]


async def fetch_to_file(
    url: str,
    target: Path,
    *,
    allowlist: Sequence[str],
    max_bytes: int,
    timeout_s: float,
) -> Fetched:
    current = url
    async with asyncio.timeout(timeout_s):
        for _ in range(MAX_REDIRECTS + 1):
            scheme, host, port, address = await resolve_public(current, allowlist)
            parts = urlsplit(current)
            ip_host = f"[{address}]" if address.version == 6 else str(address)
            pinned = parts._replace(netloc=f"{ip_host}:{port}").geturl()
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            # trust_env=False: a proxy from the environment would bypass the address pinning.
            async with httpx.AsyncClient(
                timeout=timeout_s, follow_redirects=False, trust_env=False
            ) as client:
                request = client.build_request(
                    "GET",
                    pinned,
                    headers={"Host": parts.netloc, "User-Agent": "faas-ingestion"},
                    extensions=extensions,
                )
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise UpstreamError(f"{current} redirected without a Location")
                        current = urljoin(current, location)
                        continue
                    if response.status_code >= 400:
                        raise UpstreamError(
                            f"fetching {current} answered {response.status_code}",
                            details={"url": current, "status": response.status_code},
                        )
                    size = 0
                    with target.open("wb") as out:
                        async for block in response.aiter_bytes():
                            size += len(block)
                            if size > max_bytes:
                                raise PayloadTooLarge(
                                    f"{current} is larger than {max_bytes} bytes",
                                    details={"max_bytes": max_bytes},
                                )
                            out.write(block)
                    return Fetched(current, response.headers.get("content-type"), size)
                finally:
                    await response.aclose()
    raise UpstreamError(f"{url} redirected more than {MAX_REDIRECTS} times")
