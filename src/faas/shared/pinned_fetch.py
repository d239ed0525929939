"""Fetching a URL without becoming a proxy into the private network (SSRF).

One policy for every outgoing fetch a tenant can aim (URL ingestion, agents' HTTP tools):
http(s) only; the name is resolved once and every address it resolves to must be public unless
an allow-list admits it; the connection goes to the address that was checked, with the original
Host and TLS server name (no DNS rebinding between check and connect); each redirect hop is
checked again; time is bounded, and the body is read as sent (identity encoding) so a size
bound holds for what is kept.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from faas.shared.exceptions import UpstreamError, ValidationFailed

MAX_REDIRECTS = 5
# A POST answered with one of these is followed with a GET, as browsers do.
REDIRECT_TO_GET = frozenset({301, 302, 303})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


@dataclass(frozen=True)
class Allowlist:
    """The entries of an allow-list setting: host names, and IP networks (a CIDR or a single
    address), which may be private."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> Allowlist:
        hosts: set[str] = set()
        networks: list[Network] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def covers(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


class UnsafeAddress(ValidationFailed):
    """The URL's host is, or resolves to, a loopback, private, link-local or other non-public
    address that the allow-list does not admit."""

    def __init__(self, url: str, host: str, addresses: list[str], setting: str) -> None:
        super().__init__(
            f"{host} resolves to a private, loopback or link-local address; add it to "
            f"{setting} to allow it",
            details={"url": url, "addresses": addresses},
        )
        self.host = host
        self.addresses = addresses


@dataclass(frozen=True)
class Target:
    """Where one hop connects: the URL's scheme, host and port, and the checked address."""

    scheme: str
    host: str
    port: int
    address: Address

    def pinned(self, url: str) -> str:
        """`url` with the checked address in place of its host name."""
        ip_host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return urlsplit(url)._replace(netloc=f"{ip_host}:{self.port}").geturl()


def _admitted(address: Address, host: str, allowlist: Allowlist) -> bool:
    if host in allowlist.hosts or allowlist.covers(address):
        return True
    return address.is_global and not address.is_multicast


async def resolve(url: str, allowlist: Allowlist, *, setting: str) -> Target:
    """The target of an http(s) URL whose every address is public or admitted (its host is
    listed by name, or the address is in a listed network), else `ValidationFailed`
    (`UnsafeAddress` for a refused address; `setting` names the allow-list to extend)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationFailed("only http and https URLs can be fetched", details={"url": url})
    name = parts.hostname
    if not name:
        raise ValidationFailed("the URL has no host", details={"url": url})
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValidationFailed(f"cannot resolve {name}", details={"url": url}) from exc
    host = name.rstrip(".")
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    refused = sorted(str(a) for a in addresses if not _admitted(a, host, allowlist))
    if refused or not addresses:
        raise UnsafeAddress(url, name, refused, setting)
    return Target(parts.scheme, host, port, sorted(addresses, key=str)[0])


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent to the URL's origin only: never carried across a redirect to another origin."""
    content: bytes | None = None
    content_type: str | None = None


CheckHop = Callable[[str], Awaitable[Target]]
ReadAnswer = Callable[[str, httpx.Response], Awaitable[T]]


async def pinned_fetch(
    request: Request,
    *,
    check: CheckHop,
    read: ReadAnswer[T],
    user_agent: str,
    timeout_s: float,
    max_redirects: int = MAX_REDIRECTS,
) -> T:
    """What `read(url, response)` makes of the first answer that is not a redirect.

    `check` gives each hop's target (typically `resolve` with the caller's allow-list) or
    raises; the whole exchange, reading included, takes at most `timeout_s` (TimeoutError).
    Transport failures and redirect trouble are `UpstreamError`."""
    method, current, content = request.method, request.url, request.content
    async with asyncio.timeout(timeout_s):
        for _ in range(max_redirects + 1):
            target = await check(current)
            headers = _hop_headers(request, current, user_agent, with_body=content is not None)
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            # trust_env=False: a proxy from the environment would bypass the address pinning.
            async with httpx.AsyncClient(
                timeout=timeout_s, follow_redirects=False, trust_env=False
            ) as client:
                built = client.build_request(
                    method,
                    target.pinned(current),
                    headers=headers,
                    content=content,
                    extensions=extensions,
                )
                try:
                    response = await client.send(built, stream=True)
                except httpx.HTTPError as exc:
                    raise UpstreamError(f"{method} {current} failed: {type(exc).__name__}") from exc
                try:
                    if not response.is_redirect:
                        return await read(current, response)
                    location = response.headers.get("location")
                    if not location:
                        raise UpstreamError(f"{current} redirected without a Location")
                    current = urljoin(current, location)
                    if response.status_code in REDIRECT_TO_GET and method not in ("GET", "HEAD"):
                        method, content = "GET", None
                finally:
                    await response.aclose()
    raise UpstreamError(f"{request.url} redirected more than {max_redirects} times")


def _hop_headers(request: Request, url: str, user_agent: str, *, with_body: bool) -> dict[str, str]:
    """The headers of one hop: the caller's only on its own origin (they may carry a
    tenant's credentials), Host as the URL names it, an identity body asked for."""
    same_origin = urlsplit(url)[:2] == urlsplit(request.url)[:2]
    headers = {
        **(request.headers if same_origin else {}),
        "Host": urlsplit(url).netloc.rpartition("@")[2],
        "User-Agent": user_agent,
        "Accept-Encoding": "identity",
    }
    if with_body and request.content_type:
        headers["Content-Type"] = request.content_type
    return headers


async def body_blocks(url: str, response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as sent. Identity encoding was asked for; a compressed answer is refused, as
    its decoded size would escape the caller's bound."""
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", ""):
        raise UpstreamError(f"{url} answered with unsupported encoding {encoding}")
    async for block in response.aiter_raw():
        yield block


async def read_capped(url: str, response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most `max_bytes` of the body, and whether there was more (left unread)."""
    body = bytearray()
    async for block in body_blocks(url, response):
        body += block
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
    return bytes(body), False
