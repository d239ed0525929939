"""Codecs (JSON, MessagePack, Protobuf) and content negotiation.

All codecs encode the same value types the same way, so a value decodes to the same thing
whichever codec carried it: datetimes, dates and times as ISO 8601 strings (MessagePack too:
a non-Python client needs no Timestamp extension; a Timestamp received is still read as a UTC
datetime), UUID and Decimal as strings, enums as their value, sets as lists, pydantic models as
`model_dump(mode="json")`, dataclasses as maps.

Protobuf uses the generated messages of `proto/faas.proto`; a free-form value travels as
MessagePack bytes in a `bytes` field. A codec never falls back to another: bytes it cannot read
raise `UndecodableBody`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from typing import Any, Protocol, TypeVar, overload
from uuid import UUID

import msgpack
import orjson
from google.protobuf.message import DecodeError, Message
from pydantic import BaseModel, TypeAdapter, ValidationError

from faas.integrations.proto import faas_pb2 as pb
from faas.shared.contracts import ErrorResponse, ServiceResponse
from faas.shared.exceptions import (
    NotAcceptable,
    UndecodableBody,
    UnsupportedMediaType,
    ValidationFailed,
)

T = TypeVar("T")

JSON = "application/json"
MSGPACK = "application/vnd.msgpack"
PROTOBUF = "application/protobuf"
PROTOBUF_ENVELOPE = f"{PROTOBUF}; proto=faas.v1.Envelope"
PROTOBUF_BODY = f"{PROTOBUF}; proto=faas.v1.Body"


class Codec(Protocol):
    content_type: str
    aliases: tuple[str, ...]

    def encode(self, obj: Any) -> bytes: ...

    @overload
    def decode(self, data: bytes, type_: None = None) -> Any: ...
    @overload
    def decode(self, data: bytes, type_: type[T]) -> T: ...


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, datetime | date | time):
        return obj.isoformat()
    if isinstance(obj, UUID | Decimal):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, set | frozenset):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot encode a value of type {type(obj).__name__}")


def pack(value: Any) -> bytes:
    """MessagePack of a value (the free-form fields of the protobuf messages)."""
    return bytes(msgpack.packb(value, default=_default, use_bin_type=True, datetime=False))


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, timestamp=3)
    except Exception as exc:  # msgpack raises ValueError, TypeError and its own errors
        raise UndecodableBody(f"body is not valid MessagePack: {exc}") from exc


@lru_cache(maxsize=512)
def _adapter(type_: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_)


def _validate(value: Any, type_: Any) -> Any:
    if isinstance(type_, type) and isinstance(value, type_):
        return value
    try:
        if isinstance(type_, type) and issubclass(type_, BaseModel):
            return type_.model_validate(value)
        return _adapter(type_).validate_python(value)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ValidationFailed(
            f"decoded value is not a valid {getattr(type_, '__name__', type_)}",
            details={"errors": errors},
        ) from exc


class _BaseCodec(ABC):
    content_type: str = ""
    aliases: tuple[str, ...] = ()

    @abstractmethod
    def encode(self, obj: Any) -> bytes: ...

    @abstractmethod
    def _loads(self, data: bytes, type_: Any) -> Any: ...

    @overload
    def decode(self, data: bytes, type_: None = None) -> Any: ...
    @overload
    def decode(self, data: bytes, type_: type[T]) -> T: ...

    def decode(self, data: bytes, type_: Any = None) -> Any:
        value = self._loads(data, type_)
        return value if type_ is None else _validate(value, type_)


class JsonCodec(_BaseCodec):
    content_type = JSON

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=_default)

    def _loads(self, data: bytes, type_: Any) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UndecodableBody(f"body is not valid JSON: {exc}") from exc


class MsgpackCodec(_BaseCodec):
    content_type = MSGPACK
    aliases: tuple[str, ...] = ("application/x-msgpack", "application/msgpack")

    def encode(self, obj: Any) -> bytes:
        return pack(obj)

    def _loads(self, data: bytes, type_: Any) -> Any:
        return unpack(data)


_SUCCESS_KEYS = frozenset(
    {"success", "data", "message", "correlation_id", "request_id", "timestamp", "metadata"}
)
_ERROR_KEYS = frozenset({"success", "error", "correlation_id", "request_id", "timestamp"})
_STR_FIELDS = ("message", "correlation_id", "request_id", "timestamp")


def envelope_message(body: Any) -> pb.Envelope | None:
    """The `Envelope` for a ServiceResponse/ErrorResponse in its JSON form; None when `body` is
    not exactly one, so that the caller sends it whole as a `Body` instead of dropping keys."""
    if not isinstance(body, dict) or type(body.get("success")) is not bool:
        return None
    success = body["success"]
    if not body.keys() <= (_SUCCESS_KEYS if success else _ERROR_KEYS) or "timestamp" not in body:
        return None
    fields = {k: body[k] for k in _STR_FIELDS if body.get(k) is not None}
    try:  # protobuf raises TypeError for a non-string in a string field
        if success:
            data, metadata = pack(body["data"]), pack(body.get("metadata", {}))
            return pb.Envelope(success=True, data=data, metadata=metadata, **fields)
        error = body["error"]
        if not error.keys() <= {"code", "message", "details"}:
            return None
        details = pack(error.get("details", {}))
        err = pb.ErrorBody(code=error["code"], message=error["message"], details=details)
        return pb.Envelope(success=False, error=err, **fields)
    except (KeyError, TypeError, AttributeError):
        return None


def envelope_dict(message: pb.Envelope) -> dict[str, Any]:
    """The JSON form (ServiceResponse or ErrorResponse) of an `Envelope`."""
    ids = {k: getattr(message, k) if message.HasField(k) else None for k in _STR_FIELDS[1:3]}
    if message.success:
        return {
            "success": True,
            "data": unpack(message.data),
            "message": message.message if message.HasField("message") else None,
            **ids,
            "timestamp": message.timestamp,
            "metadata": unpack(message.metadata) if message.metadata else {},
        }
    if not message.HasField("error"):
        raise UndecodableBody("an Envelope with success=false must carry an error")
    error = message.error
    details = unpack(error.details) if error.details else {}
    return {
        "success": False,
        "error": {"code": error.code, "message": error.message, "details": details},
        **ids,
        "timestamp": message.timestamp,
    }


def _parse(cls: type[Message], data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise UndecodableBody(f"body is not a valid {cls.DESCRIPTOR.full_name}: {exc}") from exc


class ProtobufCodec(_BaseCodec):
    """Messages encode as themselves, ServiceResponse/ErrorResponse as `Envelope`, any other
    value as a `Body`. Decoding reads an `Envelope` when asked for one of the envelope models
    (or `Envelope`), the given message class when asked for one, otherwise a `Body`."""

    content_type = PROTOBUF
    aliases: tuple[str, ...] = ("application/x-protobuf",)

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, Message):
            return obj.SerializeToString()
        if isinstance(obj, ServiceResponse | ErrorResponse):
            envelope = envelope_message(obj.model_dump(mode="json"))
            if envelope is not None:
                return envelope.SerializeToString()
        return pb.Body(data=pack(obj)).SerializeToString()

    def _loads(self, data: bytes, type_: Any) -> Any:
        if isinstance(type_, type) and issubclass(type_, Message):
            return _parse(type_, data)
        if isinstance(type_, type) and issubclass(type_, ServiceResponse | ErrorResponse):
            return envelope_dict(_parse(pb.Envelope, data))
        return unpack(_parse(pb.Body, data).data)


def media_type(content_type: str) -> str:
    """`Application/JSON; charset=utf-8` -> `application/json`."""
    return content_type.partition(";")[0].strip().lower()


def _parse_accept(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        name, *params = part.split(";")
        q = next((v for k, _, v in (p.partition("=") for p in params) if k.strip() == "q"), "1")
        try:
            weight = float(q)
        except ValueError:
            weight = 0.0
        if name.strip():
            ranges.append((name.strip().lower(), weight if 0.0 <= weight <= 1.0 else 0.0))
    return ranges


class CodecRegistry:
    """The codecs a process speaks, looked up by Content-Type and negotiated by Accept."""

    def __init__(self, codecs: Iterable[Codec], *, default: str = JSON) -> None:
        self.codecs: tuple[Codec, ...] = tuple(codecs)
        self._by_type = {name: c for c in self.codecs for name in (c.content_type, *c.aliases)}
        self.default = self.get(default)
        self._choose: Callable[[str], Codec | None] = lru_cache(maxsize=512)(self._rank)

    @property
    def media_types(self) -> list[str]:
        return [c.content_type for c in self.codecs]

    def find(self, content_type: str) -> Codec | None:
        return self._by_type.get(media_type(content_type))

    def get(self, content_type: str) -> Codec:
        codec = self.find(content_type)
        if codec is None:
            raise UnsupportedMediaType(
                f"unsupported Content-Type {content_type!r}: send Content-Type: {JSON}"
                f" (accepted: {', '.join(self.media_types)})",
                details={"content_type": content_type, "supported": self.media_types},
            )
        return codec

    def negotiate(self, accept: str | None) -> Codec:
        """The best codec for an Accept header (the default when absent or empty)."""
        if accept is None or not accept.strip():
            return self.default
        codec = self._choose(accept)
        if codec is None:
            raise NotAcceptable(
                f"none of {accept!r} can be produced",
                details={"accept": accept, "available": self.media_types},
            )
        return codec

    def _rank(self, accept: str) -> Codec | None:
        ranges = _parse_accept(accept)
        ranked: list[tuple[tuple[float, int, int, int], Codec]] = []
        for index, codec in enumerate(self.codecs):
            names = (codec.content_type, *codec.aliases)
            family = codec.content_type.split("/")[0] + "/*"
            # The most specific matching range sets this codec's q (RFC 9110 12.5.1); among
            # equal q, the more specific match, then the earlier range, then registry order.
            matches = [
                (3 if name in names else 2 if name == family else 1, q, -position)
                for position, (name, q) in enumerate(ranges)
                if name in names or name in (family, "*/*")
            ]
            if matches:
                specificity, q, position = max(matches)
                if q > 0.0:
                    ranked.append(((q, specificity, position, -index), codec))
        return max(ranked, key=lambda r: r[0])[1] if ranked else None


def default_registry() -> CodecRegistry:
    return CodecRegistry([JsonCodec(), MsgpackCodec(), ProtobufCodec()])
