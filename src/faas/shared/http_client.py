"""Service-to-service HTTP: identity and trace forwarding, safe retries, a circuit breaker.

One `ServiceClient` per target service holds one pooled `httpx.AsyncClient`. In-process targets
(an ASGI app) go through `httpx.ASGITransport`, so tests and single-process deployments exercise
the same code path as the network: the same request, headers and app, only no socket. They are
handed to the transport itself rather than through the client's send, whose cookie jar (parsing
every response into urllib objects, a quarter of a hop's client-side CPU) has nothing to do
between services; over the network the jar refuses every cookie, so no call carries one that
an earlier call, maybe another tenant's, was given. JSON bodies are encoded with orjson.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Any, Self

import httpx
import orjson
from opentelemetry import propagate, trace
from starlette.types import ASGIApp, Receive, Scope, Send

from faas.shared.backoff import backoff
from faas.shared.breaker import CircuitBreaker
from faas.shared.context import (
    CORRELATION_HEADER,
    IN_PROCESS,
    REQUEST_HEADER,
    TENANT_HEADER,
    USER_HEADER,
    current_context,
    new_id,
)
from faas.shared.exceptions import (
    DependencyUnavailable,
    UpstreamError,
    UpstreamTimeout,
    error_for_status,
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Only errors raised before the request reached the server; anything later may have had effects.
RETRY_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
RETRY_AFTER_MAX_S = 30.0
_URLS_KEPT = 1024  # merged URLs a client keeps, by path

Sleep = Callable[[float], Awaitable[None]]


def raise_for_error(response: httpx.Response, service: str) -> None:
    """Turn another faas service's error answer into the same FaaSError here (status, code and
    message kept), so a 404 from RAG stays a 404 for the agent's caller."""
    if response.status_code < 400:
        return
    code, message, details = "", f"{service} answered {response.status_code}", {}
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or "")
            message = str(error.get("message") or message)
            raw_details = error.get("details")
            details = raw_details if isinstance(raw_details, dict) else {}
    except ValueError:
        pass
    error_cls = error_for_status(response.status_code)
    exc = error_cls(message, details={**details, "service": service})
    exc.status_code = response.status_code
    if code:
        exc.code = code
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        exc.headers["Retry-After"] = retry_after
    raise exc


def _in_process(app: ASGIApp) -> ASGIApp:
    """`app` with every request marked as made inside this process (`IN_PROCESS`), which
    trusted-headers authentication believes whatever the peer address."""

    async def marked(scope: Scope, receive: Receive, send: Send) -> None:
        scope[IN_PROCESS] = True
        await app(scope, receive, send)

    return marked


def _json_content(json: Any, content: bytes | str | None, headers: httpx.Headers) -> Any:
    """The body: `json` encoded by orjson (keys that are not strings as strings, as the
    standard library's encoder does), else `content` as given."""
    if json is None:
        return content
    if content is not None:
        raise ValueError("give json or content, not both")
    headers.setdefault("Content-Type", "application/json")
    return orjson.dumps(json, option=orjson.OPT_NON_STR_KEYS)


async def _send_local(
    transport: httpx.ASGITransport, request: httpx.Request, stream: bool
) -> httpx.Response:
    """An in-process request through the ASGI transport: what the client's send does, less
    the cookie jar and redirects (an in-process service sets neither)."""
    response = await transport.handle_async_request(request)
    response.request = request
    if not stream:
        try:
            await response.aread()
        finally:
            await response.aclose()
    return response


def _build(
    client: httpx.AsyncClient,
    urls: dict[str, httpx.URL],
    method: str,
    path: str,
    content: bytes | str | None,
    headers: httpx.Headers,
    timeout_s: float | None,
    params: Mapping[str, Any] | None = None,
) -> httpx.Request:
    """The request `client.build_request` makes, with the URL of a path without query
    parameters merged into the base URL once and kept in `urls`, not on every call (parsing
    both was a third of building a request); cookies are left out, as the jar keeps none."""
    if params:
        return client.build_request(
            method,
            path,
            content=content,
            params=params,
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s,
        )
    url = urls.get(path)
    if url is None:
        if len(urls) >= _URLS_KEPT:  # paths with ids in them: keep it bounded
            urls.clear()
        url = urls[path] = client.build_request("GET", path).url
    merged = httpx.Headers(client.headers)
    merged.update(headers)
    timeout = client.timeout if timeout_s is None else httpx.Timeout(timeout_s)
    return httpx.Request(
        method, url, content=content, headers=merged, extensions={"timeout": timeout.as_dict()}
    )


class ServiceClient:
    """Calls one faas service. `retries` counts extra attempts after the first."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        asgi_app: ASGIApp | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        breaker: CircuitBreaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._local: httpx.ASGITransport | None = None
        if asgi_app is not None:
            if base_url is not None or transport is not None:
                raise ValueError("asgi_app excludes base_url and transport")
            transport = self._local = httpx.ASGITransport(app=_in_process(asgi_app))
            base_url = f"http://{name}.inprocess"
        elif base_url is None:
            raise ValueError(f"{name}: give base_url (optionally with transport) or asgi_app")
        self.name = name
        self.retries = max(0, retries)
        self.breaker = breaker or CircuitBreaker()
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._tracer = tracer or trace.get_tracer("faas.http_client")
        self._urls: dict[str, httpx.URL] = {}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            # No cookie is kept between calls: the next call may be another tenant's.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """Send with retries; returns the last response even if it is an error status."""
        method = method.upper()
        retryable = method in IDEMPOTENT_METHODS or idempotency_key is not None
        last_attempt = self.retries if retryable else 0
        base_headers = self._base_headers(headers, idempotency_key)
        content = _json_content(json, content, base_headers)
        for attempt in range(last_attempt + 1):
            ticket = self.breaker.acquire()
            if ticket is None:
                raise self._circuit_open()
            request = _build(
                self._client, self._urls, method, path, content, base_headers, timeout_s, params
            )
            try:
                response = await self._send(request)
            except httpx.TransportError as exc:
                self.breaker.record(ticket, ok=False)
                if attempt < last_attempt and isinstance(exc, RETRY_ERRORS):
                    await self._sleep(self._backoff(attempt))
                    continue
                raise self._translate(exc) from exc
            except BaseException:
                self.breaker.release(ticket)
                raise
            self.breaker.record(ticket, ok=response.status_code < 500)
            if attempt < last_attempt and response.status_code in RETRY_STATUSES:
                await self._sleep(self._retry_delay(attempt, response))
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed response (e.g. server-sent events). Never retried: a stream may already
        have been partly consumed when it fails."""
        ticket = self.breaker.acquire()
        if ticket is None:
            raise self._circuit_open()
        base_headers = self._base_headers(headers, None)
        content = _json_content(json, None, base_headers)
        request = _build(
            self._client, self._urls, method.upper(), path, content, base_headers, timeout_s
        )
        try:
            response = await self._send(request, stream=True)
        except httpx.TransportError as exc:
            self.breaker.record(ticket, ok=False)
            raise self._translate(exc) from exc
        except BaseException:
            self.breaker.release(ticket)
            raise
        self.breaker.record(ticket, ok=response.status_code < 500)
        try:
            yield response
        finally:
            await response.aclose()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        with self._tracer.start_as_current_span(
            f"{request.method} {self.name}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "http.request.method": request.method,
                "server.address": self.name,
                "url.path": request.url.path,
            },
        ) as span:
            # Inside the span so the downstream server parents its span to this one.
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            ctx = current_context()
            if "traceparent" not in carrier and ctx is not None and ctx.traceparent:
                # Tracing is off here: pass the caller's trace through rather than break it.
                carrier["traceparent"] = ctx.traceparent
            request.headers.update(carrier)
            request.headers[REQUEST_HEADER] = new_id()
            if self._local is None:
                response = await self._client.send(request, stream=stream)
            else:
                response = await _send_local(self._local, request, stream)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(trace.StatusCode.ERROR)
            return response

    def _base_headers(
        self, given: Mapping[str, str] | None, idempotency_key: str | None
    ) -> httpx.Headers:
        headers = httpx.Headers(given)
        ctx = current_context()
        if ctx is not None:
            headers[CORRELATION_HEADER] = ctx.correlation_id
        elif CORRELATION_HEADER not in headers:
            headers[CORRELATION_HEADER] = new_id()
        identity = ctx.identity if ctx else None
        if identity is not None:
            # The context's identity wins whole: a caller cannot add or swap tenant, user or token.
            for name in ("Authorization", TENANT_HEADER, USER_HEADER):
                headers.pop(name, None)
            headers[TENANT_HEADER] = identity.tenant_id
            if identity.user_id:
                headers[USER_HEADER] = identity.user_id
            if identity.token:
                headers["Authorization"] = f"Bearer {identity.token}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _backoff(self, attempt: int) -> float:
        return backoff(attempt, base_s=self._backoff_base_s, cap_s=self._backoff_max_s, jitter=True)

    def _retry_delay(self, attempt: int, response: httpx.Response) -> float:
        if response.status_code in (429, 503):
            try:
                seconds = float(response.headers.get("Retry-After", ""))
            except ValueError:
                seconds = math.nan  # absent or the HTTP-date form: fall back to backoff
            if math.isfinite(seconds) and seconds >= 0:
                return min(seconds, RETRY_AFTER_MAX_S)
        return self._backoff(attempt)

    def _circuit_open(self) -> DependencyUnavailable:
        wait = self.breaker.retry_after_s
        return DependencyUnavailable(
            f"{self.name} circuit open",
            details={"service": self.name, "retry_after_s": round(wait, 3)},
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    def _translate(self, exc: httpx.TransportError) -> Exception:
        details = {"service": self.name}
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"{self.name} timed out", details=details)
        if isinstance(exc, httpx.ConnectError):
            return DependencyUnavailable(f"{self.name} is unreachable", details=details)
        return UpstreamError(f"{self.name} transport error: {type(exc).__name__}", details=details)
