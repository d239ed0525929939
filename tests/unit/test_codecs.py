"""Codecs round-trip the contract models and JSON-like values; negotiation follows RFC 9110."""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faas.integrations.codec import (
    Codec,
    CodecRegistry,
    JsonCodec,
    MsgpackCodec,
    ProtobufCodec,
    default_registry,
    envelope_dict,
)
from faas.integrations.proto import faas_pb2 as pb
from faas.shared.contracts import ErrorBody, ErrorResponse, Page, ServiceResponse
from faas.shared.exceptions import (
    NotAcceptable,
    UndecodableBody,
    UnsupportedMediaType,
    ValidationFailed,
)

CODECS: list[Codec] = [JsonCodec(), MsgpackCodec(), ProtobufCodec()]
codec_param = pytest.mark.parametrize("codec", CODECS, ids=lambda c: type(c).__name__)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
json_maps = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
optional_text = st.none() | st.text(max_size=20)
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)

service_responses = st.builds(
    ServiceResponse[Any],
    data=json_values,
    message=optional_text,
    correlation_id=optional_text,
    request_id=optional_text,
    timestamp=timestamps,
    metadata=json_maps,
)
error_responses = st.builds(
    ErrorResponse,
    error=st.builds(ErrorBody, code=st.text(max_size=20), message=st.text(), details=json_maps),
    correlation_id=optional_text,
    request_id=optional_text,
    timestamp=timestamps,
)
pages = st.builds(
    Page[Any],
    items=st.lists(json_values, max_size=5),
    total=st.integers(0, 10**6),
    limit=st.integers(1, 1000),
    offset=st.integers(0, 10**6),
)


@codec_param
@given(response=service_responses)
def test_service_response_round_trips(codec: Codec, response: ServiceResponse[Any]) -> None:
    assert codec.decode(codec.encode(response), ServiceResponse[Any]) == response


@codec_param
@given(response=error_responses)
def test_error_response_round_trips(codec: Codec, response: ErrorResponse) -> None:
    assert codec.decode(codec.encode(response), ErrorResponse) == response


@codec_param
@given(page=pages)
def test_page_round_trips(codec: Codec, page: Page[Any]) -> None:
    assert codec.decode(codec.encode(page), Page[Any]) == page


@codec_param
@given(value=json_values)
def test_any_json_like_value_round_trips(codec: Codec, value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


@given(response=service_responses | error_responses)
def test_protobuf_envelope_reads_as_the_json_form(
    response: ServiceResponse[Any] | ErrorResponse,
) -> None:
    envelope = pb.Envelope.FromString(ProtobufCodec().encode(response))
    assert envelope_dict(envelope) == orjson.loads(JsonCodec().encode(response))


def test_protobuf_envelope_is_a_generated_message_not_a_struct() -> None:
    response = ServiceResponse[Any](data={"a": [1, 2]}, metadata={"m": True})
    envelope = pb.Envelope.FromString(ProtobufCodec().encode(response))
    assert envelope.success is True
    assert msgpack.unpackb(envelope.data) == {"a": [1, 2]}
    assert msgpack.unpackb(envelope.metadata) == {"m": True}
    assert "google.protobuf" not in pb.DESCRIPTOR.serialized_pb.decode("latin-1")


def test_protobuf_messages_encode_as_themselves() -> None:
    codec = ProtobufCodec()
    event = pb.Event(id="e1", subject="rag.document_indexed.acme", tenant_id="acme", payload=b"x")
    job = pb.JobMessage(job_id="j1", kind="ingest", tenant_id="acme", attempt=2)
    assert codec.decode(codec.encode(event), pb.Event) == event
    assert codec.decode(codec.encode(job), pb.JobMessage) == job


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    at: datetime


WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
RICH = {
    "when": WHEN,
    "day": date(2024, 5, 6),
    "id": UUID("12345678-1234-5678-1234-567812345678"),
    "price": Decimal("12.50"),
    "color": Color.RED,
    "point": Point(1, WHEN),
    "model": ErrorBody(code="c", message="m"),
}
RICH_DECODED = {
    "when": "2024-05-06T07:08:09.123456+00:00",
    "day": "2024-05-06",
    "id": "12345678-1234-5678-1234-567812345678",
    "price": "12.50",
    "color": "red",
    "point": {"x": 1, "at": "2024-05-06T07:08:09.123456+00:00"},
    "model": {"code": "c", "message": "m", "details": {}},
}


@codec_param
def test_rich_types_encode_the_same_way_in_every_codec(codec: Codec) -> None:
    assert codec.decode(codec.encode(RICH)) == RICH_DECODED


def test_msgpack_timestamp_extension_is_read_as_a_datetime() -> None:
    data = msgpack.packb({"at": WHEN}, datetime=True)
    assert MsgpackCodec().decode(data) == {"at": WHEN}


@codec_param
def test_unencodable_values_raise_type_error(codec: Codec) -> None:
    with pytest.raises(TypeError):
        codec.encode({"x": object()})


GARBAGE = [
    (JsonCodec(), b"{not json"),
    (JsonCodec(), b""),
    (MsgpackCodec(), b"\xc1"),
    (MsgpackCodec(), b"\x01\x02"),
    (MsgpackCodec(), b""),
    (ProtobufCodec(), b"\xff\xff\xff"),
    (ProtobufCodec(), b"garbage{"),
    (ProtobufCodec(), pb.Body(data=b"\xc1").SerializeToString()),
    (ProtobufCodec(), b""),
]


@pytest.mark.parametrize(("codec", "data"), GARBAGE)
def test_garbage_raises_undecodable_body(codec: Codec, data: bytes) -> None:
    with pytest.raises(UndecodableBody) as caught:
        codec.decode(data)
    assert caught.value.status_code == 400


def test_an_error_envelope_without_error_is_undecodable() -> None:
    data = pb.Envelope(success=False, timestamp="t").SerializeToString()
    with pytest.raises(UndecodableBody):
        ProtobufCodec().decode(data, ErrorResponse)


@codec_param
def test_a_value_of_the_wrong_shape_fails_validation(codec: Codec) -> None:
    with pytest.raises(ValidationFailed) as caught:
        codec.decode(codec.encode({"items": "no"}), Page[int])
    assert caught.value.status_code == 422
    assert caught.value.details["errors"]


# Content-Type lookup and Accept negotiation.

REGISTRY = default_registry()


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json"),
        ("Application/JSON", "application/json"),
        ("application/vnd.msgpack", "application/vnd.msgpack"),
        ("application/x-msgpack", "application/vnd.msgpack"),
        ("application/msgpack ; foo=bar", "application/vnd.msgpack"),
        ("application/protobuf", "application/protobuf"),
        ("application/x-protobuf; proto=faas.v1.Body", "application/protobuf"),
    ],
)
def test_get_accepts_aliases_and_parameters(content_type: str, expected: str) -> None:
    assert REGISTRY.get(content_type).content_type == expected


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", "application"])
def test_get_refuses_unknown_types_with_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        REGISTRY.get(content_type)
    assert caught.value.status_code == 415
    assert "application/vnd.msgpack" in caught.value.details["supported"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("application/vnd.msgpack", "application/vnd.msgpack"),
        ("application/x-msgpack", "application/vnd.msgpack"),
        ("application/x-protobuf", "application/protobuf"),
        ("application/json;q=0.5, application/vnd.msgpack;q=0.9", "application/vnd.msgpack"),
        ("application/vnd.msgpack;q=0.1, application/protobuf;q=0.2", "application/protobuf"),
        ("application/json, application/vnd.msgpack", "application/json"),
        ("application/vnd.msgpack, application/json", "application/vnd.msgpack"),
        ("application/vnd.msgpack, */*", "application/vnd.msgpack"),
        ("*/*;q=0.1, application/protobuf", "application/protobuf"),
        ("application/json;q=0, */*", "application/vnd.msgpack"),
        ("application/json;q=0, application/vnd.msgpack;q=0, */*", "application/protobuf"),
        ("text/html, application/xhtml+xml, */*;q=0.8", "application/json"),
        ("application/vnd.msgpack;q=0.5, application/*;q=0.9", "application/json"),
        ("text/html, application/protobuf;q=0.1", "application/protobuf"),
        ("APPLICATION/VND.MSGPACK ; Q=1", "application/vnd.msgpack"),
        ("application/vnd.msgpack;q=bogus, application/protobuf;q=0.1", "application/protobuf"),
    ],
)
def test_negotiate_picks_the_best_codec(accept: str | None, expected: str) -> None:
    assert REGISTRY.negotiate(accept).content_type == expected


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/json;q=0",
        "application/*;q=0",
        "*/*;q=0",
        "application/xml, text/*",
        "application/json;q=0, application/vnd.msgpack;q=0, application/protobuf;q=0, */*",
    ],
)
def test_negotiate_raises_406_when_nothing_matches(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        REGISTRY.negotiate(accept)
    assert caught.value.status_code == 406
    assert caught.value.details["available"] == [
        "application/json",
        "application/vnd.msgpack",
        "application/protobuf",
    ]


def test_registry_default_and_order_are_configurable() -> None:
    registry = CodecRegistry([MsgpackCodec(), JsonCodec()], default="application/x-msgpack")
    assert isinstance(registry.negotiate(None), MsgpackCodec)
    assert isinstance(registry.negotiate("*/*"), MsgpackCodec)
    with pytest.raises(UnsupportedMediaType):
        registry.get("application/protobuf")
