"""Pure ASGI middleware: request context + logging + last-resort errors, body limit, auth.

Pure ASGI (not BaseHTTPMiddleware) keeps contextvars flowing into the endpoints.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faas.shared.auth import TokenVerifier, tenant_from_header, valid_tenant
from faas.shared.config import Settings
from faas.shared.context import (
    CORRELATION_HEADER,
    IN_PROCESS,
    REQUEST_HEADER,
    TENANT_HEADER,
    USER_HEADER,
    Identity,
    RequestContext,
    current_context,
    reset_context,
    set_context,
    trace_id,
)
from faas.shared.contracts import ErrorBody, ErrorResponse
from faas.shared.exceptions import (
    FaaSError,
    Forbidden,
    PayloadTooLarge,
    Unauthenticated,
    error_for_status,
)
from faas.shared.input_rules import check_json_body, check_url
from faas.shared.logging import RequestLog

log = logging.getLogger("faas.request")

# The context headers as ASGI scopes hold header names: lowercased bytes.
_CORRELATION = CORRELATION_HEADER.lower().encode()
_REQUEST = REQUEST_HEADER.lower().encode()
_TENANT = TENANT_HEADER.lower().encode()
_USER = USER_HEADER.lower().encode()

PUBLIC_PATHS = frozenset(
    {"/livez", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

ErrorRenderer = Callable[[Scope, FaaSError], tuple[bytes, str]]


def error_payload(exc: FaaSError) -> ErrorResponse:
    ctx = current_context()
    return ErrorResponse(
        error=ErrorBody(code=exc.code, message=exc.message, details=exc.details),
        correlation_id=ctx.correlation_id if ctx else None,
        request_id=ctx.request_id if ctx else None,
    )


def json_error_renderer(scope: Scope, exc: FaaSError) -> tuple[bytes, str]:
    return orjson.dumps(error_payload(exc).model_dump(mode="json")), "application/json"


async def send_error(
    scope: Scope, send: Send, exc: FaaSError, renderer: ErrorRenderer = json_error_renderer
) -> None:
    body, content_type = renderer(scope, exc)
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lowercase bytes, as ASGI scopes hold them): a scan of
    the scope's few headers, a fifth of what a lookup in Starlette's `request.headers` costs."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Creates the request context, echoes the ids, logs one line, renders escaped errors."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        log_requests: bool = True,
        renderer: ErrorRenderer | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self.app = app
        self.log_requests = log_requests
        self.renderer = renderer or json_error_renderer
        self.request_log = request_log or RequestLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = scope_header(scope, _CORRELATION)
        ctx = RequestContext(
            correlation_id=given if given and _ID_RE.match(given) else trace_id(),
            request_id=trace_id(),
            traceparent=scope_header(scope, b"traceparent"),
        )
        token = set_context(ctx)
        scope.setdefault("state", {})["faas_started"] = start = time.perf_counter()
        id_headers = [
            (_CORRELATION, ctx.correlation_id.encode()),
            (_REQUEST, ctx.request_id.encode()),
        ]
        status = 500
        started = False

        async def send_with_ids(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = list(message.get("headers", [])) + id_headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except Exception as exc:
            error = exc if isinstance(exc, FaaSError) else FaaSError("Internal server error")
            if isinstance(exc, FaaSError):
                status = exc.status_code
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not started:
                status = error.status_code
                await send_error(scope, send_with_ids, error, self.renderer)
        finally:
            if self.log_requests and self.request_log.enabled():
                identity = scope["state"].get("faas_identity")
                self.request_log.write(
                    {
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                        "tenant_id": identity.tenant_id if identity else None,
                    }
                )
            reset_context(token)


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413: at once by Content-Length, else while streaming."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, overrides: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Path prefixes with their own cap (uploads), longest prefix first.
        self.overrides = sorted((overrides or {}).items(), key=lambda kv: -len(kv[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for prefix, cap in self.overrides:
            if scope["path"].startswith(prefix):
                limit = cap
                break
        declared = scope_header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(scope, send, self._too_large(limit))
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # HTTPException passes through FastAPI's body parsing untouched.
                    raise HTTPException(413, self._too_large(limit).message)
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    def _too_large(limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {limit} bytes", details={"max_bytes": limit})


# Bodies above this are checked in a thread: parsing megabytes must not stall the event loop.
INLINE_CHECK_BYTES = 256 * 1024


def is_json_media(content_type: str | None) -> bool:
    """A JSON body, or one without a Content-Type (checked by the input rule too; the route
    then answers 415 asking for `application/json`)."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class InputRulesMiddleware:
    """Holds every request to `faas.shared.input_rules` before any route sees it.

    A JSON body is read whole, checked (strict JSON, 64-bit integers, no NUL) and handed on
    unchanged; its decoded value is left in `scope["state"]["faas_json"]` for routes that parse
    the body themselves. Runs inside the body limit, so it never buffers more than the limit.
    """

    def __init__(self, app: ASGIApp, *, renderer: ErrorRenderer | None = None) -> None:
        self.app = app
        self.renderer = renderer or json_error_renderer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_url(scope["path"], scope.get("query_string", b""))
            if scope.get("method") in ("POST", "PUT", "PATCH") and is_json_media(
                scope_header(scope, b"content-type")
            ):
                receive = await self._checked_body(scope, receive)
        except FaaSError as exc:
            await send_error(scope, send, exc, self.renderer)
            return
        await self.app(scope, receive, send)

    async def _checked_body(self, scope: Scope, receive: Receive) -> Receive:
        chunks: list[bytes] = []
        more = True
        while more:
            try:
                message = await receive()
            except HTTPException as exc:  # the body limit refusing the stream
                raise error_for_status(exc.status_code)(str(exc.detail)) from exc
            if message["type"] != "http.request":
                return replay_body(b"", receive, message)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            if len(body) > INLINE_CHECK_BYTES:
                value = await asyncio.to_thread(check_json_body, body)
            else:
                value = check_json_body(body)
            scope.setdefault("state", {})["faas_json"] = value
        return replay_body(body, receive)


def replay_body(body: bytes, receive: Receive, last: Message | None = None) -> Receive:
    """A `receive` that hands the buffered body over once, then defers to the real one."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        if last is not None:
            return last
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class AuthMiddleware:
    """Resolves the caller's identity according to FAAS_AUTH and stores it in the context."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        verifier: TokenVerifier | None,
        public_paths: Iterable[str] = PUBLIC_PATHS,
        public_prefixes: Iterable[str] = (),
        renderer: ErrorRenderer | None = None,
    ) -> None:
        self.app = app
        self.renderer = renderer or json_error_renderer
        self.mode = settings.auth
        self.verifier = verifier
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)
        self.trusted_networks = settings.trusted_networks()
        if self.mode == "trusted-headers":
            log.warning(
                "FAAS_AUTH=trusted-headers: X-Tenant-ID, X-User-ID and X-Scopes are believed "
                "without a token from requests coming from %s",
                ", ".join(str(n) for n in self.trusted_networks),
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            identity = await self._identify(scope)
        except FaaSError as exc:
            await send_error(scope, send, exc, self.renderer)
            return
        state = scope.setdefault("state", {})
        state["faas_auth_ms"] = (time.perf_counter() - started) * 1000
        ctx = current_context()
        if ctx is None:
            ctx = RequestContext(correlation_id=trace_id(), request_id=trace_id())
        state["faas_identity"] = identity
        token = set_context(ctx.with_identity(identity))
        try:
            await self.app(scope, receive, send)
        finally:
            reset_context(token)

    def _is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)

    async def _identify(self, scope: Scope) -> Identity:
        header_tenant = scope_header(scope, _TENANT)
        header_user = scope_header(scope, _USER)
        if self.mode == "jwt":
            token = self._bearer(scope)
            assert self.verifier is not None
            identity = await self.verifier.verify(token)
            return tenant_from_header(identity, header_tenant)
        if self.mode == "trusted-headers" and not self._from_trusted_peer(scope):
            raise Unauthenticated(
                "identity headers are accepted only from the proxies in FAAS_TRUSTED_PROXY_CIDRS"
            )
        if not header_tenant:
            raise Unauthenticated("X-Tenant-ID header is required")
        if not valid_tenant(header_tenant):
            raise Forbidden("X-Tenant-ID is not a valid tenant id")
        scopes = scope_header(scope, b"x-scopes") if self.mode == "trusted-headers" else None
        return Identity(
            tenant_id=header_tenant,
            user_id=header_user,
            scopes=frozenset(scopes.split()) if scopes else frozenset(),
            token=None,
        )

    def _from_trusted_peer(self, scope: Scope) -> bool:
        """The direct peer (not X-Forwarded-For) is a trusted proxy, or the request was made
        by another service of this process."""
        if scope.get(IN_PROCESS):
            return True
        client = scope.get("client")
        try:
            peer = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped  # an IPv4 client of a dual-stack listener
        return peer is not None and any(peer in network for network in self.trusted_networks)

    @staticmethod
    def _bearer(scope: Scope) -> str:
        value = scope_header(scope, b"authorization")
        if not value:
            # Anthropic's clients send their key as `x-api-key`: the same token, another header.
            api_key = scope_header(scope, b"x-api-key")
            if api_key and api_key.strip():
                return api_key.strip()
            raise Unauthenticated("missing bearer token")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <token>'")
        return token.strip()
