"""Content negotiation over HTTP as pure ASGI: route handlers only ever see and produce JSON.

A MessagePack or Protobuf request body is transcoded to JSON before the app reads it, and the
app's JSON response is transcoded to the codec the `Accept` header chose. JSON in and JSON out
cost one scan of the request headers and a `Vary: Accept` on the response, nothing more.

Place it inside `RequestContextMiddleware` (its errors then carry the request ids) and outside
`BodyLimitMiddleware` and `AuthMiddleware`, so their errors reach the client in its codec too;
`max_body_bytes` then caps the raw body this middleware buffers.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faas.integrations.codec import (
    JSON,
    PROTOBUF_BODY,
    PROTOBUF_ENVELOPE,
    Codec,
    CodecRegistry,
    ProtobufCodec,
    default_registry,
    envelope_message,
    media_type,
)
from faas.shared.exceptions import (
    FaaSError,
    NotAcceptable,
    PayloadTooLarge,
    UndecodableBody,
    error_for_status,
)
from faas.shared.middleware import ErrorRenderer, error_payload, replay_body

VARY = (b"vary", b"Accept")
_JSON = JSON.encode()
# Accept values that can only mean JSON, answered without parsing.
_JSON_ACCEPTS = frozenset({b"*/*", b"application/json", b"application/json, */*"})
# Bodies the app parses itself (uploads, forms), so they are neither transcoded nor refused.
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def encode_for(codec: Codec, value: Any) -> tuple[bytes, str]:
    """A JSON-form value in `codec`, with the Content-Type to send it under."""
    if isinstance(codec, ProtobufCodec):
        envelope = envelope_message(value)
        if envelope is not None:
            return envelope.SerializeToString(), PROTOBUF_ENVELOPE
        return codec.encode(value), PROTOBUF_BODY
    return codec.encode(value), codec.content_type


def make_error_renderer(registry: CodecRegistry, *, paths_prefix: str = "/api/") -> ErrorRenderer:
    """An `ErrorRenderer` for `RequestContextMiddleware` that answers in the client's codec."""

    def render(scope: Scope, exc: FaaSError) -> tuple[bytes, str]:
        codec = registry.default
        if scope.get("path", "").startswith(paths_prefix):
            accept = _headers(scope)[1]
            # A client that reads none of our codecs gets the default (JSON).
            with suppress(NotAcceptable):
                codec = registry.negotiate(accept.decode("latin-1") if accept else None)
        return encode_for(codec, error_payload(exc).model_dump(mode="json"))

    return render


def _headers(scope: Scope) -> tuple[bytes | None, bytes | None, bool]:
    content_type = accept = None
    has_body = False
    for key, value in scope["headers"]:
        if key == b"content-type":
            content_type = value
        elif key == b"accept":
            accept = value
        elif key == b"content-length":
            has_body = value != b"0"
        elif key == b"transfer-encoding":
            has_body = True
    return content_type, accept, has_body


class CodecMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        registry: CodecRegistry | None = None,
        *,
        paths_prefix: str = "/api/",
        max_body_bytes: int | None = None,
        passthrough_types: Iterable[str] = FORM_TYPES,
    ) -> None:
        self.app = app
        self.registry = registry or default_registry()
        self.json = self.registry.get(JSON)
        self.prefix = paths_prefix
        self.max_body_bytes = max_body_bytes
        self.passthrough = frozenset(passthrough_types)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        content_type, accept, has_body = _headers(scope)
        out = self.json
        if accept is not None and accept not in _JSON_ACCEPTS:
            try:
                out = self.registry.negotiate(accept.decode("latin-1"))
            except NotAcceptable as exc:
                await self._send_error(send, exc, self.json)
                return
        if has_body and content_type is not None and not content_type.startswith(_JSON):
            try:
                inbound = self._request_codec(content_type.decode("latin-1"))
                if inbound is not None:
                    scope, receive = await self._transcode_request(scope, receive, inbound)
            except FaaSError as exc:
                await self._send_error(send, exc, out)
                return
        if out is self.json:
            await self.app(scope, receive, _add_vary(send))
        else:
            await self.app(scope, receive, _ResponseTranscoder(send, out).send)

    def _request_codec(self, content_type: str) -> Codec | None:
        """The codec to transcode the body from; None when the app reads it as it is."""
        if media_type(content_type) in self.passthrough:
            return None
        codec = self.registry.get(content_type)
        return None if codec is self.json else codec

    async def _transcode_request(
        self, scope: Scope, receive: Receive, codec: Codec
    ) -> tuple[Scope, Receive]:
        raw = await self._read_body(scope, receive)
        try:
            body = orjson.dumps(codec.decode(raw))
        except TypeError as exc:  # bytes, ext types or non-string keys have no JSON form
            raise UndecodableBody(f"the body holds values JSON cannot carry: {exc}") from exc
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k not in (b"content-type", b"content-length", b"transfer-encoding")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        return {**scope, "headers": headers}, replay_body(body, receive)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = scope.get("state", {}).get("faas_body_limit", self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await receive()
            except HTTPException as exc:  # an outer body limit refusing the stream
                raise error_for_status(exc.status_code)(str(exc.detail)) from exc
            if message["type"] != "http.request":
                raise UndecodableBody("the client disconnected before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                raise PayloadTooLarge(
                    f"request body exceeds {limit} bytes", details={"max_bytes": limit}
                )
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    @staticmethod
    async def _send_error(send: Send, exc: FaaSError, codec: Codec) -> None:
        body, content_type = encode_for(codec, error_payload(exc).model_dump(mode="json"))
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", b"%d" % len(body)),
            VARY,
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _add_vary(send: Send) -> Send:
    async def send_with_vary(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), VARY]
        await send(message)

    return send_with_vary


class _ResponseTranscoder:
    """Buffers a JSON response and sends it re-encoded; passes any other response through."""

    def __init__(self, send: Send, codec: Codec) -> None:
        self._send = send
        self.codec = codec
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers", ())
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            if content_type.startswith(_JSON) and message["status"] not in (204, 304):
                self.start = message
                return
            message["headers"] = [*headers, VARY]
        elif message["type"] == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._flush(self.start, b"".join(self.chunks))
            return
        await self._send(message)

    async def _flush(self, start: Message, body: bytes) -> None:
        if not body:  # HEAD, or nothing to transcode: headers stay as the app set them
            await self._send({**start, "headers": [*start["headers"], VARY]})
            await self._send({"type": "http.response.body", "body": body})
            return
        status = start["status"]
        headers = [
            (k, v)
            for k, v in start["headers"]
            if k.lower() not in (b"content-type", b"content-length")
        ]
        try:
            body, content_type = encode_for(self.codec, orjson.loads(body))
        except orjson.JSONDecodeError:
            error = FaaSError("Internal server error")
            payload = error_payload(error).model_dump(mode="json")
            body, content_type = encode_for(self.codec, payload)
            status, headers = error.status_code, []
        headers += [
            (b"content-type", content_type.encode()),
            (b"content-length", b"%d" % len(body)),
            VARY,
        ]
        await self._send({**start, "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})
